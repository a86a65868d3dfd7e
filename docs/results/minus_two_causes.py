#!/usr/bin/env python3
"""Why held-out answers scored ES* -2 (no parsable python block), per scored step, for runs whose
`heldout.jsonl` keeps the answers' text (runs from 2026-12-08 on).

    python3 docs/results/minus_two_causes.py RUN_OR_FOLDER [--max-new-tokens 384] [--markdown]

Each -2 answer falls in one of three causes: it has no fenced python block at all; it has one that
Python cannot parse; or it has neither because it was cut at the token limit (its token count
reached --max-new-tokens, so the block, if any, was never closed). The parse uses this Python's
`ast`, which is close to, not the same as, the reward's own parser. Standard library only.
"""
import ast
import json
import os
import re
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from heldout_steps import print_table  # noqa: E402

BLOCK = re.compile(r"```python\s*\n(.*?)```", re.S)


def cause(text, tokens, limit):
    m = BLOCK.search(text)
    if m is None:
        return "cut at the token limit" if tokens >= limit else "no python block"
    try:
        ast.parse(m.group(1))
    except SyntaxError:
        return "a block that does not parse"
    return "a block that parses (the reward disagrees)"


def main():
    args = sys.argv[1:]
    limit = 384
    if "--max-new-tokens" in args:
        i = args.index("--max-new-tokens")
        limit = int(args[i + 1])
        del args[i : i + 2]
    md = "--markdown" in args
    args = [a for a in args if not a.startswith("--")]
    if len(args) != 1:
        sys.exit(__doc__)
    counts = defaultdict(lambda: defaultdict(int))
    for line in open(os.path.join(args[0], "heldout.jsonl")):
        r = json.loads(line)
        if "text" not in r:
            sys.exit(f"{args[0]}/heldout.jsonl: item {r['id']} has no `text` (a run from before the answers were kept)")
        if r["scores"]["es_star"] <= -2.0:
            counts[r["step"]][cause(r["text"], r["tokens"], limit)] += 1
        counts[r["step"]]["items"] += 1
    names = ["no python block", "cut at the token limit", "a block that does not parse",
             "a block that parses (the reward disagrees)"]
    rows = [[str(s), str(c["items"]), str(sum(c[n] for n in names))] + [str(c[n]) for n in names]
            for s, c in sorted(counts.items())]
    print_table(["step", "items", "ES\\* -2"] + names, rows, md)


if __name__ == "__main__":
    main()
