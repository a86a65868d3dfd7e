#!/usr/bin/env python3
"""The Qwen2.5-Coder-0.5B reward ablation beside the paper's Table 2, from the files in docs/results.

    python3 docs/results/table2.py [--markdown]

One row per finished run, found as `qwen0.5b-<variant>-seed<N>/` (its `heldout.jsonl` and
`heldout-copy.jsonl`, copied from the run directory by `collect_run.py`) with, where it exists, the CodeUpdateArena CSV
`cua-qwen0.5b-<variant>-seed<N>-120.csv` (from `paired_cua.py --csv`), compared with the untrained
model's `cua-qwen0.5b-untrained-120.csv`. Held-out: the change from step 0 to the run's last scored
step, 95 % paired-bootstrap intervals over items; "exact, not copy": exact answers among the items
where copying the old code is not already exact. A folder whose name ends in `-partial` is a run
still going: its row says so. Standard library only.
"""
import glob
import os
import random
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from heldout_steps import interval, print_table, read  # noqa: E402  (same folder)
from paired_cua import load, mcnemar_exact, paired_change  # noqa: E402

# ReCode, Table 2: change in CodeUpdateArena Pass@1 over the untrained Qwen2.5-Coder-7B-Instruct (GRPO).
PAPER = {"format": "-2.3", "format+em": "-1.2", "format+es": "+5.4", "format+em_star": "+1.1", "format+es_star": "+7.4"}
ORDER = list(PAPER)
NAMES = {"format": "format only", "format+em": "+EM", "format+es": "+ES", "format+em_star": "+EM\\*", "format+es_star": "+ES\\*"}


def change(after, before, key, ids):
    d = [after[i][key] - before[i][key] for i in ids]
    lo, hi = interval(d, random.Random(0))
    return f"{sum(d) / len(d):+.2f} [{lo:+.2f}, {hi:+.2f}]"


def row(folder):
    m = re.fullmatch(r"qwen0\.5b-(.+)-seed(\d+)(-partial)?", os.path.basename(folder))
    variant, seed, partial = m.group(1), m.group(2), bool(m.group(3))
    steps = read(f"{folder}/heldout.jsonl")
    copy = read(f"{folder}/heldout-copy.jsonl")[0]
    last = max(steps)
    ids = sorted(steps[0])
    not_copy = [i for i in ids if copy[i]["em"] < 1.0]
    exact = lambda s: sum(steps[s][i]["em"] for i in not_copy)  # noqa: E731
    cua = f"{HERE}/cua-qwen0.5b-{variant}-seed{seed}-120.csv"
    if os.path.exists(cua):
        r = paired_change(load(f"{HERE}/cua-qwen0.5b-untrained-120.csv"), load(cua))
        n = r["n"]
        cua_cell = (f"{100 * r['before'] / n:.1f} -> {100 * r['after'] / n:.1f} "
                    f"({100 * (r['after'] - r['before']) / n:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}], "
                    f"p = {mcnemar_exact(r['only_before'], r['only_after']):.3f})")
    else:
        cua_cell = "not run"
    name = NAMES.get(variant, variant) + (" (partial)" if partial else "")
    return variant, int(seed), [
        name, seed, str(last),
        change(steps[last], steps[0], "format", ids), change(steps[last], steps[0], "es_star", ids),
        change(steps[last], copy, "es_star", ids),
        f"{exact(0):.0f} -> {exact(last):.0f} of {len(not_copy)}",
        cua_cell, PAPER.get(variant, ""),
    ]


def main():
    md = "--markdown" in sys.argv
    folders = sorted(glob.glob(f"{HERE}/qwen0.5b-*-seed*"))
    if not folders:
        sys.exit(f"no run folder qwen0.5b-<variant>-seed<N> in {HERE}")
    rows = sorted((row(f) for f in folders), key=lambda r: (ORDER.index(r[0]) if r[0] in ORDER else 99, r[1]))
    header = ["reward", "seed", "steps", "held-out format, change", "held-out ES\\*, change",
              "held-out ES\\* at the end minus copy",
              "exact migrations, not copy", "CodeUpdateArena pass@1 % before -> after (change [95% CI], McNemar p)",
              "paper ΔPass@1 (7B)"]
    print_table(header, [r[2] for r in rows], md)


if __name__ == "__main__":
    main()
