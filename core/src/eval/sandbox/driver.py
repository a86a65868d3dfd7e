# Runs one sandboxed job read as JSON from stdin: setup code, a candidate, then unit tests.
# The single result line (with the job's nonce) is written only after every test ran, so a
# candidate that exits early (os._exit, sys.exit at import time) produces no result.
import json as _json
import os as _os
import sys as _sys
import traceback as _tb


def _tail(exc, limit=600):
    lines = [l for l in "".join(_tb.format_exception_only(type(exc), exc)).splitlines() if l.strip()]
    text = lines[-1].strip() if lines else type(exc).__name__
    if isinstance(exc, SyntaxError):
        text = "%s (at %s:%s)" % (text, exc.filename, exc.lineno)
    else:
        frames = _tb.extract_tb(exc.__traceback__)
        if frames:
            text = "%s (at %s:%s)" % (text, frames[-1].filename, frames[-1].lineno)
    return text[-limit:]


def _block_network():
    import socket

    def refuse(*_a, **_k):
        raise OSError("network disabled in the evaluation sandbox")

    class NoSocket(socket.socket):
        def __init__(self, *a, **k):
            refuse()

    socket.socket = NoSocket
    socket.create_connection = refuse
    socket.socketpair = refuse
    socket.getaddrinfo = refuse


def _limit_memory(extra):
    # After the (trusted) setup: the candidate may map `extra` bytes beyond what is mapped now.
    import resource

    try:
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return  # keep the harness's limit (memory_mb + setup headroom)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _main():
    job = _json.loads(_sys.stdin.read())
    nonce = job.pop("nonce")
    dumps = _json.dumps
    # Results go to a private copy of stdout; the program's own prints go to stderr.
    out = _os.fdopen(_os.dup(1), "w")
    _os.dup2(2, 1)
    if job.get("block_network"):
        _block_network()
    g = {"__name__": "__main__", "__builtins__": __builtins__}
    result = {"done": nonce, "setup_error": None, "candidate_error": None, "memory": False, "tests": []}

    def run(code, name, ns):
        try:
            exec(compile(code, name, "exec"), ns)
            return None
        except MemoryError as e:
            result["memory"] = True
            return _tail(e)
        except BaseException as e:  # SystemExit, KeyboardInterrupt included
            return _tail(e)

    result["setup_error"] = run(job["setup"], "<update>", g)
    if job.get("memory_bytes"):
        _limit_memory(job["memory_bytes"])
    if result["setup_error"] is None:
        result["candidate_error"] = run(job["candidate"], "<candidate>", g)
    if result["setup_error"] is None and result["candidate_error"] is None:
        for t in job["tests"]:
            ns = dict(g)
            err = run(t["code"] + "\n" + t["call"] + "\n", "<test:%s>" % t["name"], ns)
            result["tests"].append({"name": t["name"], "ok": err is None, "error": err})
    out.write(dumps(result) + "\n")
    out.flush()


_main()
