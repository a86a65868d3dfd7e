"""The ReCode paper's format and ES* rewards as TRL-style reward functions.

Written from the paper's description (ReCode, arXiv 2506.20495, section 3): the format reward is
+1 when the answer is `<think>...</think>` then `<answer>...</answer>`, else -1; ES* takes the first
```python block, removes comments and blank lines (string literals protected), checks that the
result parses, and scores 3.5 * (1 - Levenshtein / max length) - 1.5, or -2 without a parsable
block. Use it in a spec as

    [[reward]]
    python = "examples/rewards/recode_rewards.py"
    function = "es_star_reward"

Completions are what the model generated after the prompt's prefill; the ReCode prefill ends with
`<think>`, so `think_prefix` puts it back before the format check.
"""
import ast
import re

# The reasoning holds neither `<think>` nor `</think>`; the answer ends at the last `</answer>`.
FORMAT = re.compile(r"<think>(?:(?!</?think>).)*</think>\s*<answer>.*</answer>\s*", re.DOTALL)
BLOCK = re.compile(r"```python\n(.*?)\n```", re.DOTALL)
# Leftmost literal, alternatives tried in this order, each ending at its nearest closing quote.
LITERAL = re.compile(r"'''.*?'''|\"\"\".*?\"\"\"|'.*?'|\".*?\"", re.DOTALL)


def format_reward(completions, think_prefix="<think>", **kwargs):
    """+1 for a well-formed `<think>` / `<answer>` answer, -1 otherwise."""
    return [1.0 if FORMAT.fullmatch(think_prefix + c) else -1.0 for c in completions]


def remove_comments_and_blank_lines(code):
    literals = []

    def hide(m):
        literals.append(m.group(0))
        return f"\x00{len(literals) - 1}\x00"

    text = LITERAL.sub(hide, code)
    text = re.sub(r"#[^\n]*", "", text)  # a comment runs to the end of its line
    text = re.sub("\x00(\\d+)\x00", lambda m: literals[int(m.group(1))], text)
    text = re.sub(r"\n\s*\n", "\n", text)
    return re.sub(r"^\s*$\n", "", text.strip(), flags=re.MULTILINE)


def levenshtein(a, b):
    """Edit distance in characters: Hyyro's bit-parallel form of Myers' algorithm."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    full, top = (1 << m) - 1, 1 << (m - 1)
    peq = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    pv, mv, score = full, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & full)
        mh = pv & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = mh | (~(xv | ph) & full)
        mv = ph & xv
    return score


def code_of(completion):
    """The normalised first python block, or None when there is none or it does not parse."""
    m = BLOCK.search(completion)
    if m is None:
        return None
    code = remove_comments_and_blank_lines(m.group(1).strip())
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    return code


def es_star_reward(completions, new_code, **kwargs):
    """3.5 * edit similarity - 1.5 against the row's `new_code`; -2 without a parsable block."""
    scores = []
    for completion, target in zip(completions, new_code):
        code = code_of(completion)
        if code is None:
            scores.append(-2.0)
            continue
        target = remove_comments_and_blank_lines(target)
        longest = max(len(code), len(target))
        similarity = 1.0 if longest == 0 else 1.0 - levenshtein(code, target) / longest
        scores.append(3.5 * similarity - 1.5)
    return scores
