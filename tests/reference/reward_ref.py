#!/usr/bin/env python3
"""Reference values of the ReCode rewards (format, em_star, es_star) as the paper defines them.

Written from the paper's formulas: regex-based normalisation with string placeholders restored by
name (so results are only meaningful for code with at most 10 string literals), `ast.parse` as the
syntax check and a plain dynamic-programming Levenshtein distance.

Usage:
  reward_ref.py normalize < strings.json          -> JSON list of normalised strings
  reward_ref.py score < cases.json                -> cases with "format", "em_star", "es_star",
                                                     "ref_bug" (true where the paper's code breaks)
A case is {"completion": str, "target": str, ...}; other keys are passed through.
"""
import ast
import json
import re
import sys

STRING_RE = r"('''(.*?)'''|\"\"\"(.*?)\"\"\"|'(.*?)'|\"(.*?)\")"
COMMENT_RE = r"#.*?$|\"\"\"(.*?)\"\"\"|'''(.*?)'''"
FORMAT_RE = r"^<think>([^<]*(?:<(?!/?think>)[^<]*)*)<\/think>\s*<answer>([\s\S]*?)<\/answer>\s*$"
BLOCK_RE = r"```python\n(.*?)\n```"


def normalize(code, by_index=False):
    """Returns (normalised code, number of string placeholders used).

    by_index=False restores placeholders by name in insertion order, as the paper does (wrong
    with more than 10 literals); by_index=True restores each by its own index (the fix).
    """
    saved = []

    def hide(m):
        saved.append(m.group(0))
        return ("\x00%d\x00" if by_index else "STRING_PLACEHOLDER_%d") % (len(saved) - 1)

    text = re.sub(STRING_RE, hide, code, flags=re.DOTALL)
    text = re.sub(COMMENT_RE, "", text, flags=re.MULTILINE | re.DOTALL)
    if by_index:
        text = re.sub("\x00(\\d+)\x00", lambda m: saved[int(m.group(1))], text)
    else:
        for i, original in enumerate(saved):
            text = text.replace("STRING_PLACEHOLDER_%d" % i, original)
    text = re.sub(r"\n\s*\n", "\n", text)
    return re.sub(r"^\s*$\n", "", text.strip(), flags=re.MULTILINE), len(saved)


def parses(code):
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                cur[j] = prev[j - 1]
            else:
                cur[j] = 1 + min(prev[j], cur[j - 1], prev[j - 1])
        prev = cur
    return prev[len(b)]


def format_score(completion):
    return 1.0 if re.search(FORMAT_RE, "<think>" + completion, re.DOTALL) else -1.0


def star_scores(completion, target, by_index=False):
    """(em_star, es_star, ref_bug); ref_bug is false whenever by_index is set."""
    blocks = re.findall(BLOCK_RE, completion, re.DOTALL)
    if not blocks:
        return -2.0, -2.0, False
    code, n_code = normalize(blocks[0].strip(), by_index)
    if not parses(code):
        return -2.0, -2.0, n_code > 10 and not by_index
    tgt, n_tgt = normalize(target, by_index)
    bug = (n_code > 10 or n_tgt > 10) and not by_index
    em = 2.0 if code == tgt else -1.5
    longest = max(len(code), len(tgt))
    if longest == 0:
        return em, 2.0, not by_index  # the paper divides by zero here
    sim = 1 - levenshtein(code, tgt) / longest
    return em, sim * 3.5 - 1.5, bug


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "score"
    data = json.load(sys.stdin)
    if mode == "normalize":
        json.dump([normalize(s)[0] for s in data], sys.stdout)
    elif mode == "score":
        for case in data:
            em, es, bug = star_scores(case["completion"], case["target"])
            case.update(format=format_score(case["completion"]), em_star=em, es_star=es, ref_bug=bug)
        json.dump(data, sys.stdout, indent=1, ensure_ascii=False)
    else:
        sys.exit("unknown mode %r" % mode)


if __name__ == "__main__":
    main()
