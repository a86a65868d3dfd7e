# Runs one sandboxed job: setup code, a candidate, then unit tests. Input on stdin: a line with
# the byte length of the job's JSON, the JSON, then the job's nonce. Output: one JSON report line
# with the nonce, on a private copy of stdout.
#
# Why two processes. Code that shares a process with the harness can reach all of it (frames,
# gc, ctypes, its file descriptors), so a result it can see is a result it can forge. Here:
# - The trusted side T (this process) runs the setup (dataset code, trusted), and the TESTS.
#   It never runs candidate code and never unpickles anything the candidate's process sends.
# - For each test T forks a fresh child C from its clean post-setup state. C drops every
#   capability (so it cannot ptrace or open /proc/T/mem even as root), closes every descriptor
#   but its two pipes to T, points fds 1 and 2 at the job's stderr (prints are kept, the report
#   channel is unreachable), runs the candidate, then answers T's requests.
# - T is non-dumpable: a same-uid process without CAP_SYS_PTRACE cannot open /proc/T/mem or
#   /proc/T/fd/*. The nonce is left unread in stdin until every child is dead, so no child's
#   memory ever holds it, and the report line is written by T alone.
# - The names the candidate defines are bound in T's test namespace. Plain data comes back BY
#   VALUE, decoded by T into genuine builtin values only: None/bool/int/float/complex/str/
#   bytes/bytearray/list/tuple/dict/set/frozenset/slice/range by exact type, numpy arrays and
#   scalars of numeric/bool/str dtypes and torch tensors as (dtype, shape, raw bytes). Anything
#   else (functions, classes, other objects) is a RemoteRef: calls, attributes, operators,
#   iteration, len, bool, comparisons are forwarded to C. Exceptions raised in C come back as
#   the same builtin class (or the class of that name in a module T already has), else as
#   CandidateError, so tests that expect exceptions still work.
# - T->C messages are pickles (C is untrusted anyway). T objects that cannot be pickled
#   (lambdas, functions of the test) go as references that C calls back into T; from C, such a
#   reference only allows calls, public attributes and the read-only protocols (no setattr, no
#   underscore names: no path to T's globals or modules).
# - Per test T measures wall time and C's CPU time (wait4) and enforces the per-test wall limit
#   (SIGALRM in T; C is killed and the next test runs on a fresh fork). A test may also spend
#   what earlier tests of the job left unused, so the job's total stays what it was (n times
#   the limit) and a slow test late in a job is not failed where the one-process driver passed it.
# - The test sees the candidate's names except builtins, dunders and the setup's own names (a
#   candidate's `abs` or `len` would otherwise run the test's checks). A StopIteration from a
#   call (not from next()) becomes an error: it would end a test's map()/all() early.
# - The harness accepts the report only as the lone line on stdout (job.rs), so a forger that
#   reached the pipe some other way (e.g. /proc of a dumpable harness, without namespaces) can
#   add or glue lines but not make them count.
# Limit that remains: a result that is not plain data is a remote object whose methods run in
# C; an object whose __eq__ says True to everything still fools `==`, as in HumanEval's and
# EvalPlus's harnesses. Arguments are passed by value: a test that mutates an argument in C and
# inspects it in T sees it unchanged.
import builtins as _builtins
import importlib as _importlib
import json as _json
import os as _os
import pickle as _pickle
import re as _re
import signal as _signal
import struct as _struct
import sys as _sys
import time as _time
import traceback as _tb
import types as _types

_MAX_MSG = 1 << 31
_CHILD_MEMORY = 0  # bytes the candidate's process may map beyond the setup's (0: no limit)
_EXIT_MEMORY = 122  # the candidate's process ran out of memory in the driver's own code
_BUILTIN_NAMES = frozenset(dir(_builtins))


def _tail(exc, limit=600):
    remote = getattr(exc, "_recode_remote", None)
    if remote:
        return remote[-limit:]
    lines = [l for l in "".join(_tb.format_exception_only(type(exc), exc)).splitlines() if l.strip()]
    text = lines[-1].strip() if lines else type(exc).__name__
    if isinstance(exc, SyntaxError):
        text = "%s (at %s:%s)" % (text, exc.filename, exc.lineno)
    else:
        # The deepest frame in job code, not in this driver (whose file is "<string>").
        frames = [f for f in _tb.extract_tb(exc.__traceback__) if f.filename != "<string>"]
        if frames:
            text = "%s (at %s:%s)" % (text, frames[-1].filename, frames[-1].lineno)
    return text[-limit:]


class CandidateError(Exception):
    """An exception from the candidate's process whose class T does not have."""


class _Timeout(BaseException):
    pass


class _Gone(Exception):
    """The candidate's process closed its channel (exited or was killed)."""


class _CandidateFailed(Exception):
    """Defining the candidate raised (in the child); args: the message, whether MemoryError."""


class _BadMessage(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Framing. Every message: 8-byte length of a JSON or pickle body, the body, an 8-byte blob
# count, each blob's 8-byte length, then the blobs (raw array data, never parsed as code).


def _write_all(fd, data):
    view = memoryview(data)
    if not view.nbytes:
        return
    view = view.cast("B")
    while view:
        n = _os.write(fd, view)
        view = view[n:]


def _send(fd, body, blobs=()):
    lengths = [memoryview(b).nbytes for b in blobs]
    body = memoryview(body)
    if body.nbytes < 1 << 16:  # one write for the usual small message
        body = bytes(body)
        _write_all(fd, _struct.pack("<Q", len(body)) + body + _struct.pack("<Q%dQ" % len(blobs), len(blobs), *lengths))
    else:
        _write_all(fd, _struct.pack("<Q", body.nbytes))
        _write_all(fd, body)
        _write_all(fd, _struct.pack("<Q%dQ" % len(blobs), len(blobs), *lengths))
    for b in blobs:
        _write_all(fd, b)


def _read_exact(fd, n):
    if n > _MAX_MSG:
        raise _BadMessage("message of %d bytes" % n)
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = _os.readv(fd, [view[got:]])
        if k == 0:
            raise _Gone()
        got += k
    return buf


def _recv(fd):
    """The body (bytes) and the blobs (writable memoryviews into one buffer)."""
    body = bytes(_read_exact(fd, _struct.unpack("<Q", _read_exact(fd, 8))[0]))
    count = _struct.unpack("<Q", _read_exact(fd, 8))[0]
    if count > 1 << 24:
        raise _BadMessage("%d blobs" % count)
    lengths = _struct.unpack("<%dQ" % count, _read_exact(fd, 8 * count))
    area = memoryview(_read_exact(fd, sum(lengths)))
    blobs, at = [], 0
    for n in lengths:
        blobs.append(area[at:at + n])
        at += n
    return body, blobs


def _pipe():
    r, w = _os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer round trips for large arrays
    except (OSError, ImportError):
        pass
    return r, w


# ---------------------------------------------------------------------------------------------
# The safe encoding (C -> T). Encoded by C, decoded by T into genuine values only.

_PLAIN = (type(None), bool, int, float, str)
_DTYPE = _re.compile(r"^[<>|=][biufcUSmM]\d+(\[[A-Za-z0-9]+\])?$")
_TORCH_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16",
                 "float32", "float64", "complex64", "complex128")
_DTYPES_SEEN = {}  # checked dtype strings
_NAME = _re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _np_kind_ok(dtype):
    return dtype.kind in "biufcUSmM" and not dtype.hasobject and dtype.fields is None and dtype.subdtype is None


class _Encoder:
    """C side: `refs` keeps every object handed out by reference, by id."""

    def __init__(self, refs, local_type):
        self.refs, self.local_type, self.blobs, self.active = refs, local_type, [], set()

    def ref(self, x):
        self.refs[id(x)] = x
        t = type(x)
        return ["R", id(x), str(getattr(t, "__module__", "")), str(getattr(t, "__qualname__", ""))]

    def blob(self, data):
        view = memoryview(data)
        self.blobs.append(view.cast("B") if view.nbytes else b"")
        return len(self.blobs) - 1

    def enc(self, x):
        t = type(x)
        if t in _PLAIN:
            if t is int and not -(1 << 62) < x < (1 << 62):
                return ["I", "%x" % x]
            return x
        if t is self.local_type:
            return ["L", x._lid]
        if id(x) in self.active:  # a cycle: by reference
            return self.ref(x)
        self.active.add(id(x))
        try:
            return self._container(x, t)
        finally:
            self.active.discard(id(x))

    def _container(self, x, t):
        if t is list or t is tuple or t is set or t is frozenset:
            return [{list: "l", tuple: "t", set: "s", frozenset: "fs"}[t], [self.enc(v) for v in x]]
        if t is dict:
            return ["d", [[self.enc(k), self.enc(v)] for k, v in x.items()]]
        if t is complex:
            return ["c", x.real, x.imag]
        if t is bytes or t is bytearray:
            return ["b" if t is bytes else "ba", self.blob(bytes(x))]
        if t is slice:
            return ["sl", self.enc(x.start), self.enc(x.stop), self.enc(x.step)]
        if t is range:
            return ["rg", x.start, x.stop, x.step]
        if x is Ellipsis:
            return ["E"]
        if x is NotImplemented:
            return ["N"]
        if isinstance(x, type) and getattr(x, "__module__", "__main__") != "__main__":
            # A class of a library (or a builtin): T's own class of that name, if T has it.
            return ["G", str(x.__module__), str(x.__qualname__), self.ref(x)[1]]
        if isinstance(x, type(_sys)):
            return ["M", str(x.__name__), self.ref(x)[1]]
        try:
            return self._array(x, t)
        except Exception:  # whatever a library does wrong here, the value stays in C
            return self.ref(x)

    def _array(self, x, t):
        np = _sys.modules.get("numpy")
        if np is not None and (t is np.ndarray or (isinstance(x, np.generic) and t.__module__ == "numpy")):
            if _np_kind_ok(x.dtype):
                if t is np.ndarray:
                    data = np.ascontiguousarray(x)
                    data = data.data if x.dtype.kind in "biufc" else data.tobytes()
                    return ["nd", x.dtype.str, list(x.shape), self.blob(data)]
                if x.dtype.kind in "biufc" and x.dtype.itemsize <= 16 and x.dtype.kind + str(x.dtype.itemsize) != "f16":
                    return ["ng", x.dtype.str, self.enc(x.item())]
                return ["ngb", x.dtype.str, self.blob(np.asarray(x).tobytes())]
        torch = _sys.modules.get("torch")
        if torch is not None and t is torch.Tensor and x.layout == torch.strided:
            name = str(x.dtype).replace("torch.", "")
            if name in _TORCH_DTYPES:
                c = x.detach().cpu().contiguous()
                raw = (c.view(torch.int16) if name == "bfloat16" else c).numpy().tobytes()
                return ["tt", name, list(c.shape), self.blob(raw), bool(x.requires_grad)]
        return self.ref(x)


class _Decoder:
    """T side. Builds nothing but genuine values, RemoteRefs of `chan`, and T's own objects."""

    def __init__(self, chan, blobs):
        self.chan, self.blobs = chan, blobs

    def blob(self, i):
        if type(i) is not int or not 0 <= i < len(self.blobs):
            raise _BadMessage("blob index")
        return self.blobs[i]

    def dec(self, n):
        t = type(n)
        if t in _PLAIN:
            return n
        if t is not list or not n or type(n[0]) is not str:
            raise _BadMessage("node of type %s" % t.__name__)
        tag, a = n[0], n[1:]
        if tag in ("l", "t", "s", "fs") and len(a) == 1 and type(a[0]) is list:
            items = [self.dec(v) for v in a[0]]
            return {"l": list, "t": tuple, "s": set, "fs": frozenset}[tag](items)
        if tag == "d" and len(a) == 1 and type(a[0]) is list:
            out = {}
            for kv in a[0]:
                if type(kv) is not list or len(kv) != 2:
                    raise _BadMessage("dict item")
                out[self.dec(kv[0])] = self.dec(kv[1])
            return out
        if tag == "I" and len(a) == 1 and type(a[0]) is str:
            return int(a[0], 16)
        if tag == "c" and len(a) == 2 and all(type(v) in (int, float) for v in a):
            return complex(a[0], a[1])
        if tag == "b" and len(a) == 1:
            return bytes(self.blob(a[0]))
        if tag == "ba" and len(a) == 1:
            return bytearray(self.blob(a[0]))
        if tag == "sl" and len(a) == 3:
            return slice(*[self.dec(v) for v in a])
        if tag == "rg" and len(a) == 3 and all(type(v) is int for v in a):
            return range(*a)
        if tag == "E" and not a:
            return Ellipsis
        if tag == "N" and not a:
            return NotImplemented
        if tag == "M" and len(a) == 2 and type(a[0]) is str and type(a[1]) is int:
            # T's own import of that module; one T cannot import stays in C.
            try:
                if _NAME.match(a[0]):
                    return _sys.modules.get(a[0]) or _importlib.import_module(a[0])
            except ImportError:
                pass
            return RemoteRef(self.chan, a[1], "builtins", "module")
        if tag == "nd" and len(a) == 3:
            return self.array(a[0], a[1], a[2])
        if tag == "ng" and len(a) == 2:
            import numpy as np

            dt = self.dtype(a[0])
            value = self.dec(a[1])
            want = {"b": (bool,), "i": (int,), "u": (int,), "f": (float, int), "c": (complex, float, int)}
            if type(value) not in want.get(dt.kind, ()):
                raise _BadMessage("numpy scalar")
            return dt.type(value)
        if tag == "ngb" and len(a) == 2:
            return self.array(a[0], [], a[1])[()]
        if tag == "G" and len(a) == 3 and all(type(v) is str for v in a[:2]) and type(a[2]) is int:
            cls = _sys.modules.get(a[0]) if _NAME.match(a[0]) and a[0] != "__main__" else None
            for part in a[1].split(".") if cls is not None and _NAME.match(a[1]) else ():
                cls = getattr(cls, part, None)
            return cls if isinstance(cls, type) else RemoteRef(self.chan, a[2], "builtins", "type")
        if tag == "tt" and len(a) == 4:
            return self.tensor(*a)
        if tag == "R" and len(a) == 3 and type(a[0]) is int and all(type(v) is str for v in a[1:]):
            return RemoteRef(self.chan, a[0], a[1], a[2])
        if tag == "L" and len(a) == 1 and type(a[0]) is int and a[0] in self.chan.locals:
            return self.chan.locals[a[0]]
        raise _BadMessage("tag %r" % tag[:20])

    def shape(self, shape):
        if type(shape) is not list or not all(type(d) is int and 0 <= d < 1 << 40 for d in shape):
            raise _BadMessage("shape")
        size = 1
        for d in shape:
            size *= d
        return tuple(shape), size

    def dtype(self, dtype):
        import numpy as np

        if type(dtype) is str and dtype in _DTYPES_SEEN:
            return _DTYPES_SEEN[dtype]
        if type(dtype) is not str or not _DTYPE.match(dtype):
            raise _BadMessage("dtype %r" % str(dtype)[:40])
        dt = np.dtype(dtype)
        if not _np_kind_ok(dt):
            raise _BadMessage("dtype %r" % dtype)
        _DTYPES_SEEN[dtype] = dt
        return dt

    def array(self, dtype, shape, i):
        import numpy as np

        dt = self.dtype(dtype)
        shape, size = self.shape(shape)
        raw = self.blob(i)
        if len(raw) != size * dt.itemsize:
            raise _BadMessage("array data")
        return np.frombuffer(raw, dtype=dt).reshape(shape)

    def tensor(self, name, shape, i, grad):
        import torch

        if name not in _TORCH_DTYPES or type(grad) is not bool:
            raise _BadMessage("tensor dtype")
        shape, size = self.shape(shape)
        raw = self.blob(i)
        dt = torch.int16 if name == "bfloat16" else getattr(torch, name)
        if len(raw) != size * torch.empty((), dtype=dt).element_size():
            raise _BadMessage("tensor data")
        t = torch.frombuffer(raw, dtype=dt) if size else torch.empty(0, dtype=dt)
        t = t.reshape(shape).clone()
        if name == "bfloat16":
            t = t.view(torch.bfloat16)
        return t.requires_grad_(grad) if grad else t

    def exception(self, n):
        if type(n) is not list or len(n) != 4 or not all(type(v) is str for v in (n[0], n[1], n[3])):
            raise _BadMessage("exception")
        mod, qual, args, text = n
        cls = None
        if _NAME.match(mod) and _NAME.match(qual) and mod not in ("__main__", "builtins"):
            cls = _sys.modules.get(mod)
            for part in qual.split(".") if cls is not None else ():
                cls = getattr(cls, part, None)
        elif mod == "builtins" and _NAME.match(qual):
            cls = getattr(_builtins, qual, None)
        exc = None
        if isinstance(cls, type) and issubclass(cls, BaseException) and cls is not _Timeout:
            try:
                exc = cls(*self.dec(args))
            except BaseException:
                try:
                    exc = cls(text)
                except BaseException:
                    exc = None
        if exc is None:
            exc = CandidateError("%s: %s" % (qual, text))
        try:
            exc._recode_remote = text[:600]
        except BaseException:
            pass
        return exc


# ---------------------------------------------------------------------------------------------
# T side: the channel to one child, and references to the child's objects.


# Frames lead to every local of this driver; they never leave the trusted process.
_NEVER_SENT = frozenset((_types.FrameType, _types.TracebackType, _types.CodeType))
_PICKLE_PLAIN = frozenset((type(None), bool, int, float, complex, str, bytes, list, tuple, dict, set))


class _Pickler(_pickle.Pickler):
    def __init__(self, file, chan, force_local, buffers=None):
        # Protocol 5: large arrays travel out of band, as blobs, without copies into the pickle.
        super().__init__(file, protocol=5, buffer_callback=buffers.append if buffers is not None else None)
        self.chan, self.force_local = chan, force_local

    def persistent_id(self, obj):
        t = type(obj)
        if t in _PICKLE_PLAIN:
            return None
        if t in _NEVER_SENT:
            raise RuntimeError("a %s of the trusted process is not given to the candidate" % t.__name__)
        if t is RemoteRef:
            if obj._r_chan is not self.chan:
                raise RuntimeError("an object of an earlier test's candidate process was used")
            return ("R", obj._r_id)
        if t.__name__ == "module" and t is type(_sys):
            return ("M", obj.__name__)
        # The test's own functions, classes and their instances: C could not rebuild them.
        if id(obj) in self.force_local or getattr(t, "__module__", None) == "__main__" or (
            callable(obj) and getattr(obj, "__module__", None) == "__main__"
        ):
            return ("L", self.chan.register(obj))
        return None


class _Chan:
    def __init__(self, rfd, wfd, pid):
        self.rfd, self.wfd, self.pid, self.alive, self.locals = rfd, wfd, pid, True, {}
        self.gone = False  # the child's end of the channel closed

    def register(self, obj):
        self.locals[id(obj)] = obj
        return id(obj)

    def send(self, msg, values):
        """Pickles msg; `values` are the objects inside it that may have to go as references."""
        import io

        force = set()
        for attempt in range(2):
            f, buffers = io.BytesIO(), []
            try:
                _Pickler(f, self, force, buffers).dump(msg)
                break
            except RuntimeError:
                raise
            except Exception:
                if attempt:
                    raise
                for v in values:
                    try:
                        _Pickler(io.BytesIO(), self, set()).dump(v)
                    except RuntimeError:
                        raise
                    except Exception:
                        force.add(id(v))
        blobs = [b.raw() for b in buffers]
        size = f.getbuffer().nbytes + sum(b.nbytes for b in blobs)
        if _CHILD_MEMORY and size > _CHILD_MEMORY:
            # It could not arrive: the candidate's process may not map that much.
            raise MemoryError("%d bytes of arguments for the candidate, over its memory limit" % size)
        try:
            _send(self.wfd, f.getbuffer(), blobs)
        except OSError:
            self.gone = True
            raise _Gone()

    def request(self, op, *args, **kwargs):
        if not self.alive:
            raise RuntimeError("the candidate's process of an earlier test is gone")
        self.send(("op", op, args, kwargs), list(args) + list(kwargs.values()))
        return self.wait(op)

    def receive(self):
        try:
            body, blobs = _recv(self.rfd)
        except (OSError, _Gone):
            self.gone = True
            raise _Gone()
        try:
            node = _json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            raise _BadMessage("not JSON")
        if type(node) is not list or not node or type(node[0]) is not str:
            raise _BadMessage("message")
        return node, _Decoder(self, blobs)

    def wait(self, op):
        while True:
            node, d = self.receive()
            if node[0] == "reply" and len(node) == 2:
                return d.dec(node[1])
            if node[0] == "raise" and len(node) == 2:
                exc = d.exception(node[1])
                # StopIteration only ends an iteration (a call raising it would end the test's
                # map()/all() early, as if every item passed); exits stay the child's own.
                if (isinstance(exc, StopIteration) and op not in ("next", "next_chunk")) or not isinstance(exc, Exception):
                    exc = CandidateError("%s: %s" % (type(exc).__name__, exc))
                raise exc
            if node[0] == "op" and len(node) == 4:
                self.serve(node, d)
                continue
            raise _BadMessage("unexpected %r" % node[0][:20])

    def serve(self, node, d):
        """A call from C into one of T's objects that C holds a reference to."""
        _, op, args, kwargs = node
        if type(args) is not list or not args or type(args[0]) is not list or args[0][:1] != ["L"]:
            raise _BadMessage("call into T without a T reference")
        if type(kwargs) is not list:
            raise _BadMessage("kwargs")
        args = [d.dec(a) for a in args]
        kw = {}
        for kv in kwargs:
            if type(kv) is not list or len(kv) != 2 or type(kv[0]) is not str:
                raise _BadMessage("kwargs")
            kw[kv[0]] = d.dec(kv[1])
        try:
            result = _reverse_op(op, args, kw)
            msg = ("reply", result)
        except _Timeout:
            raise
        except BaseException as e:
            msg = ("raise", _picklable_exception(e))
        self.send(msg, [msg[1]])


def _picklable_exception(e):
    try:
        _pickle.loads(_pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError("%s: %s" % (type(e).__name__, e))


_COMPARE = {"eq": "__eq__", "ne": "__ne__", "lt": "__lt__", "le": "__le__", "gt": "__gt__", "ge": "__ge__"}


def _reverse_op(op, args, kw):
    target, rest = args[0], args[1:]
    if op == "call":
        return target(*rest, **kw)
    if kw:
        raise TypeError("keyword arguments for %s" % op)
    if op == "getattr" and len(rest) == 1 and type(rest[0]) is str and not rest[0].startswith("_"):
        # Only on instances of the test's own classes: a library object's public attributes
        # can lead to frames (gi_frame, f_back) and from there to this driver's functions.
        cls = type(target)
        if cls.__module__ == "__main__" and cls not in _DRIVER_TYPES and not isinstance(target, type):
            return getattr(target, rest[0])
    if op in _COMPARE and len(rest) == 1:
        return getattr(type(target), _COMPARE[op])(target, rest[0])
    one = {"iter": iter, "next": next, "len": len, "bool": bool, "repr": repr, "str": str, "hash": hash}
    if op in one and not rest:
        return one[op](target)
    if op == "getitem" and len(rest) == 1:
        return target[rest[0]]
    if op == "contains" and len(rest) == 1:
        return rest[0] in target
    if op == "format" and len(rest) == 1 and type(rest[0]) is str:
        return format(target, rest[0])
    raise TypeError("the candidate may not do %r on an object of the test" % str(op)[:40])


def _expect(value, *types):
    if type(value) not in types:
        raise TypeError("the candidate's process answered %s where %s was expected"
                        % (type(value).__name__, "/".join(t.__name__ for t in types)))
    return value


class RemoteRef:
    """An object living in the candidate's process; every operation on it runs there."""

    __slots__ = ("_r_chan", "_r_id", "_r_mod", "_r_qual")

    def __init__(self, chan, rid, mod, qual):
        for k, v in (("_r_chan", chan), ("_r_id", rid), ("_r_mod", mod), ("_r_qual", qual)):
            object.__setattr__(self, k, v)

    def _do(self, op, *args, **kwargs):
        return self._r_chan.request(op, self, *args, **kwargs)

    @property
    def __class__(self):
        # isinstance(ref, cls) consults __class__: the class of that name in T, if T has it.
        cls = _sys.modules.get(self._r_mod) if _NAME.match(self._r_mod) else None
        for part in self._r_qual.split(".") if cls is not None and _NAME.match(self._r_qual) else ():
            cls = getattr(cls, part, None)
        return cls if isinstance(cls, type) else RemoteRef

    def __getattr__(self, name):
        return self._do("getattr", name)

    def __setattr__(self, name, value):
        self._do("setattr", name, value)

    def __delattr__(self, name):
        self._do("delattr", name)

    def __call__(self, *args, **kwargs):
        return self._do("call", *args, **kwargs)

    def __repr__(self):
        return _expect(self._do("repr"), str)

    def __str__(self):
        return _expect(self._do("str"), str)

    def __format__(self, spec):
        return _expect(self._do("format", spec), str)

    def __bytes__(self):
        return _expect(self._do("bytes"), bytes)

    def __hash__(self):
        return _expect(self._do("hash"), int)

    def __bool__(self):
        return _expect(self._do("bool"), bool)

    def __len__(self):
        return _expect(self._do("len"), int)

    def __index__(self):
        return _expect(self._do("index"), int)

    def __int__(self):
        return _expect(self._do("int"), int)

    def __float__(self):
        return _expect(self._do("float"), float)

    def __complex__(self):
        return _expect(self._do("complex"), complex)

    def __iter__(self):
        it = self._do("iter")
        if type(it) is not RemoteRef:
            raise TypeError("iter() of a remote object gave %s" % type(it).__name__)
        return _RemoteIter(it)

    def __next__(self):
        return self._do("next")

    def __reversed__(self):
        return self._do("reversed")

    def __contains__(self, item):
        return _expect(self._do("contains", item), bool)

    def __getitem__(self, key):
        return self._do("getitem", key)

    def __setitem__(self, key, value):
        self._do("setitem", key, value)

    def __delitem__(self, key):
        self._do("delitem", key)

    def __enter__(self):
        return self._do("enter")

    def __exit__(self, *exc):
        return self._do("exit", *exc)

    def __instancecheck__(self, obj):
        return _expect(self._do("instancecheck", obj), bool)

    def __subclasscheck__(self, cls):
        return _expect(self._do("subclasscheck", cls), bool)

    def __dir__(self):
        return _expect(self._do("dir"), list)

    def __round__(self, *nd):
        return self._do("round", *nd)

    def __reduce__(self):
        raise TypeError("a remote object cannot be pickled")


class _RemoteIter:
    """Iterates a remote iterator in growing chunks (1, 2, 4 ... 1024 items per round trip)."""

    def __init__(self, ref):
        self.ref, self.items, self.size, self.done = ref, [], 1, False

    def __iter__(self):
        return self

    def __next__(self):
        while not self.items:
            if self.done:
                raise StopIteration
            chunk = self.ref._r_chan.request("next_chunk", self.ref, self.size)
            if type(chunk) is not tuple or len(chunk) != 2 or type(chunk[0]) is not list or type(chunk[1]) is not bool:
                raise TypeError("bad chunk from the candidate's process")
            self.items, self.done = chunk[0][::-1], chunk[1]
            self.size = min(self.size * 2, 1024)
        return self.items.pop()


def _forwarding(op, reflected=False):
    if reflected:
        return lambda self, other: self._r_chan.request(op, other, self)
    return lambda self, *args: self._do(op, *args)


for _op in ("eq", "ne", "lt", "le", "gt", "ge", "neg", "pos", "abs", "invert"):
    setattr(RemoteRef, "__%s__" % _op, _forwarding(_op))
for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "lshift", "rshift",
            "and", "or", "xor", "divmod"):
    setattr(RemoteRef, "__%s__" % _op, _forwarding(_op))
    setattr(RemoteRef, "__r%s__" % _op, _forwarding(_op, reflected=True))


# ---------------------------------------------------------------------------------------------
# C side: serving T's requests, and references to T's objects.


def _child_ops():
    import operator as o

    def contains(container, item):
        return item in container

    pending = {}  # iterator id -> the exception to raise after the items already sent

    def next_chunk(it, n):
        if id(it) in pending:
            raise pending.pop(id(it))
        items = []
        try:
            while len(items) < n:
                items.append(next(it))
        except StopIteration:
            if not items:
                raise
            return items, True
        except BaseException as e:
            if not items:
                raise
            pending[id(it)] = e
        return items, False

    ops = {
        "call": lambda f, *a, **k: f(*a, **k), "getattr": getattr, "setattr": setattr, "delattr": delattr,
        "repr": repr, "str": str, "format": format, "bytes": bytes, "hash": hash, "bool": bool, "len": len,
        "index": o.index, "int": int, "float": float, "complex": complex, "iter": iter, "next": next,
        "reversed": reversed, "contains": contains, "getitem": o.getitem, "setitem": o.setitem,
        "delitem": o.delitem, "enter": lambda x: x.__enter__(), "exit": lambda x, *e: x.__exit__(*e),
        "instancecheck": lambda c, x: isinstance(x, c), "subclasscheck": lambda c, x: issubclass(x, c),
        "dir": lambda x: list(dir(x)), "round": round, "divmod": divmod, "and": o.and_, "or": o.or_,
        "next_chunk": next_chunk,
    }
    for name in ("eq", "ne", "lt", "le", "gt", "ge", "neg", "pos", "abs", "invert", "add", "sub", "mul",
                 "truediv", "floordiv", "mod", "pow", "matmul", "lshift", "rshift", "xor"):
        ops[name] = getattr(o, name)
    return ops


class _ChildChan:
    def __init__(self, rfd, wfd):
        self.rfd, self.wfd, self.refs, self.ops = rfd, wfd, {}, _child_ops()

    def send_node(self, node, enc):
        _send(self.wfd, _json.dumps(node).encode("utf-8"), enc.blobs)

    def encoder(self):
        return _Encoder(self.refs, _LocalProxy)

    def answer(self, kind, value):
        enc = self.encoder()
        if kind == "raise":
            node = ["raise", self.exception(enc, value)]
        else:
            try:
                node = ["reply", enc.enc(value)]
            except Exception:  # RecursionError, or a value whose methods raise
                enc = self.encoder()
                node = ["reply", enc.ref(value)]
        self.send_node(node, enc)

    def exception(self, enc, e):
        t = type(e)
        try:
            args = enc.enc(tuple(e.args))
        except BaseException:
            args = ["t", []]
        return [str(getattr(t, "__module__", "")), str(getattr(t, "__qualname__", "")), args, _tail(e)]

    def load(self, body, blobs):
        import io

        chan = self

        class Loader(_pickle.Unpickler):
            def persistent_load(self, pid):
                kind, key = pid
                if kind == "R":
                    return chan.refs[key]
                if kind == "M":
                    return _importlib.import_module(key)
                return _LocalProxy(chan, key)

        return Loader(io.BytesIO(body), buffers=blobs).load()

    def wait(self):
        """Serves T's requests until T answers one of ours (returns it) or stops us."""
        while True:
            msg = self.load(*_recv(self.rfd))
            if msg[0] == "reply":
                return msg[1]
            if msg[0] == "raise":
                raise msg[1]
            _, op, args, kwargs = msg
            try:
                value = self.ops[op](*args, **kwargs)
                kind = "reply"
            except BaseException as e:
                value, kind = e, "raise"
            self.answer(kind, value)

    def call_back(self, op, target, *args, **kwargs):
        enc = self.encoder()
        node = ["op", op, [["L", target._lid]] + [enc.enc(a) for a in args],
                [[k, enc.enc(v)] for k, v in kwargs.items()]]
        self.send_node(node, enc)
        return self.wait()


class _LocalProxy:
    """In C: an object of T's (a lambda or function of the test); operations call back into T."""

    def __init__(self, chan, lid):
        self._chan, self._lid = chan, lid

    def _do(self, op, *args, **kwargs):
        return self._chan.call_back(op, self, *args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._do("call", *args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return self._do("getattr", name)

    def __iter__(self):
        return self._do("iter")

    def __next__(self):
        return self._do("next")

    def __len__(self):
        return self._do("len")

    def __bool__(self):
        return self._do("bool")

    def __repr__(self):
        return self._do("repr")

    def __str__(self):
        return self._do("str")

    def __hash__(self):
        return self._do("hash")

    def __getitem__(self, key):
        return self._do("getitem", key)

    def __contains__(self, item):
        return self._do("contains", item)

    def __format__(self, spec):
        return self._do("format", spec)


for _op in _COMPARE:
    setattr(_LocalProxy, "__%s__" % _op, (lambda op: lambda self, other: self._do(op, other))(_op))


# ---------------------------------------------------------------------------------------------
# C's life: confine itself, run the candidate, report what it defined, serve.

_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP = 38, 24


def _drop_capabilities():
    """Every capability off (bounding set too), no_new_privs; True when none is left."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()
    if hasattr(libc, "capset"):
        libc.capset(header, data)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    try:
        with open("/proc/self/status") as f:
            eff = [l.split()[1] for l in f if l.startswith("CapEff:")]
        return bool(eff) and int(eff[0], 16) == 0
    except (OSError, ValueError):
        return False


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
    # The candidate may map `extra` bytes beyond what the (trusted) setup mapped.
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


def _child(job, g, rfd, wfd):
    _os.setpgid(0, 0)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, _signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    null = _os.open("/dev/null", _os.O_RDONLY)
    _os.dup2(null, 0)
    for fd in range(3, 1024):
        if fd not in (rfd, wfd):
            try:
                _os.close(fd)
            except OSError:
                pass
    # Unbuffered: the child is SIGKILLed after its test, and its prints must not be lost.
    import io

    for name, fd in (("stdout", 1), ("stderr", 2)):
        raw = io.FileIO(fd, "w", closefd=False)
        setattr(_sys, name, io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", write_through=True))
    if not _drop_capabilities():
        _os.write(2, b"recode driver: the candidate's process could not drop its capabilities\n")
        _os._exit(120)
    if job.get("block_network"):
        _block_network()
    if job.get("memory_bytes"):
        _limit_memory(job["memory_bytes"])
    chan = _ChildChan(rfd, wfd)
    before = dict(g)
    try:
        exec(compile(job["candidate"], "<candidate>", "exec"), g)
    except BaseException as e:
        node = ["candidate_error", _tail(e), isinstance(e, MemoryError)]
        chan.send_node(node, chan.encoder())
        _os._exit(0)
    enc = chan.encoder()
    names = []
    for name, value in list(g.items()):
        if name in before and before[name] is value:
            continue
        try:
            names.append([name, enc.enc(value)])
        except Exception:
            names.append([name, enc.ref(value)])
    chan.send_node(["ready", names], enc)
    chan.wait()
    _os._exit(0)


# ---------------------------------------------------------------------------------------------
# T's life.


_current = None  # the _Run of the test under way


def _on_alarm(*_):
    # Kill at once: a test that swallows the exception must not wait on the child again.
    if _current is not None:
        _current.timed_out = True
        _kill_child(_current.chan.pid)
    raise _Timeout()


def _kill_child(pid):
    for target in (-pid, pid):
        try:
            _os.kill(target, _signal.SIGKILL)
        except OSError:
            pass


def _reap_orphans():
    # T is a subreaper: whatever the child left behind (setsid'd grandchildren) is ours to end.
    try:
        kids = set()
        for tid in _os.listdir("/proc/self/task"):
            with open("/proc/self/task/%s/children" % tid) as f:
                kids.update(int(p) for p in f.read().split())
    except (OSError, ValueError):
        kids = set()
    for pid in kids:
        _kill_child(pid)
    while True:
        try:
            pid, _ = _os.waitpid(-1, _os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class _Run:
    """One forked child for one test: its start, its answers, its end, its times."""

    def __init__(self, job, g):
        self.start = _time.monotonic()
        c_r, t_w = _pipe()
        t_r, c_w = _pipe()
        # No alarm between the fork and knowing the child (it would leak).
        _signal.pthread_sigmask(_signal.SIG_BLOCK, [_signal.SIGALRM])
        pid = _os.fork()
        if pid == 0:
            try:
                _os.close(t_w)
                _os.close(t_r)
                _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)
                _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [_signal.SIGALRM])
                _child(job, g, c_r, c_w)
            except _Gone:
                pass
            except MemoryError:
                _os._exit(_EXIT_MEMORY)
            except BaseException:
                _tb.print_exc()
            finally:
                _os._exit(121)
        _os.close(c_r)
        _os.close(c_w)
        self.chan = _Chan(t_r, t_w, pid)
        self.status = self.cpu = None
        self.timed_out = False
        global _current
        _current = self
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [_signal.SIGALRM])

    def ready(self):
        """The candidate's names, or raises CandidateError with the candidate's failure."""
        node, d = self.chan.receive()
        if node[0] == "candidate_error" and len(node) == 3 and type(node[1]) is str:
            raise _CandidateFailed(node[1][:600], node[2] is True)
        if node[0] != "ready" or len(node) != 2 or type(node[1]) is not list:
            raise _BadMessage("expected the candidate's names")
        names = {}
        for item in node[1]:
            if type(item) is not list or len(item) != 2 or type(item[0]) is not str:
                raise _BadMessage("name")
            names[item[0]] = d.dec(item[1])
        return names

    @property
    def gone(self):
        return self.chan.gone

    def end(self):
        self.chan.alive = False
        _kill_child(self.chan.pid)
        for fd in (self.chan.rfd, self.chan.wfd):
            _os.close(fd)
        _, status, usage = _os.wait4(self.chan.pid, 0)
        _reap_orphans()
        self.wall = _time.monotonic() - self.start
        self.cpu = usage.ru_utime + usage.ru_stime
        self.status = status

    def fate(self):
        """How the child ended on its own: {"exit_code": n} or {"signal": n} (else {})."""
        s = self.status
        if _os.WIFSIGNALED(s) and _os.WTERMSIG(s) != _signal.SIGKILL:
            return {"signal": _os.WTERMSIG(s)}
        if _os.WIFEXITED(s):
            return {"exit_code": _os.WEXITSTATUS(s)}
        return {"signal": _signal.SIGKILL}


def _read_stdin(n):
    return bytes(_read_exact(0, n)) if n else b""


def _read_job():
    head = b""
    while not head.endswith(b"\n"):
        c = _os.read(0, 1)
        if not c:
            raise SystemExit("recode driver: no job on stdin")
        head += c
    return _json.loads(_read_stdin(int(head)).decode("utf-8"))


def _main():
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no /proc/T/mem, /proc/T/fd for same-uid peers
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of a child come back to T
    except (OSError, AttributeError):
        pass
    job = _read_job()  # the nonce stays unread in stdin until every child is dead
    dumps = _json.dumps
    # The report goes to a private copy of stdout; fd 1 (inherited by children) is stderr.
    out = _os.dup(1)
    _os.dup2(2, 1)
    limit = float(job.get("test_timeout_s") or 0)
    global _CHILD_MEMORY
    _CHILD_MEMORY = int(job.get("memory_bytes") or 0)
    g = {"__name__": "__main__", "__builtins__": __builtins__}
    result = {"setup_error": None, "candidate_error": None, "memory": False, "tests": []}

    def exec_trusted(code, name, ns):
        try:
            exec(compile(code, name, "exec"), ns)
            return None
        except MemoryError as e:
            result["memory"] = True
            return _tail(e)
        except BaseException as e:  # SystemExit, KeyboardInterrupt included
            return _tail(e)

    result["setup_error"] = exec_trusted(job["setup"], "<update>", g)
    _signal.signal(_signal.SIGALRM, _on_alarm)
    bank = 0.0  # time earlier tests left unused; a slow test may spend it (the job's total holds)
    for t in job["tests"] if result["setup_error"] is None else ():
        entry, run, stop = {"name": t["name"], "ok": False, "error": None}, None, False
        this_limit = limit + bank
        try:
            if limit > 0:
                _signal.setitimer(_signal.ITIMER_REAL, this_limit)
            run = _Run(job, g)
            try:
                names = run.ready()
            except _Timeout:
                stop = True  # defining the candidate never ends: no test would run either
                raise
            # The setup's names and builtins stay T's (a candidate's own `abs` or `len` must not
            # run the test's checks), and so do dunder names.
            ns = dict(g)
            ns.update((k, v) for k, v in names.items() if k not in g and k not in _BUILTIN_NAMES and not k.startswith("__"))
            exec(compile(t["code"] + "\n" + t["call"] + "\n", "<test:%s>" % t["name"], "exec"), ns)
            entry["ok"] = True
        except _CandidateFailed as e:
            entry["error"] = e.args[0]
            if not result["tests"]:  # the first child: the candidate itself fails
                result["candidate_error"], result["memory"] = e.args[0], e.args[1]
                stop = True
        except _Gone:
            entry["error"] = "the candidate's process ended during the test"
        except BaseException as e:  # _Timeout, SystemExit included
            entry["error"] = _tail(e)
            result["memory"] |= isinstance(e, MemoryError)
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
        if run is not None:
            run.end()
            entry["wall_s"], entry["cpu_s"] = round(run.wall, 6), round(run.cpu, 6)
            bank = max(0.0, this_limit - run.wall)
            if run.timed_out:
                entry.update(ok=False, timeout=True, error="timed out after %.1fs" % this_limit)
            elif run.gone:
                # The child died on its own before the test finished: a failure whatever the test did.
                fate = run.fate()
                entry.update(fate, ok=False)
                result["memory"] |= fate.get("exit_code") == _EXIT_MEMORY
                entry["error"] = "%s (%s)" % (entry["error"] or "the candidate's process ended",
                                              ", ".join("%s %s" % kv for kv in fate.items()))
        if result["candidate_error"] is not None:
            break
        result["tests"].append(entry)
        if stop:
            break
    nonce = _sys.stdin.buffer.read().decode("ascii", "replace").strip()
    result["done"] = nonce
    _write_all(out, (dumps(result) + "\n").encode("utf-8"))


# The driver's own classes (test code defines its classes later, in its own namespace).
_DRIVER_TYPES = frozenset(v for v in list(globals().values()) if isinstance(v, type) and v.__module__ == "__main__")
_main()
