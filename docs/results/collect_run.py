#!/usr/bin/env python3
"""Copy the files the results page reads from one finished run into docs/results.

    python3 docs/results/collect_run.py runs/reward-variants-0.5b/format+em-seed=1/<timestamp> [--partial]

The run directory's name inside the sweep (`<variant>-seed=<N>`) gives the folder
`docs/results/qwen0.5b-<variant>-seed<N>/` (with `-partial` for a run still going), which then
holds the run's per-item held-out scores (`heldout.jsonl`, `heldout-copy.jsonl`), its per-step
metrics, its eval log and its resolved spec: what `table2.py`, `heldout_steps.py` and
`compare_variants.py` need, small enough to commit. Standard library only.
"""
import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = ["heldout.jsonl", "heldout-copy.jsonl", "metrics.jsonl", "eval.jsonl", "spec.toml"]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        sys.exit(__doc__)
    run = os.path.normpath(args[0])
    name = os.path.basename(os.path.dirname(run))
    m = re.fullmatch(r"(.+)-seed=(\d+)", name)
    if not m:
        sys.exit(f"{run}: expected a run directory inside a sweep run folder named `<variant>-seed=<N>`, "
                 f"found the folder `{name}`")
    missing = [f for f in FILES if not os.path.exists(os.path.join(run, f))]
    if missing:
        sys.exit(f"{run}: missing {', '.join(missing)} (has the run scored its held-out items yet?)")
    suffix = "-partial" if "--partial" in sys.argv else ""
    out = os.path.join(HERE, f"qwen0.5b-{m.group(1)}-seed{m.group(2)}{suffix}")
    os.makedirs(out, exist_ok=True)
    for f in FILES:
        shutil.copyfile(os.path.join(run, f), os.path.join(out, f))
    print(f"copied {len(FILES)} files from {run} to {os.path.relpath(out)}")


if __name__ == "__main__":
    main()
