"""Independent pure-Python reference values for recode_core::algo (core/src/algo/tests.rs).

Written from the TRL GRPOTrainer / verl core_algos formulas, not from the Rust code:
vectorised-style per-token loss -max(-rho*A, -clip(rho)*A), verl dual clip, k3 KL, and the
aggregations written as TRL/verl write them (per micro-batch, then rescaled to mini-batch totals).
Run: python3 tests/reference/algo_ref.py
"""
import math


def std(xs):  # torch.std (unbiased); n<2 -> 0 by our convention
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def grpo_adv(rewards, g, scale, eps=1e-4):
    out = []
    bstd = std(rewards)
    for k in range(0, len(rewards), g):
        grp = rewards[k:k + g]
        m = sum(grp) / g
        s = {"group": std(grp), "batch": bstd, "none": None}[scale]
        out += [(r - m) if s is None else (r - m) / (s + eps) for r in grp]
    return out


def pg_token(lp, old, a, el, eh, c=None):
    rho = math.exp(lp - old)
    l1 = -a * rho
    l2 = -a * min(max(rho, 1 - el), 1 + eh)
    loss = max(l1, l2)
    if c is not None and a < 0:
        loss = min(loss, -a * c)
    return loss


def kl3(lp, ref):
    return math.exp(ref - lp) - (ref - lp) - 1


def batch_loss(B, el, eh, beta, agg, c=None, max_len=None):
    R, C = B["rows"], B["cols"]
    per = [[0.0] * C for _ in range(R)]
    for r in range(R):
        for t in range(C):
            i = r * C + t
            l = pg_token(B["logp"][i], B["old"][i], B["adv"][r], el, eh, c)
            if beta:
                l += beta * kl3(B["logp"][i], B["ref"][i])
            per[r][t] = l * B["mask"][i]
    msum = [sum(B["mask"][r * C:(r + 1) * C]) for r in range(R)]
    tok = [sum(per[r]) for r in range(R)]
    if agg == "grpo":
        return sum(tok[r] / max(msum[r], 1) for r in range(R)) / R * R / B["norm_rows"]
    if agg == "bnpo":
        return sum(tok) / max(B["norm_tokens"], 1)
    if agg == "dr_grpo":
        return sum(tok) / (B["norm_rows"] * max_len)
    if agg == "seq_mean_token_sum":
        return sum(tok) / B["norm_rows"]


BATCH = dict(
    rows=3, cols=4, norm_rows=3, norm_tokens=6.0,
    logp=[-1.0, -0.5, -2.0, -0.1, -0.3, -1.2, -0.7, -3.0, -0.4, -0.9, -1.1, -0.2],
    old=[-1.3, -0.5, -1.6, -0.1, -0.1, -1.8, -0.7, -3.0, -0.4, -0.9, -1.1, -0.2],
    ref=[-1.1, -0.4, -2.5, -0.3, -0.2, -1.0, -0.9, -2.0, -0.5, -1.0, -1.0, -0.1],
    adv=[0.8, -1.5, 0.3],
    mask=[1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0],
)

if __name__ == "__main__":
    rw = [1.0, 0.0, 0.5, 0.25, 2.0, 2.0, 2.0, 2.0]
    for s in ["group", "batch", "none"]:
        print(f"grpo_adv {s}:", [repr(x) for x in grpo_adv(rw, 4, s)])
    cases = [(-1.0, -1.3, 0.8), (-1.0, -1.3, -0.8), (-1.6, -1.0, 0.8), (-1.6, -1.0, -0.8), (0.5, -1.0, -2.0), (-0.5, -0.4, 1.1)]
    for (lp, old, a) in cases:
        print("pg", (lp, old, a), repr(pg_token(lp, old, a, 0.2, 0.28)), repr(pg_token(lp, old, a, 0.2, 0.28, 3.0)))
    for (lp, ref) in [(-1.0, -1.3), (-2.0, -0.5), (-0.7, -0.7)]:
        print("kl3", (lp, ref), repr(kl3(lp, ref)))
    for agg in ["grpo", "bnpo", "dr_grpo", "seq_mean_token_sum"]:
        print("loss", agg, repr(batch_loss(BATCH, 0.2, 0.28, 0.04, agg, max_len=8)))
    print("loss dapo token-mean c=3 beta=0", repr(batch_loss(BATCH, 0.2, 0.28, 0.0, "bnpo", c=3.0)))
