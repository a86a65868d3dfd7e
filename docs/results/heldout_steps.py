#!/usr/bin/env python3
"""Held-out scores of one run at every scored step, against step 0 and against copying the old code.

    python3 docs/results/heldout_steps.py RUN_DIR [--markdown]

RUN_DIR holds `heldout.jsonl` (per item and step: format, es_star, em_star, em) and
`heldout-copy.jsonl` (the same items answered with the old code, well formatted). For each step:
the mean of each score, its change from step 0 and its difference from the copy answer, each with
a 95 % paired-bootstrap interval over items (10,000 resamples, seed 0). "exact, not copy" is the
exact rate over the items where copying the old code is not already exact: a migration, not a copy.
Standard library only.
"""
import json
import random
import sys
from collections import defaultdict

SCORES = [("format", "format"), ("es_star", "ES*"), ("em_star", "EM*"), ("em", "exact")]


def read(path):
    by_step = defaultdict(dict)
    for line in open(path):
        r = json.loads(line)
        by_step[r["step"]][r["id"]] = r["scores"]
    return by_step


def interval(d, rng):
    n = len(d)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(10000))
    return means[249], means[9749]


def print_table(header, rows, markdown):
    """A Markdown table, or tab-separated lines."""
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        for r in [header] + rows:
            print("\t".join(r))


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    md = "--markdown" in sys.argv
    if len(args) != 1:
        sys.exit(__doc__)
    run = args[0]
    steps = read(f"{run}/heldout.jsonl")
    copy = read(f"{run}/heldout-copy.jsonl")[0]
    ids = sorted(steps[0])
    not_copy = [i for i in ids if copy[i]["em"] < 1.0]
    header = ["step", "score", "mean", "change from step 0 [95% CI]", "minus copy [95% CI]"]
    rows = []
    for step in sorted(steps):
        cur = steps[step]
        for key, name in SCORES + [("em_not_copy", "exact, not copy")]:
            rng = random.Random(0)
            sel = not_copy if key == "em_not_copy" else ids
            k = "em" if key == "em_not_copy" else key
            x = [cur[i][k] for i in sel]
            base = [steps[0][i][k] for i in sel]
            cp = [copy[i][k] for i in sel]
            mean = sum(x) / len(x)
            ch = [a - b for a, b in zip(x, base)]
            vs = [a - b for a, b in zip(x, cp)]
            lo, hi = interval(ch, rng)
            vlo, vhi = interval(vs, rng)
            label = f"{name} ({len(sel)} items)" if key == "em_not_copy" else name
            rows.append([str(step), label, f"{mean:+.3f}", f"{sum(ch) / len(ch):+.3f} [{lo:+.3f}, {hi:+.3f}]", f"{sum(vs) / len(vs):+.3f} [{vlo:+.3f}, {vhi:+.3f}]"])
    print_table(header, rows, md)


if __name__ == "__main__":
    main()
