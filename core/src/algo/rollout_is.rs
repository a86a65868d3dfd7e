//! Rollout/train importance-sampling correction (TRL's `vllm_importance_sampling_*`, verl's
//! rollout correction): the sampler's per-token log-probs (`Generation::logprobs`) can differ from
//! the trainer's for the same policy (another kernel, precision or engine). Each token's policy
//! term is multiplied by a weight from ρ = π_train / π_sampler, computed with the trainer's
//! log-probs at rollout time (`old_logp`), so the weight is a constant of the update.

use crate::api::LossBatch;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

/// TRL's mode names: level (token or sequence) × what happens above the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RolloutIsMode {
    /// No correction.
    #[default]
    None,
    /// Per-token ρₜ = exp(old − sampler), weight min(ρₜ, cap).
    TokenTruncate,
    /// Per-token ρₜ, weight ρₜ, or 0 (token dropped) where ρₜ > cap.
    TokenMask,
    /// Per-sequence ρ = exp(Σₜ old − sampler) on every token of the row, weight min(ρ, cap).
    SequenceTruncate,
    /// Per-sequence ρ, or 0 (sequence dropped) where ρ > cap.
    SequenceMask,
}

/// The correction of one algorithm: options `rollout_is` and `rollout_is_cap`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RolloutIs {
    pub mode: RolloutIsMode,
    pub cap: f64,
}

impl Default for RolloutIs {
    fn default() -> Self {
        Self {
            mode: RolloutIsMode::None,
            cap: 2.0,
        }
    }
}

impl RolloutIsMode {
    /// The option value naming this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutIsMode::None => "none",
            RolloutIsMode::TokenTruncate => "token_truncate",
            RolloutIsMode::TokenMask => "token_mask",
            RolloutIsMode::SequenceTruncate => "sequence_truncate",
            RolloutIsMode::SequenceMask => "sequence_mask",
        }
    }
}

impl RolloutIs {
    /// Checked construction; `plugin` names the algorithm in the error.
    pub fn new(plugin: &str, mode: RolloutIsMode, cap: f64) -> Result<Self> {
        ensure!(
            cap.is_finite() && cap > 0.0,
            "options of plugin `{plugin}`: rollout_is_cap must be > 0, got {cap}"
        );
        Ok(Self { mode, cap })
    }
}

/// Weights per token (row-major like the batch; 0 at masked tokens) and what to log.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutIsWeights {
    pub weights: Vec<f64>,
    /// Mean weight over unmasked tokens (after truncation or masking).
    pub ratio_mean: f64,
    /// Fraction of unmasked tokens whose ratio exceeded the cap (truncated or masked).
    pub capped_frac: f64,
    /// Mean |old − sampler| over unmasked tokens.
    pub logp_diff_mean: f64,
}

impl RolloutIsWeights {
    /// TRL's names where TRL has one (token-weighted means here, also at sequence level).
    pub fn metrics(&self) -> Vec<(String, f64)> {
        vec![
            ("sampling/importance_sampling_ratio/mean".into(), self.ratio_mean),
            (
                "sampling/importance_sampling_ratio/capped_frac".into(),
                self.capped_frac,
            ),
            ("sampling/sampling_logp_difference/mean".into(), self.logp_diff_mean),
        ]
    }
}

/// The correction's weights for one micro-batch, or `None` when it is off.
pub fn rollout_is_weights(b: &LossBatch<'_>, is: &RolloutIs) -> Result<Option<RolloutIsWeights>> {
    if is.mode == RolloutIsMode::None {
        return Ok(None);
    }
    let Some(sampler) = b.sampler_logp else {
        bail!(
            "loss batch: rollout_is = \"{}\" needs the sampler's log-probs (`sampler_logp`), which are missing",
            is.mode.as_str()
        );
    };
    let n = b.rows * b.cols;
    ensure!(
        sampler.len() == n,
        "loss batch: `sampler_logp` has {} values, expected {n}",
        sampler.len()
    );
    let diff = |i: usize| b.old_logp[i] as f64 - sampler[i] as f64;
    let sequence = matches!(is.mode, RolloutIsMode::SequenceTruncate | RolloutIsMode::SequenceMask);
    let truncate = matches!(is.mode, RolloutIsMode::TokenTruncate | RolloutIsMode::SequenceTruncate);
    let mut weights = vec![0.0; n];
    let (mut tokens, mut sum, mut capped, mut abs_diff) = (0.0, 0.0, 0.0, 0.0);
    for r in 0..b.rows {
        let row = r * b.cols..(r + 1) * b.cols;
        let seq_log_ratio: f64 = row.clone().filter(|&i| b.mask[i] != 0.0).map(diff).sum();
        for i in row {
            if b.mask[i] == 0.0 {
                continue;
            }
            let rho = if sequence { seq_log_ratio.exp() } else { diff(i).exp() };
            ensure!(
                !rho.is_nan(),
                "rollout correction: NaN ratio at token {i} (old_logp {}, sampler_logp {})",
                b.old_logp[i],
                sampler[i]
            );
            let over = rho > is.cap;
            let w = match (over, truncate) {
                (false, _) => rho,
                (true, true) => is.cap,
                (true, false) => 0.0,
            };
            weights[i] = w;
            tokens += 1.0;
            sum += w;
            capped += over as u8 as f64;
            abs_diff += diff(i).abs();
        }
    }
    let per = |x: f64| if tokens > 0.0 { x / tokens } else { 0.0 };
    Ok(Some(RolloutIsWeights {
        weights,
        ratio_mean: per(sum),
        capped_frac: per(capped),
        logp_diff_mean: per(abs_diff),
    }))
}
