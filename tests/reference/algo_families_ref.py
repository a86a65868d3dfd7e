"""Independent pure-Python reference for GSPO, CISPO, RLOO, REINFORCE++(-baseline) and the
rollout/train importance-sampling correction (core/src/algo/tests_families.rs runs this script and
compares its JSON output with recode_core::algo).

Written from the papers and from how TRL's GRPOTrainer / verl's core_algos state the formulas, not
from the Rust code: per-token loss matrices, then TRL's loss_type aggregation; gradients by central
finite differences of these losses in float64 (CISPO with its importance weight held fixed, which is
what its stop-gradient means). Inputs are part of the output, so both sides use the same numbers.
Run: python3 tests/reference/algo_families_ref.py
"""
import json
import math

# ---- advantages (verl core_algos, outcome rewards, gamma = 1) ----


def rloo(rewards, g):
    out = []
    for k in range(0, len(rewards), g):
        grp = rewards[k:k + g]
        if g == 1:
            out += grp  # verl: a lone sample keeps its score
            continue
        for i, r in enumerate(grp):
            others = grp[:i] + grp[i + 1:]
            out.append(r - sum(others) / len(others))
    return out


def masked_whiten(values, lengths):
    # verl_F.masked_whiten over a [bs, T] matrix where row i holds values[i] on lengths[i] tokens
    flat = [v for v, l in zip(values, lengths) for _ in range(l)]
    n = len(flat)
    mean = sum(flat) / n
    var = sum((x - mean) ** 2 for x in flat) / n * (n / (n - 1))
    return [(v - mean) / math.sqrt(var + 1e-8) for v in values]


def rpp(rewards, g, lengths):
    return masked_whiten(rewards, lengths)


def rpp_baseline(rewards, g, lengths):
    centred = []
    for k in range(0, len(rewards), g):
        grp = rewards[k:k + g]
        m = 0.0 if g == 1 else sum(grp) / g
        centred += [r - m for r in grp]
    return masked_whiten(centred, lengths)


# Group 0 has ties, group 1 zero variance, group 2 ties at 0; lengths are unequal.
REWARDS = [1.0, 0.0, 1.0, 0.5, 0.3, 0.3, 0.3, 0.3, 2.0, 0.0, 0.0, 1.0]
LENGTHS = [3, 1, 5, 2, 4, 4, 1, 2, 6, 1, 3, 2]
ADV_CASES = []
for name, fn in [("rloo", lambda r, g, l: rloo(r, g)), ("rpp", rpp), ("rpp_baseline", rpp_baseline)]:
    for g in [4, 1]:
        ADV_CASES.append({"estimator": name, "group_size": g, "rewards": REWARDS, "lengths": LENGTHS,
                          "want": fn(REWARDS, g, LENGTHS)})
# A constant batch whitens to exact zeros (var + 1e-8 > 0).
ADV_CASES.append({"estimator": "rpp_baseline", "group_size": 2, "rewards": [0.7] * 4, "lengths": [1, 2, 3, 4],
                  "want": [0.0] * 4})

# ---- losses on one micro-batch ----
ROWS, COLS = 3, 4
LOGP = [-1.0, -0.5, -2.0, 9.9, -0.30, -1.2, 9.9, 9.9, -0.4, -0.9, -1.1, -0.2]
OLD = [-1.3, -0.5, -1.6, 0.0, -0.30, -1.8, 0.0, 0.0, -0.40002, -0.9, -1.1, -0.20002]
REF = [-1.1, -0.4, -2.5, 0.0, -0.2, -1.0, 0.0, 0.0, -0.5, -1.0, -1.0, -0.1]
SAMPLER = [-1.8, -0.45, -1.5, 0.0, -0.9, -1.7, 0.0, 0.0, -0.1, -1.4, -1.0, -0.25]
MASK = [1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1]  # lengths 3, 2, 4
ADV = [0.8, -1.5, 0.3]
NORM_ROWS, NORM_TOKENS = 3, 9.0


def kl3(lp, ref):
    return math.exp(ref - lp) - (ref - lp) - 1


def is_weights(mode, cap):
    # TRL: ratio = exp(old - sampler), per token or per sequence (sum over the row), then
    # truncated (min(., cap)) or masked (0 above cap).
    if mode == "none":
        return [1.0] * (ROWS * COLS)
    w = [0.0] * (ROWS * COLS)
    for r in range(ROWS):
        idx = [r * COLS + t for t in range(COLS) if MASK[r * COLS + t]]
        seq = math.exp(sum(OLD[i] - SAMPLER[i] for i in idx))
        for i in idx:
            rho = seq if mode.startswith("sequence") else math.exp(OLD[i] - SAMPLER[i])
            if mode.endswith("truncate"):
                w[i] = min(rho, cap)
            else:
                w[i] = 0.0 if rho > cap else rho
    return w


def aggregate(per, agg, max_len):
    tok = [sum(per[r * COLS + t] * MASK[r * COLS + t] for t in range(COLS)) for r in range(ROWS)]
    n = [sum(MASK[r * COLS:(r + 1) * COLS]) for r in range(ROWS)]
    if agg == "grpo":  # mean over sequences of token means, rescaled to the mini-batch's rows
        return sum(tok[r] / max(n[r], 1) for r in range(ROWS)) / NORM_ROWS
    if agg == "bnpo":
        return sum(tok) / NORM_TOKENS
    if agg == "dr_grpo":
        return sum(tok) / (NORM_ROWS * max_len)
    if agg == "seq_mean_token_sum":
        return sum(tok) / NORM_ROWS
    raise ValueError(agg)


def loss(cfg, logp, frozen=None):
    """The per-token loss matrix as TRL writes it, then aggregated. `frozen`: log-probs that the
    CISPO weight is computed from (the stop-gradient), default `logp`."""
    isw = is_weights(cfg["is_mode"], cfg["is_cap"])
    per = [0.0] * (ROWS * COLS)
    for r in range(ROWS):
        idx = [r * COLS + t for t in range(COLS) if MASK[r * COLS + t]]
        a = ADV[r]
        if cfg["loss"] == "gspo":
            log_s = sum(logp[i] - OLD[i] for i in idx) / len(idx)
            s = math.exp(min(log_s, 10.0))
            seq_loss = max(-s * a, -min(max(s, 1 - cfg["eps_low"]), 1 + cfg["eps_high"]) * a)
        for i in idx:
            if cfg["loss"] == "pg":
                rho = math.exp(logp[i] - OLD[i])
                l = max(-rho * a, -min(max(rho, 1 - cfg["eps_low"]), 1 + cfg["eps_high"]) * a)
                if cfg["dual_clip"] is not None and a < 0:
                    l = min(l, -cfg["dual_clip"] * a)
            elif cfg["loss"] == "gspo":
                l = seq_loss
            elif cfg["loss"] == "cispo":
                src = logp if frozen is None else frozen
                rho = math.exp(src[i] - OLD[i])
                w = rho if cfg["min_ratio"] is None else max(rho, cfg["min_ratio"])
                w = min(w, cfg["max_ratio"])
                l = -w * a * logp[i]
            l *= isw[i]
            if cfg["beta"]:
                l += cfg["beta"] * kl3(logp[i], REF[i])
            per[i] = l
    return aggregate(per, cfg["agg"], cfg["max_len"])


def grad(cfg):
    h = 1e-6
    g = []
    for i in range(ROWS * COLS):
        if not MASK[i]:
            g.append(0.0)
            continue
        up, dn = list(LOGP), list(LOGP)
        up[i] += h
        dn[i] -= h
        frozen = LOGP if cfg["loss"] == "cispo" else None
        g.append((loss(cfg, up, frozen) - loss(cfg, dn, frozen)) / (2 * h))
    return g


def case(**kw):
    cfg = {"loss": "pg", "agg": "bnpo", "eps_low": 0.2, "eps_high": 0.2, "dual_clip": None, "beta": 0.0,
           "max_len": 8, "is_mode": "none", "is_cap": 1.5, "max_ratio": 5.0, "min_ratio": None}
    cfg.update(kw)
    return {"config": cfg, "loss": loss(cfg, LOGP), "grad": grad(cfg)}


LOSS_CASES = []
for agg in ["grpo", "bnpo", "dr_grpo", "seq_mean_token_sum"]:
    # GSPO's own clip range (rows 0, 1 clipped or not by sign; row 2's ratio is inside) and a wide one.
    LOSS_CASES.append(case(loss="gspo", agg=agg, eps_low=3e-4, eps_high=4e-4))
    LOSS_CASES.append(case(loss="gspo", agg=agg, eps_low=0.2, eps_high=0.28, beta=0.04))
    LOSS_CASES.append(case(loss="cispo", agg=agg))
LOSS_CASES.append(case(loss="cispo", max_ratio=1.2, min_ratio=0.9, beta=0.04))
for mode in ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]:
    LOSS_CASES.append(case(loss="pg", is_mode=mode, beta=0.04, dual_clip=3.0))
    LOSS_CASES.append(case(loss="gspo", agg="grpo", is_mode=mode, eps_low=0.2, eps_high=0.28))
    LOSS_CASES.append(case(loss="cispo", is_mode=mode, max_ratio=1.2))

print(json.dumps({
    "batch": {"rows": ROWS, "cols": COLS, "logp": LOGP, "old": OLD, "ref": REF, "sampler": SAMPLER,
              "mask": MASK, "adv": ADV, "norm_rows": NORM_ROWS, "norm_tokens": NORM_TOKENS},
    "advantages": ADV_CASES,
    "losses": LOSS_CASES,
    "is_weights": {m: is_weights(m, 1.5) for m in ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]},
}))
