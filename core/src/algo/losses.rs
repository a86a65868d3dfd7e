//! Policy losses other than the per-token clipped surrogate: GSPO (sequence-level ratio) and CISPO
//! (clipped, stop-gradient importance weight). Same contract as `policy_gradient_loss`: the
//! aggregated loss of one micro-batch and d(loss)/d(logp) per token.

use super::{kl_k3, rollout_is_weights, token_weights, validate_batch, Aggregation, PgLossConfig, RolloutIs};
use crate::api::{LossBatch, LossOutput};
use anyhow::Result;

/// verl clamps GSPO's log sequence ratio at 10 for numerical stability (no gradient above).
pub const GSPO_MAX_LOG_RATIO: f64 = 10.0;
/// verl clamps CISPO's log ratio to [−20, 20].
const CISPO_MAX_LOG_RATIO: f64 = 20.0;

/// Running token counts for the metrics.
#[derive(Default)]
struct Counts {
    tokens: f64,
    low: f64,
    high: f64,
    ratio: f64,
    kl: f64,
}

impl Counts {
    fn per(&self, x: f64) -> f64 {
        if self.tokens > 0.0 {
            x / self.tokens
        } else {
            0.0
        }
    }
}

/// GSPO (Zheng et al. 2025): one ratio per sequence, length-normalised,
/// sᵢ = exp(mean over the row's tokens of (logp − old_logp)), clipped to [1 − ε_low, 1 + ε_high]
/// in the PPO min: ℓᵢ = −min(sᵢA, clip(sᵢ)A), the same value on every token of the row, then
/// aggregated like the token losses (`seq-mean-token-mean` is the paper's 1/G Σᵢ ℓᵢ). The gradient
/// is the exact derivative: d(loss)/d(logpₜ) = (Σ_row weights) · dℓ/ds · s / |yᵢ|, which for
/// uniform weights within a row equals GSPO-token's sg[sᵢ]·πₜ/sg[πₜ] form (verl, TRL).
/// `cfg.clip.dual_clip` is ignored. Metrics as `policy_gradient_loss` (token-weighted).
pub fn gspo_loss(b: &LossBatch<'_>, cfg: &PgLossConfig) -> Result<LossOutput> {
    let use_kl = cfg.beta != 0.0;
    validate_batch(b, use_kl)?;
    let is = rollout_is_weights(b, &cfg.rollout_is)?;
    let is_w = |i: usize| is.as_ref().map_or(1.0, |x| x.weights[i]);
    let w = token_weights(cfg.aggregation, b.mask, b.cols, b.norm_rows, b.norm_tokens);
    let mut out = LossOutput {
        loss: 0.0,
        grad: vec![0.0; b.logp.len()],
        metrics: vec![],
    };
    let mut c = Counts::default();
    for r in 0..b.rows {
        let row: Vec<usize> = (r * b.cols..(r + 1) * b.cols).filter(|&i| b.mask[i] != 0.0).collect();
        let m_sum: f64 = row.iter().map(|&i| b.mask[i] as f64).sum();
        if row.is_empty() {
            continue;
        }
        let log_s = row
            .iter()
            .map(|&i| b.mask[i] as f64 * (b.logp[i] as f64 - b.old_logp[i] as f64))
            .sum::<f64>()
            / m_sum;
        let s = log_s.min(GSPO_MAX_LOG_RATIO).exp();
        let adv = b.advantages[r] as f64;
        let (unclipped, clipped_loss) = (
            -s * adv,
            -s.clamp(1.0 - cfg.clip.eps_low, 1.0 + cfg.clip.eps_high) * adv,
        );
        let clipped = clipped_loss > unclipped;
        let (l_seq, mut dl_ds) = if clipped {
            (clipped_loss, 0.0)
        } else {
            (unclipped, -adv)
        };
        if log_s > GSPO_MAX_LOG_RATIO {
            dl_ds = 0.0;
        }
        let row_w: f64 = row.iter().map(|&i| w[i] * is_w(i)).sum();
        for &i in &row {
            let lp = b.logp[i] as f64;
            let mut l = is_w(i) * l_seq;
            let mut g = row_w * dl_ds * s * b.mask[i] as f64 / m_sum;
            if use_kl {
                let (kl, dkl) = kl_k3(lp, b.ref_logp.unwrap()[i] as f64);
                l += cfg.beta * kl;
                g += w[i] * cfg.beta * dkl;
                c.kl += kl;
            }
            if !(l.is_finite() && g.is_finite()) {
                return Ok(LossOutput::non_finite(b.logp.len()));
            }
            out.loss += w[i] * l;
            out.grad[i] = g as f32;
            c.tokens += 1.0;
            c.ratio += s;
            if clipped {
                *(if adv < 0.0 { &mut c.low } else { &mut c.high }) += 1.0;
            }
        }
    }
    out.metrics.push(("clip_frac".into(), c.per(c.low + c.high)));
    out.metrics.push(("clip_ratio/low_mean".into(), c.per(c.low)));
    out.metrics.push(("clip_ratio/high_mean".into(), c.per(c.high)));
    out.metrics
        .push(("clip_ratio/region_mean".into(), c.per(c.low + c.high)));
    out.metrics.push(("ratio_mean".into(), c.per(c.ratio)));
    if use_kl {
        out.metrics.push(("kl".into(), c.per(c.kl)));
    }
    if let Some(is) = is {
        out.metrics.extend(is.metrics());
    }
    Ok(out)
}

/// What CISPO needs besides the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CispoConfig {
    /// Upper bound of the importance weight (TRL's `epsilon_high` under `loss_type = "cispo"`,
    /// ScaleRL's ε_max): w = min(ρ, max_ratio).
    pub max_ratio: f64,
    /// Optional lower bound (MiniMax-M1's 1 − ε_low; the paper and TRL set none).
    pub min_ratio: Option<f64>,
    pub beta: f64,
    pub aggregation: Aggregation,
    pub rollout_is: RolloutIs,
}

/// CISPO (MiniMax-M1, 2025): ℓₜ = −sg(w)·A·logpₜ with w = clip(ρₜ) and ρₜ = exp(logp − old_logp),
/// so every token keeps a gradient −w·A (PPO's clip zeroes it). The loss value depends on logp
/// itself; its gradient is with w held fixed (the stop-gradient), not the derivative of the value.
/// Metrics: `clip_frac` (w ≠ ρ), TRL's `cispo_clip_ratio` (ρ > max_ratio and A > 0),
/// `clip_ratio/high_mean` (ρ > max_ratio), `clip_ratio/low_mean` (ρ < min_ratio), `ratio_mean`, `kl`.
pub fn cispo_loss(b: &LossBatch<'_>, cfg: &CispoConfig) -> Result<LossOutput> {
    let use_kl = cfg.beta != 0.0;
    validate_batch(b, use_kl)?;
    let is = rollout_is_weights(b, &cfg.rollout_is)?;
    let w = token_weights(cfg.aggregation, b.mask, b.cols, b.norm_rows, b.norm_tokens);
    let mut out = LossOutput {
        loss: 0.0,
        grad: vec![0.0; b.logp.len()],
        metrics: vec![],
    };
    let mut c = Counts::default();
    let mut trl_clip = 0.0;
    for i in 0..b.logp.len() {
        if b.mask[i] == 0.0 {
            continue;
        }
        let (lp, old) = (b.logp[i] as f64, b.old_logp[i] as f64);
        let adv = b.advantages[i / b.cols] as f64;
        let rho = (lp - old).clamp(-CISPO_MAX_LOG_RATIO, CISPO_MAX_LOG_RATIO).exp();
        let weight = cfg.min_ratio.map_or(rho, |lo| rho.max(lo)).min(cfg.max_ratio);
        let is_w = is.as_ref().map_or(1.0, |x| x.weights[i]);
        let mut l = -is_w * weight * adv * lp;
        let mut g = -is_w * weight * adv;
        if use_kl {
            let (kl, dkl) = kl_k3(lp, b.ref_logp.unwrap()[i] as f64);
            l += cfg.beta * kl;
            g += cfg.beta * dkl;
            c.kl += kl;
        }
        if !(l.is_finite() && g.is_finite()) {
            return Ok(LossOutput::non_finite(b.logp.len()));
        }
        out.loss += w[i] * l;
        out.grad[i] = (w[i] * g) as f32;
        c.tokens += 1.0;
        c.ratio += rho;
        c.high += (rho > cfg.max_ratio) as u8 as f64;
        c.low += cfg.min_ratio.is_some_and(|lo| rho < lo) as u8 as f64;
        trl_clip += (rho > cfg.max_ratio && adv > 0.0) as u8 as f64;
    }
    out.metrics.push(("clip_frac".into(), c.per(c.low + c.high)));
    out.metrics.push(("cispo_clip_ratio".into(), c.per(trl_clip)));
    out.metrics.push(("clip_ratio/low_mean".into(), c.per(c.low)));
    out.metrics.push(("clip_ratio/high_mean".into(), c.per(c.high)));
    out.metrics.push(("ratio_mean".into(), c.per(c.ratio)));
    if use_kl {
        out.metrics.push(("kl".into(), c.per(c.kl)));
    }
    if let Some(is) = is {
        out.metrics.extend(is.metrics());
    }
    Ok(out)
}
