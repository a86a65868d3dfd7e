#!/usr/bin/env python3
"""Build reward parity cases and their expected values from the paper's formulas (reward_ref.py).

  parity_cases.py fixture            -> writes plugins/reward/tests/fixtures/parity_cases.json
                                        from rows of data/sample-migrations.jsonl plus tricky rows below
  parity_cases.py rows FILE [STEP]   -> prints cases for every STEP-th row of a ReCode JSON-lines file

Each case: {"row", "kind", "completion", "target", "format", "em_star", "es_star", "ref_bug"}.
"""
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reward_ref import format_score, star_scores  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

# Rows that exercise normalisation corners (written for this test).
TRICKY = [
    ("def f():\n    '''Doc with a # hash.\n\n    And a blank line.'''\n    return \"#x\"  # trailing\n",
     "def f():\n    '''Doc with a # hash.\n\n    And a blank line.'''\n    return \"#y\"  # trailing\n"),
    ("x = 1  # don't do this\ny = 'a'\n", "x = 2  # it's fine\ny = 'b'\n"),
    ("s = 'héllo wörld'  # ünïcode\nt = \"中文\"\n", "s = 'héllo wörld'\nt = \"中文字\"\n"),
    ("import os\r\n\r\npath = os.path.join('a', 'b')\r\n", "import os\r\npath = os.path.join('a', 'c')\r\n"),
    ("if ok:\n    # only a comment\n    pass\n", "if ok:\n    pass\n"),
    ("q = '''unterminated\nx = 1\n", "q = 'done'\nx = 1\n"),
]


def wrap(code, think="I will update the call."):
    return "%s</think>\n<answer>\n```python\n%s\n```\n</answer>" % (think, code)


def mutate(code, rng):
    chars = list(code)
    for _ in range(max(1, len(chars) // 40)):
        i = rng.randrange(len(chars) + 1)
        op = rng.randrange(3)
        c = rng.choice("abcxyz_(), 0")
        if op == 0 or not chars:
            chars.insert(i, c)
        elif op == 1:
            del chars[min(i, len(chars) - 1)]
        else:
            chars[min(i, len(chars) - 1)] = c
    return "".join(chars)


def cases_for(row_id, old, new, rng):
    lines = new.split("\n")
    commented = "# updated for the new API\n" + "\n".join(l + ("  # changed" if l.strip() and i % 2 else "") for i, l in enumerate(lines))
    blank = "\n\n".join(lines).replace("\n", "\n   \n", 1) + "\n\n"
    exact = wrap(new)
    out = {
        "exact": exact,
        "old_code": wrap(old),
        "comments_added": wrap(commented),
        "blank_lines_added": wrap(blank),
        "no_block": "I will update the call.</think>\n<answer>\n%s\n</answer>" % new,
        "syntax_error": wrap(new + "\ndef broken(:\n    pass"),
        "trailing_text": exact + "\nHope this helps!",
        "trailing_whitespace": exact + " \n\t\n",
        "unicode_whitespace": "\u00a0\u2003" + exact + "\u00a0\u2003\x1c\x1f",
        "missing_think_close": "I will update the call.\n<answer>\n```python\n%s\n```\n</answer>" % new,
        "block_in_think": wrap(new, think="Old:\n```python\n%s\n```\nNow update." % old),
        "nested_think": "<think>" + exact,
        "truncated": exact[: int(len(exact) * 0.6)],
        "mutated": wrap(mutate(new, rng)),
    }
    return [{"row": row_id, "kind": k, "completion": c, "target": new} for k, c in out.items()]


def score(cases):
    for c in cases:
        em, es, bug = star_scores(c["completion"], c["target"])
        c.update(format=format_score(c["completion"]), em_star=em, es_star=es, ref_bug=bug)
    return cases


def main():
    rng = random.Random(20250625)
    mode = sys.argv[1] if len(sys.argv) > 1 else "fixture"
    if mode == "fixture":
        with open(os.path.join(ROOT, "data", "sample-migrations.jsonl"), encoding="utf-8") as f:
            rows = [json.loads(l) for l in f if l.strip()]
        pairs = [("sample:%d" % (i + 1), r["old_code"], r["new_code"]) for i, r in enumerate(rows) if i % 5 == 0]
        pairs += [("tricky:%d" % (i + 1), o, n) for i, (o, n) in enumerate(TRICKY)]
        cases = score([c for rid, o, n in pairs for c in cases_for(rid, o, n, rng)])
        out = os.path.join(ROOT, "plugins", "reward", "tests", "fixtures", "parity_cases.json")
        with open(out, "w", encoding="utf-8") as f:
            json.dump(cases, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print("wrote %d cases to %s" % (len(cases), out))
    elif mode == "rows":
        step = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        pairs = []
        with open(sys.argv[2], encoding="utf-8") as f:
            for i, line in enumerate(f):
                r = json.loads(line)
                if i % step == 0 and r.get("old_code") is not None and r.get("new_code") is not None:
                    pairs.append(("line:%d" % (i + 1), r["old_code"], r["new_code"]))
        json.dump(score([c for rid, o, n in pairs for c in cases_for(rid, o, n, rng)]), sys.stdout)
    else:
        sys.exit("unknown mode %r" % mode)


if __name__ == "__main__":
    main()
