#!/usr/bin/env python3
"""A reward variant's change pooled over its seeds, from the files in docs/results.

    python3 docs/results/pooled_seeds.py [--markdown]

For every variant with finished runs `qwen0.5b-<variant>-seed<N>/` (folders ending in `-partial`
are left out): per held-out item, the change from step 0 to the run's last scored step, averaged
over the variant's seeds; per CodeUpdateArena example (the untrained model's
`cua-qwen0.5b-untrained-120.csv` against each seed's `cua-qwen0.5b-<variant>-seed<N>-120.csv`, the
examples evaluated in all of them), the change in pass (-1, 0 or +1) averaged over the seeds. The
mean over items with a 95 % bootstrap interval over items (10,000 resamples, seed 0): the seeds
are not resampled, so the interval is for these seeds' average, not for the variant's expected
effect over all seeds. Each seed's own change is printed beside it. Standard library only.
"""
import glob
import os
import random
import re
import sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from heldout_steps import interval, print_table, read  # noqa: E402  (same folder)
from paired_cua import load  # noqa: E402
from table2 import NAMES, ORDER  # noqa: E402


def cell(d, scale=1.0, digits=2):
    lo, hi = interval(d, random.Random(0))
    f = f"{{:+.{digits}f}}"
    return f"{f.format(scale * sum(d) / len(d))} [{f.format(scale * lo)}, {f.format(scale * hi)}]"


def heldout_changes(folder, key):
    steps = read(f"{folder}/heldout.jsonl")
    last = max(steps)
    return {i: steps[last][i][key] - steps[0][i][key] for i in steps[0]}


def cua_changes(variant, seed, before):
    path = f"{HERE}/cua-qwen0.5b-{variant}-seed{seed}-120.csv"
    if not os.path.exists(path):
        return None
    after = load(path)
    return {i: after[i][1] - before[i][1] for i in before if i in after and not before[i][0] and not after[i][0]}


def pooled(per_seed):
    """Per item, the mean over seeds (items present in every seed)."""
    ids = sorted(set.intersection(*(set(d) for d in per_seed)))
    return [sum(d[i] for d in per_seed) / len(per_seed) for i in ids]


def main():
    md = "--markdown" in sys.argv
    runs = defaultdict(dict)
    for folder in glob.glob(f"{HERE}/qwen0.5b-*-seed*"):
        m = re.fullmatch(r"qwen0\.5b-(.+)-seed(\d+)", os.path.basename(folder))
        if m and m.group(1) in ORDER:  # GRPO reward variants only; partial folders do not match
            runs[m.group(1)][int(m.group(2))] = folder
    before = load(f"{HERE}/cua-qwen0.5b-untrained-120.csv")
    rows = []
    for variant in sorted(runs, key=ORDER.index):
        seeds = sorted(runs[variant])
        if len(seeds) < 2:
            continue
        row = [NAMES[variant], ", ".join(map(str, seeds))]
        for key in ["format", "es_star"]:
            per_seed = [heldout_changes(runs[variant][s], key) for s in seeds]
            each = "; ".join(f"{sum(d.values()) / len(d):+.2f}" for d in per_seed)
            row += [cell(pooled(per_seed)), each]
        per_seed = [cua_changes(variant, s, before) for s in seeds]
        if all(d is not None for d in per_seed):
            each = "; ".join(f"{100 * sum(d.values()) / len(d):+.1f}" for d in per_seed)
            row += [cell(pooled(per_seed), 100.0, 1), each]
        else:
            row += ["not run for every seed", ""]
        rows.append(row)
    if not rows:
        sys.exit(f"no variant with two finished seeds in {HERE}")
    header = ["reward", "seeds", "held-out format, pooled change", "per seed",
              "held-out ES\\*, pooled change", "per seed",
              "CodeUpdateArena pass@1, pooled change (points)", "per seed"]
    print_table(header, rows, md)


if __name__ == "__main__":
    main()
