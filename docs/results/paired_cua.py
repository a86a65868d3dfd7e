#!/usr/bin/env python3
"""Paired comparison of two CodeUpdateArena (or HumanEval) evaluations on the same problems (greedy pass@1).

    python3 docs/results/paired_cua.py BEFORE AFTER [--csv OUT.csv]

BEFORE and AFTER are `recode eval --out` reports (JSON) or per-problem CSVs written by this script
(id, environment_skipped, passed, passed_without_update). Only examples evaluated in both count.
Prints the pass rates, the change with a 95 % paired-bootstrap interval (10,000 resamples, seed 0)
and McNemar's exact two-sided test on the discordant pairs. Standard library only.
"""
import csv
import json
import random
import sys
from math import comb


def load(path):
    """id -> (environment_skipped, passed, passed_without_update)."""
    if path.endswith(".csv"):
        with open(path) as f:
            return {r["id"]: (int(r["environment_skipped"]), int(r["passed"] or 0), int(r["passed_without_update"] or 0)) for r in csv.DictReader(f)}
    report = json.load(open(path))
    out = {}
    for p in report["problems"]:
        skipped = p["environment"] is not None
        out[p["id"]] = (int(skipped), int(not skipped and p["c"] > 0), int(not skipped and (p.get("c_without_update") or 0) > 0))
    return out


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "environment_skipped", "passed", "passed_without_update"])
        for pid, (s, p, q) in rows.items():
            w.writerow([pid, s, p, q])


def mcnemar_exact(b, c):
    """Two-sided exact p-value: the discordant pairs under Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(0, min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_change(before, after):
    """Pass counts on the examples evaluated in both, the discordant pairs and a 95 % paired-bootstrap
    interval for the change in pass rate (10,000 resamples, seed 0); None when no example is shared."""
    ids = [i for i in before if i in after and not before[i][0] and not after[i][0]]
    if not ids:
        return None
    x = [before[i][1] for i in ids]
    y = [after[i][1] for i in ids]
    n = len(ids)
    rng = random.Random(0)
    boots = sorted(sum(y[j] - x[j] for j in (rng.randrange(n) for _ in range(n))) / n for _ in range(10000))
    return {
        "n": n,
        "before": sum(x),
        "after": sum(y),
        "only_before": sum(1 for p, q in zip(x, y) if p and not q),
        "only_after": sum(1 for p, q in zip(x, y) if q and not p),
        "lo": boots[249],
        "hi": boots[9749],
    }


def main():
    args = sys.argv[1:]
    out_csv = None
    if "--csv" in args:
        i = args.index("--csv")
        out_csv = args[i + 1]
        del args[i : i + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    before, after = load(args[0]), load(args[1])
    if out_csv:
        write_csv(after, out_csv)
    r = paired_change(before, after)
    if r is None:
        sys.exit("no example evaluated in both")
    n, x, y, b, c, lo, hi = r["n"], r["before"], r["after"], r["only_before"], r["only_after"], r["lo"], r["hi"]
    diff = (y - x) / n
    print(f"examples evaluated in both: {n} (of {len(before)} / {len(after)})")
    print(f"before: {x}/{n} = {100 * x / n:.1f} %   after: {y}/{n} = {100 * y / n:.1f} %")
    print(f"change: {100 * diff:+.1f} points, 95 % paired-bootstrap interval [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    print(f"discordant: {b} passed only before, {c} passed only after; McNemar exact p = {mcnemar_exact(b, c):.3f}")


if __name__ == "__main__":
    main()
