#!/usr/bin/env python3
"""Two runs of the same sweep, item by item, at every step both scored on the held-out set.

    python3 docs/results/compare_variants.py RUN_A RUN_B [--markdown]

Both run directories hold `heldout.jsonl` (per item and step: format, es_star, em_star, em) for the
same items (the sweep fixes the split). For each common step and score: both means and A minus B
with a 95 % paired-bootstrap interval over items (10,000 resamples, seed 0), then three counts that
tell copying from migrating: answers whose ES* equals the copy answer's (`heldout-copy.jsonl` of
RUN_A: the old code as a well-formed answer), answers without a python block (ES* = -2) and
well-formed answers. Standard library only.
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from heldout_steps import SCORES, interval, print_table, read  # noqa: E402  (same folder)


def counts(scores, copy, ids):
    same_as_copy = sum(abs(scores[i]["es_star"] - copy[i]["es_star"]) < 1e-9 for i in ids)
    no_block = sum(scores[i]["es_star"] == -2.0 for i in ids)
    formatted = sum(scores[i]["format"] > 0 for i in ids)
    return same_as_copy, no_block, formatted


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    md = "--markdown" in sys.argv
    if len(args) != 2:
        sys.exit(__doc__)
    a, b = (read(f"{r}/heldout.jsonl") for r in args)
    copy = read(f"{args[0]}/heldout-copy.jsonl")[0]
    steps = sorted(set(a) & set(b))
    if not steps:
        sys.exit(f"{args[0]} and {args[1]} share no scored step")
    header = ["step", "score", "A", "B", "A - B [95% CI]"]
    rows = []
    for step in steps:
        ids = sorted(set(a[step]) & set(b[step]))
        if len(ids) != len(a[step]) or len(ids) != len(b[step]):
            sys.exit(f"step {step}: the runs scored different items ({len(a[step])} and {len(b[step])}, {len(ids)} in common)")
        for key, name in SCORES:
            x = [a[step][i][key] for i in ids]
            y = [b[step][i][key] for i in ids]
            lo, hi = interval([p - q for p, q in zip(x, y)], random.Random(0))
            d = (sum(x) - sum(y)) / len(ids)
            rows.append([str(step), name, f"{sum(x) / len(ids):+.3f}", f"{sum(y) / len(ids):+.3f}", f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"])
        ca, cb = counts(a[step], copy, ids), counts(b[step], copy, ids)
        for (label, p, q) in zip(["ES* equal to the copy's", "no python block", "well formed"], ca, cb):
            rows.append([str(step), label, f"{p}/{len(ids)}", f"{q}/{len(ids)}", ""])
    if not md:
        print(f"A = {args[0]}\nB = {args[1]}")
    print_table(header, rows, md)


if __name__ == "__main__":
    main()
