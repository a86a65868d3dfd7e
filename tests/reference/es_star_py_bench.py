#!/usr/bin/env python3
"""Time the paper's es_star (pure-Python DP Levenshtein) on every row of a ReCode JSON-lines file.

Each row scores "```python\n{old_code}\n```" against new_code (null fields as empty text), the
same work as recode_reward::bench::bench_es_star. Prints one JSON line: items, seconds, mean_reward.
Without the paper's two bugs, like the Rust version: string literals are restored by index and two
empty codes have similarity 1, so both compute the same values.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reward_ref import star_scores  # noqa: E402


def main():
    path = sys.argv[1]
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    cases = [("```python\n%s\n```" % (r.get("old_code") or ""), r.get("new_code") or "") for r in rows]
    start = time.perf_counter()
    total = sum(star_scores(c, t, by_index=True)[1] for c, t in cases)
    seconds = time.perf_counter() - start
    print(json.dumps({"items": len(cases), "seconds": seconds, "mean_reward": total / max(len(cases), 1)}))


if __name__ == "__main__":
    main()
