# The Python side of a Python reward plugin (core/src/reward_py/mod.rs): one process per reward,
# started once per run. Protocol: JSON lines. The host writes the configuration, then one request
# per batch of completions; the worker answers each with one line on the protocol pipe (a copy of
# its original stdout; the user's own prints go to stderr, which the host forwards to the run log).
import importlib
import importlib.util
import inspect
import json
import math
import os
import sys
import traceback

proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr


def send(obj):
    proto.write(json.dumps(obj) + "\n")
    proto.flush()


def load(cfg):
    if cfg.get("path"):
        path = os.path.abspath(cfg["path"])
        if not os.path.isfile(path):
            raise LookupError(f"file {cfg['path']} does not exist")
        sys.path.insert(0, os.path.dirname(path))
        name = "recode_reward_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        where = cfg["path"]
    else:
        module = importlib.import_module(cfg["module"])
        where = f"module {cfg['module']}"
    fn = getattr(module, cfg["function"], None)
    if fn is None or not callable(fn):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise LookupError(f"{where} has no function `{cfg['function']}` (it defines: {', '.join(names) or 'nothing'})")
    check_signature(fn, cfg, where)
    return fn, where


def check_signature(fn, cfg, where):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C function: nothing to check
    params = sig.parameters.values()
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if cfg["style"] == "trl":
        needed = ["completions"]
        shape = "f(prompts, completions, **kwargs) -> list[float | None]"
    else:
        needed = ["data_source", "solution_str", "ground_truth"]
        shape = "compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float | dict"
    missing = [n for n in needed if n not in names]
    if missing and not takes_kwargs:
        raise TypeError(
            f"`{cfg['function']}` in {where} has the signature {fn.__name__}{sig}, but style "
            f"\"{cfg['style']}\" calls {shape}: it takes no `{missing[0]}`"
        )
    required = [
        p.name
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    known = set(cfg.get("columns", [])) | set(cfg.get("options", {})) | {
        "prompts", "completions", "completion_ids", "data_source", "solution_str", "ground_truth", "extra_info",
    }
    unknown = [n for n in required if n not in known]
    if unknown and cfg.get("columns") is not None:
        raise TypeError(
            f"`{cfg['function']}` in {where} requires `{unknown[0]}`, which is neither a data column "
            f"({', '.join(sorted(cfg['columns']))}), an option, nor an argument of style \"{cfg['style']}\""
        )


def number(x, i):
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        try:
            import numbers

            if isinstance(x, numbers.Real) and not isinstance(x, bool):
                return float(x)
        except Exception:
            pass
        raise TypeError(f"item {i}: expected a float or None, got {type(x).__name__} {x!r:.80}")
    return float(x)


def call_trl(fn, cfg, req):
    n = len(req["completions"])
    kwargs = dict(cfg.get("options", {}))
    for col in sorted({k for row in req["columns"] for k in row}):
        kwargs[col] = [row.get(col) for row in req["columns"]]
    if cfg.get("completions_as") == "messages":
        completions = [[{"role": "assistant", "content": c}] for c in req["completions"]]
    else:
        completions = req["completions"]
    kwargs.update(prompts=req["prompts"], completions=completions, completion_ids=req["completion_ids"])
    out = fn(**kwargs)
    if out is None or isinstance(out, (str, bytes, dict)) or not hasattr(out, "__len__"):
        raise TypeError(f"expected a list of {n} floats (or None), got {type(out).__name__}")
    out = list(out)
    if len(out) != n:
        raise ValueError(f"returned {len(out)} scores for {n} completions")
    return [number(x, i) for i, x in enumerate(out)], {}


def call_verl(fn, cfg, req):
    scores, metrics = [], {}
    for i, (completion, target, row) in enumerate(zip(req["completions"], req["targets"], req["columns"])):
        extra = {k: v for k, v in row.items() if k != "data_source"}
        data_source = row.get("data_source", row.get("dependency", ""))
        out = fn(
            data_source=data_source,
            solution_str=completion,
            ground_truth=target,
            extra_info=extra,
            **cfg.get("options", {}),
        )
        if isinstance(out, dict):
            if "score" not in out:
                raise KeyError(f"item {i}: a dict return needs a `score` key, got keys {sorted(out)}")
            for k, v in out.items():
                if k != "score" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    metrics.setdefault(k, []).append(float(v))
            out = out["score"]
        scores.append(number(out, i))
    return scores, {k: sum(v) / len(v) for k, v in metrics.items()}


def main():
    cfg = json.loads(sys.stdin.readline())
    try:
        fn, where = load(cfg)
    except BaseException as e:
        send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        return
    send({"ok": True, "where": where})
    call = call_trl if cfg["style"] == "trl" else call_verl
    for line in sys.stdin:
        req = json.loads(line)
        try:
            scores, metrics = call(fn, cfg, req)
            bad = [i for i, s in enumerate(scores) if s is not None and not math.isfinite(s)]
            if bad:
                raise ValueError(f"item {bad[0]}: the score is {scores[bad[0]]}, not a finite number")
        except BaseException as e:
            send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
            continue
        send({"scores": scores, "metrics": metrics})


main()
