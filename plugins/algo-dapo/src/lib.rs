//! DAPO with verl semantics: group-normalised advantages, decoupled clip range (clip-higher),
//! dual clip for negative advantages, token-mean loss, no KL term, and dynamic sampling
//! (`keep_group` drops groups whose rewards are all equal; the host loop refills the batch).

use anyhow::{ensure, Result};
use recode_core::algo::{self, Clip, PgLossConfig, RolloutIs, RolloutIsMode, ScaleRewards};
use recode_core::api::{Algorithm, LossBatch, LossOutput};
use recode_core::registry::{decode_options, Registry};
use recode_core::spec::Options;
use serde::{Deserialize, Serialize};

/// verl's `loss_agg_mode` (defined with the shared maths).
pub use recode_core::algo::LossAggMode;

/// Options of `[algorithm] name = "dapo"`; every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// ε_low: the ratio is clipped to [1 − clip_ratio_low, 1 + clip_ratio_high].
    pub clip_ratio_low: f64,
    /// ε_high (clip-higher; larger than ε_low to keep exploration).
    pub clip_ratio_high: f64,
    /// Dual-clip bound c (> 1): for A < 0 the loss is capped at −c·A.
    pub clip_ratio_c: f64,
    /// "token-mean", "seq-mean-token-mean", "seq-mean-token-sum" or "seq-mean-token-sum-norm".
    pub loss_agg_mode: LossAggMode,
    /// Divide centred rewards by the group std (verl `norm_adv_by_std_in_grpo`).
    pub norm_adv_by_std: bool,
    /// Added to the group std before dividing (verl: 1e-6).
    pub adv_epsilon: f64,
    /// Drop groups whose rewards are all equal (DAPO dynamic sampling).
    pub dynamic_sampling: bool,
    /// Normaliser of "seq-mean-token-sum-norm" (use `generation.max_new_tokens`).
    pub max_completion_length: usize,
    /// Rollout/train importance-sampling correction: "none", "token_truncate", "token_mask",
    /// "sequence_truncate" or "sequence_mask" (TRL's `vllm_importance_sampling_mode`).
    pub rollout_is: RolloutIsMode,
    /// The cap C of the correction's ratio (truncated to C, or masked above C).
    pub rollout_is_cap: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            clip_ratio_low: 0.2,
            clip_ratio_high: 0.28,
            clip_ratio_c: 10.0,
            loss_agg_mode: LossAggMode::TokenMean,
            norm_adv_by_std: true,
            adv_epsilon: 1e-6,
            dynamic_sampling: true,
            max_completion_length: 1024,
            rollout_is: RolloutIsMode::None,
            rollout_is_cap: 2.0,
        }
    }
}

pub struct Dapo {
    pub config: Config,
    loss_cfg: PgLossConfig,
}

impl Dapo {
    pub fn new(config: Config) -> Result<Self> {
        let c = &config;
        ensure!(c.clip_ratio_c > 1.0, "options of plugin `dapo`: clip_ratio_c must be > 1 (verl), got {}", c.clip_ratio_c);
        ensure!(c.adv_epsilon >= 0.0, "options of plugin `dapo`: adv_epsilon must be >= 0");
        let aggregation = c.loss_agg_mode.aggregation(c.max_completion_length);
        let clip = Clip { eps_low: c.clip_ratio_low, eps_high: c.clip_ratio_high, dual_clip: Some(c.clip_ratio_c) };
        let rollout_is = RolloutIs::new("dapo", c.rollout_is, c.rollout_is_cap)?;
        let names = ["clip_ratio_low", "clip_ratio_high"];
        let loss_cfg = PgLossConfig::checked("dapo", names, clip, 0.0, c.max_completion_length, aggregation, rollout_is)?;
        Ok(Self { loss_cfg, config })
    }
}

impl Algorithm for Dapo {
    fn name(&self) -> &str {
        "dapo"
    }
    fn advantages(&self, rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
        let scale = if self.config.norm_adv_by_std { ScaleRewards::Group } else { ScaleRewards::None };
        algo::grpo_advantages(rewards, group_size, scale, self.config.adv_epsilon)
    }
    fn keep_group(&self, group_rewards: &[f64]) -> bool {
        !self.config.dynamic_sampling || algo::group_has_variance(group_rewards)
    }
    fn needs_reference(&self) -> bool {
        false
    }
    fn loss(&self, batch: &LossBatch<'_>) -> Result<LossOutput> {
        algo::policy_gradient_loss(batch, &self.loss_cfg)
    }
}

pub fn create(options: &Options) -> Result<Box<dyn Algorithm>> {
    Ok(Box::new(Dapo::new(decode_options("dapo", options)?)?))
}

pub fn register(reg: &mut Registry) {
    reg.add_algorithm("dapo", "DAPO (verl semantics): clip-higher, dual clip, token-mean, dynamic sampling, no KL", create);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Options {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults() {
        let a = Dapo::new(Config::default()).unwrap();
        assert!(!a.needs_reference());
        assert_eq!(a.loss_cfg.clip, Clip { eps_low: 0.2, eps_high: 0.28, dual_clip: Some(10.0) });
        assert_eq!(a.loss_cfg.aggregation, algo::Aggregation::TokenMean);
        let a = create(&opts("loss_agg_mode = \"seq-mean-token-sum-norm\"\nmax_completion_length = 16")).unwrap();
        assert_eq!(a.name(), "dapo");
    }

    #[test]
    fn bad_options_are_named_errors() {
        let e = create(&opts("clip_ratio_c = 0.5")).err().unwrap().to_string();
        assert!(e.contains("clip_ratio_c"), "{e}");
        let e = create(&opts("loss_agg_mode = \"token_mean\"")).err().unwrap().to_string();
        assert!(e.contains("dapo") && e.contains("token_mean"), "{e}");
        let e = create(&opts("beta = 0.1")).err().unwrap().to_string();
        assert!(e.contains("beta"), "{e}");
    }

    #[test]
    fn dynamic_sampling_drops_constant_groups() {
        let a = create(&Options::new()).unwrap();
        assert!(a.keep_group(&[0.0, 1.0, 1.0]));
        assert!(!a.keep_group(&[1.0, 1.0, 1.0]));
        let off = create(&opts("dynamic_sampling = false")).unwrap();
        assert!(off.keep_group(&[1.0, 1.0]));
    }

    #[test]
    fn advantages_use_verl_epsilon() {
        // [1, 0]: mean 0.5, unbiased std sqrt(0.5); A = ±0.5 / (sqrt(0.5) + 1e-6).
        let a = create(&Options::new()).unwrap().advantages(&[1.0, 0.0], 2).unwrap();
        let want = 0.5 / (0.5f64.sqrt() + 1e-6);
        assert!((a[0] - want).abs() < 1e-12 && (a[1] + want).abs() < 1e-12);
    }

    #[test]
    fn dual_clip_caps_negative_advantage_loss() {
        // ρ = e^3 ≈ 20 > c = 10, A = −1: loss capped at c·1 = 10, gradient 0; token mean over 1 token.
        let b = LossBatch {
            rows: 1, cols: 1, logp: &[0.0], old_logp: &[-3.0], ref_logp: None, sampler_logp: None,
            advantages: &[-1.0], mask: &[1.0], norm_rows: 1, norm_tokens: 1.0,
        };
        let out = create(&Options::new()).unwrap().loss(&b).unwrap();
        assert_eq!(out.loss, 10.0);
        assert_eq!(out.grad, vec![0.0]);
        assert!(out.metrics.contains(&("dual_clip_frac".to_string(), 1.0)));
    }
}
