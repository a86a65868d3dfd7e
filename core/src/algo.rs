//! Policy-gradient maths shared by the algorithm plugins, as small named functions
//! (in the spirit of verl's `core_algos.py`). Everything is plain `f64` arithmetic on slices.
//!
//! Conventions: rewards are consecutive groups of `group_size`; per-token arrays are row-major
//! `[rows, cols]`; a token counts when its mask is non-zero. Every per-token function returns the
//! value and its derivative with respect to the current log-prob, so a loss and its gradient are
//! computed together (`policy_gradient_loss`).

use crate::api::{LossBatch, LossOutput};
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

mod estimators;
mod losses;
mod rollout_is;
pub use estimators::{
    reinforce_pp_advantages, reinforce_pp_baseline_advantages, rloo_advantages, token_whiten, WHITEN_EPS,
};
pub use losses::{cispo_loss, gspo_loss, CispoConfig, GSPO_MAX_LOG_RATIO};
pub use rollout_is::{rollout_is_weights, RolloutIs, RolloutIsMode, RolloutIsWeights};

/// TRL's constant added to the reward std before dividing.
pub const GRPO_STD_EPS: f64 = 1e-4;

/// Mean of a slice (0 for an empty slice); exact for constant slices, so equal rewards
/// give exactly zero advantages (a naive sum/len leaves ~1e-16, which /1e-4 amplifies).
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else if xs.iter().all(|&x| x == xs[0]) {
        xs[0]
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// Unbiased (n − 1) standard deviation, as `torch.std`; 0 for fewer than two values
/// (torch gives NaN there; a lone sample has no spread, and its advantage is 0 anyway).
pub fn std_unbiased(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

fn check_groups(rewards: &[f64], group_size: usize) -> Result<()> {
    ensure!(group_size > 0, "group_size must be at least 1");
    ensure!(
        rewards.len().is_multiple_of(group_size),
        "{} rewards do not split into groups of {group_size}",
        rewards.len()
    );
    if let Some(i) = rewards.iter().position(|r| !r.is_finite()) {
        bail!("reward {i} is not finite ({})", rewards[i]);
    }
    Ok(())
}

/// How GRPO scales the centred rewards (TRL's `scale_rewards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScaleRewards {
    /// Divide by the group's std (original GRPO).
    #[default]
    Group,
    /// Divide by the std of the whole batch (the mean is still the group's).
    Batch,
    /// Do not divide (Dr. GRPO).
    None,
}

/// Rewards minus their group mean.
pub fn group_centred(rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
    check_groups(rewards, group_size)?;
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group_size) {
        let m = mean(g);
        out.extend(g.iter().map(|r| r - m));
    }
    Ok(out)
}

/// GRPO advantages: A = (r − mean_group) / (std + eps), std chosen by `scale`.
pub fn grpo_advantages(rewards: &[f64], group_size: usize, scale: ScaleRewards, eps: f64) -> Result<Vec<f64>> {
    let mut adv = group_centred(rewards, group_size)?;
    match scale {
        ScaleRewards::None => {}
        ScaleRewards::Batch => {
            let s = std_unbiased(rewards);
            adv.iter_mut().for_each(|a| *a /= s + eps);
        }
        ScaleRewards::Group => {
            for (a, g) in adv.chunks_mut(group_size).zip(rewards.chunks(group_size)) {
                let s = std_unbiased(g);
                a.iter_mut().for_each(|a| *a /= s + eps);
            }
        }
    }
    Ok(adv)
}

/// Dr. GRPO advantages: centred rewards, no std division.
pub fn dr_grpo_advantages(rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
    group_centred(rewards, group_size)
}

/// DAPO dynamic sampling: a group is useful only if its rewards differ (otherwise every
/// advantage is 0). A group of one has no spread and is dropped.
pub fn group_has_variance(group_rewards: &[f64]) -> bool {
    group_rewards.len() > 1 && std_unbiased(group_rewards) > 0.0
}

/// Importance ratio ρ = exp(logp − old_logp).
pub fn ratio(logp: f64, old_logp: f64) -> f64 {
    (logp - old_logp).exp()
}

/// Clipping of the importance ratio. `dual_clip` is verl's `clip_ratio_c` (> 1), applied to A < 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clip {
    pub eps_low: f64,
    pub eps_high: f64,
    pub dual_clip: Option<f64>,
}

/// One token's policy loss and its derivative w.r.t. logp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLoss {
    pub loss: f64,
    pub grad: f64,
    /// The clipped branch of the PPO min is active (the token gets no gradient).
    pub clipped: bool,
    /// The dual clip (A < 0, ρ > c) is active.
    pub dual_clipped: bool,
}

/// PPO clipped surrogate: −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A), with verl's dual clip for A < 0:
/// min(max(−ρA, −clip(ρ)A), −cA). Gradient: −ρA where the unclipped branch is active, else 0.
pub fn clipped_policy_loss(logp: f64, old_logp: f64, adv: f64, clip: &Clip) -> TokenLoss {
    let rho = ratio(logp, old_logp);
    let rho_c = rho.clamp(1.0 - clip.eps_low, 1.0 + clip.eps_high);
    let unclipped = -rho * adv;
    let clipped_loss = -rho_c * adv;
    // Ties (ρ inside the range) take the unclipped branch: both are equal and differentiable.
    let clipped = clipped_loss > unclipped;
    let (mut loss, mut grad) = if clipped {
        (clipped_loss, 0.0)
    } else {
        (unclipped, -rho * adv)
    };
    let mut dual_clipped = false;
    if let Some(c) = clip.dual_clip {
        if adv < 0.0 && loss > -c * adv {
            (loss, grad, dual_clipped) = (-c * adv, 0.0, true);
        }
    }
    TokenLoss {
        loss,
        grad,
        clipped,
        dual_clipped,
    }
}

/// k3 estimator of KL(π‖π_ref) per token: exp(ref − logp) − (ref − logp) − 1, and its derivative
/// w.r.t. logp: 1 − exp(ref − logp).
pub fn kl_k3(logp: f64, ref_logp: f64) -> (f64, f64) {
    let d = ref_logp - logp;
    let e = d.exp();
    (e - d - 1.0, 1.0 - e)
}

/// How per-token losses become one scalar. All normalise by mini-batch totals so that the
/// micro-batch losses sum to the mini-batch loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregation {
    /// TRL `grpo`: mean over sequences of each sequence's token mean.
    SeqMeanTokenMean,
    /// TRL `bnpo`, verl `token-mean`: sum over tokens / unmasked tokens in the mini-batch.
    TokenMean,
    /// TRL `dr_grpo`, verl `seq-mean-token-sum-norm`: token sum / (rows × max_completion_length).
    SeqSumConstant { max_len: usize },
    /// verl `seq-mean-token-sum`: mean over sequences of each sequence's token sum.
    SeqMeanTokenSum,
}

/// The weight of each token in the aggregated loss (0 for masked tokens), so that
/// loss = Σ wᵢ·ℓᵢ and d(loss)/d(logpᵢ) = wᵢ·dℓᵢ/d(logpᵢ).
pub fn token_weights(agg: Aggregation, mask: &[f32], cols: usize, norm_rows: usize, norm_tokens: f64) -> Vec<f64> {
    let rows_n = norm_rows.max(1) as f64;
    let mut w = Vec::with_capacity(mask.len());
    for row in mask.chunks(cols.max(1)) {
        let row_scale = match agg {
            Aggregation::SeqMeanTokenMean => {
                let n: f64 = row.iter().map(|&m| m as f64).sum();
                1.0 / (n.max(1.0) * rows_n)
            }
            Aggregation::TokenMean => 1.0 / norm_tokens.max(1.0),
            Aggregation::SeqSumConstant { max_len } => 1.0 / (rows_n * max_len.max(1) as f64),
            Aggregation::SeqMeanTokenSum => 1.0 / rows_n,
        };
        w.extend(row.iter().map(|&m| if m == 0.0 { 0.0 } else { m as f64 * row_scale }));
    }
    w
}

/// Everything the shared clipped-surrogate loss needs besides the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PgLossConfig {
    pub clip: Clip,
    /// KL coefficient β (0 disables the KL term and the need for reference log-probs).
    pub beta: f64,
    pub aggregation: Aggregation,
    /// Rollout/train importance-sampling correction (off by default).
    pub rollout_is: RolloutIs,
}

impl PgLossConfig {
    /// The settings of a clipped policy-gradient plugin, checked: β ≥ 0, ε_low in [0, 1), ε_high ≥ 0,
    /// a positive maximal completion length. Errors name the plugin and its own option names
    /// (`eps_names`: what it calls ε_low and ε_high).
    pub fn checked(
        plugin: &str,
        eps_names: [&str; 2],
        clip: Clip,
        beta: f64,
        max_completion_length: usize,
        aggregation: Aggregation,
        rollout_is: RolloutIs,
    ) -> Result<Self> {
        let [low, high] = eps_names;
        ensure!(
            beta >= 0.0 && beta.is_finite(),
            "options of plugin `{plugin}`: beta must be >= 0, got {beta}"
        );
        ensure!(
            (0.0..1.0).contains(&clip.eps_low),
            "options of plugin `{plugin}`: {low} must be in [0, 1), got {}",
            clip.eps_low
        );
        ensure!(
            clip.eps_high >= 0.0,
            "options of plugin `{plugin}`: {high} must be >= 0, got {}",
            clip.eps_high
        );
        ensure!(
            max_completion_length > 0,
            "options of plugin `{plugin}`: max_completion_length must be > 0"
        );
        Ok(Self {
            clip,
            beta,
            aggregation,
            rollout_is,
        })
    }
}

/// Check a `LossBatch`'s shapes; `need_ref` requires reference log-probs.
pub fn validate_batch(b: &LossBatch<'_>, need_ref: bool) -> Result<()> {
    let n = b.rows * b.cols;
    for (name, len) in [
        ("logp", b.logp.len()),
        ("old_logp", b.old_logp.len()),
        ("mask", b.mask.len()),
    ] {
        ensure!(
            len == n,
            "loss batch: `{name}` has {len} values, expected rows×cols = {}×{} = {n}",
            b.rows,
            b.cols
        );
    }
    ensure!(
        b.advantages.len() == b.rows,
        "loss batch: {} advantages for {} rows",
        b.advantages.len(),
        b.rows
    );
    match b.ref_logp {
        Some(r) => ensure!(
            r.len() == n,
            "loss batch: `ref_logp` has {} values, expected {n}",
            r.len()
        ),
        None => ensure!(
            !need_ref,
            "loss batch: the KL term (beta > 0) needs `ref_logp`, which is missing"
        ),
    }
    if let Some(s) = b.sampler_logp {
        ensure!(
            s.len() == n,
            "loss batch: `sampler_logp` has {} values, expected {n}",
            s.len()
        );
    }
    Ok(())
}

/// Clipped policy-gradient loss (+ β·KL k3) aggregated over one micro-batch, with d(loss)/d(logp).
/// With a rollout correction, each token's policy term (not the KL) is multiplied by its weight.
/// Metrics (means over this micro-batch's unmasked tokens): `clip_frac`, `ratio_mean`, TRL's
/// `clip_ratio/low_mean` (ρ < 1 − ε_low, A < 0), `clip_ratio/high_mean` (ρ > 1 + ε_high, A > 0) and
/// `clip_ratio/region_mean`, `kl` when β > 0, `dual_clip_frac` when a dual clip is set, and the
/// correction's metrics when it is on.
pub fn policy_gradient_loss(b: &LossBatch<'_>, cfg: &PgLossConfig) -> Result<LossOutput> {
    let use_kl = cfg.beta != 0.0;
    validate_batch(b, use_kl)?;
    let is = rollout_is_weights(b, &cfg.rollout_is)?;
    let w = token_weights(cfg.aggregation, b.mask, b.cols, b.norm_rows, b.norm_tokens);
    let mut out = LossOutput {
        loss: 0.0,
        grad: vec![0.0; b.logp.len()],
        metrics: vec![],
    };
    let (mut tokens, mut low, mut high, mut dual, mut kl_sum, mut ratio_sum) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for i in 0..b.logp.len() {
        if b.mask[i] == 0.0 {
            continue; // padding may hold anything, even NaN
        }
        let (lp, old) = (b.logp[i] as f64, b.old_logp[i] as f64);
        let adv = b.advantages[i / b.cols] as f64;
        let t = clipped_policy_loss(lp, old, adv, &cfg.clip);
        let is_w = is.as_ref().map_or(1.0, |x| x.weights[i]);
        let (mut l, mut g) = (is_w * t.loss, is_w * t.grad);
        if use_kl {
            let (kl, dkl) = kl_k3(lp, b.ref_logp.unwrap()[i] as f64);
            l += cfg.beta * kl;
            g += cfg.beta * dkl;
            kl_sum += kl;
        }
        if !(l.is_finite() && g.is_finite()) {
            return Ok(LossOutput::non_finite(b.logp.len()));
        }
        out.loss += w[i] * l;
        out.grad[i] = (w[i] * g) as f32;
        tokens += 1.0;
        if t.clipped {
            if adv < 0.0 {
                low += 1.0;
            } else {
                high += 1.0;
            }
        }
        dual += t.dual_clipped as u8 as f64;
        ratio_sum += ratio(lp, old);
    }
    let per = |x: f64| if tokens > 0.0 { x / tokens } else { 0.0 };
    out.metrics.push(("clip_frac".into(), per(low + high)));
    out.metrics.push(("clip_ratio/low_mean".into(), per(low)));
    out.metrics.push(("clip_ratio/high_mean".into(), per(high)));
    out.metrics.push(("clip_ratio/region_mean".into(), per(low + high)));
    out.metrics.push(("ratio_mean".into(), per(ratio_sum)));
    if use_kl {
        out.metrics.push(("kl".into(), per(kl_sum)));
    }
    if cfg.clip.dual_clip.is_some() {
        out.metrics.push(("dual_clip_frac".into(), per(dual)));
    }
    if let Some(is) = is {
        out.metrics.extend(is.metrics());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_families;
