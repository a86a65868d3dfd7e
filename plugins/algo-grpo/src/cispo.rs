//! CISPO (MiniMax-M1, 2025): GRPO's advantages with a REINFORCE-style loss weighted by the clipped,
//! stop-gradient importance ratio, −sg(min(ρ, ε_max))·A·logp, so no token loses its gradient to
//! clipping. TRL: `loss_type = "cispo"` (there `epsilon_high` is the cap ε_max); verl:
//! `policy_loss = "cispo"`.

use crate::LossType;
use anyhow::{ensure, Result};
use recode_core::algo::{self, CispoConfig, RolloutIs, RolloutIsMode, ScaleRewards};
use recode_core::api::{Algorithm, LossBatch, LossOutput};
use recode_core::registry::{decode_options, Registry};
use recode_core::spec::Options;
use serde::{Deserialize, Serialize};

/// Options of `[algorithm] name = "cispo"`; every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// KL coefficient β of the k3 penalty; 0 removes the reference pass.
    pub beta: f64,
    /// Upper bound of the importance weight: w = min(ρ, epsilon_max) (TRL's `epsilon_high` under
    /// `loss_type = "cispo"`, whose documentation recommends 5.0; ScaleRL's ε_max).
    pub epsilon_max: f64,
    /// Optional lower bound: w ≥ 1 − epsilon_low (MiniMax-M1's general form; unset, as in the
    /// paper and TRL, means no lower bound).
    pub epsilon_low: Option<f64>,
    /// "bnpo" (token mean over the batch: TRL's CISPO normaliser), "grpo" or "dr_grpo".
    pub loss_type: LossType,
    /// "group", "batch" or "none": which std divides the centred rewards.
    pub scale_rewards: ScaleRewards,
    /// Normaliser of `loss_type = "dr_grpo"` (use `generation.max_new_tokens`).
    pub max_completion_length: usize,
    /// Rollout/train importance-sampling correction: "none", "token_truncate", "token_mask",
    /// "sequence_truncate" or "sequence_mask".
    pub rollout_is: RolloutIsMode,
    /// The cap C of the correction's ratio.
    pub rollout_is_cap: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            beta: 0.0,
            epsilon_max: 5.0,
            epsilon_low: None,
            loss_type: LossType::Bnpo,
            scale_rewards: ScaleRewards::Group,
            max_completion_length: 1024,
            rollout_is: RolloutIsMode::None,
            rollout_is_cap: 2.0,
        }
    }
}

pub struct Cispo {
    pub config: Config,
    loss_cfg: CispoConfig,
}

impl Cispo {
    pub fn new(config: Config) -> Result<Self> {
        let c = &config;
        crate::check_common("cispo", c.beta, c.max_completion_length)?;
        ensure!(c.epsilon_max > 0.0 && c.epsilon_max.is_finite(), "options of plugin `cispo`: epsilon_max must be > 0, got {}", c.epsilon_max);
        if let Some(lo) = c.epsilon_low {
            ensure!((0.0..=1.0).contains(&lo), "options of plugin `cispo`: epsilon_low must be in [0, 1], got {lo}");
            ensure!(1.0 - lo <= c.epsilon_max, "options of plugin `cispo`: 1 − epsilon_low ({}) exceeds epsilon_max ({})", 1.0 - lo, c.epsilon_max);
        }
        let aggregation = c.loss_type.aggregation(c.max_completion_length);
        let rollout_is = RolloutIs::new("cispo", c.rollout_is, c.rollout_is_cap)?;
        let loss_cfg = CispoConfig {
            max_ratio: c.epsilon_max,
            min_ratio: c.epsilon_low.map(|lo| 1.0 - lo),
            beta: c.beta,
            aggregation,
            rollout_is,
        };
        Ok(Self { loss_cfg, config })
    }
}

impl Algorithm for Cispo {
    fn name(&self) -> &str {
        "cispo"
    }
    fn advantages(&self, rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
        algo::grpo_advantages(rewards, group_size, self.config.scale_rewards, algo::GRPO_STD_EPS)
    }
    fn needs_reference(&self) -> bool {
        self.config.beta > 0.0
    }
    fn loss(&self, batch: &LossBatch<'_>) -> Result<LossOutput> {
        algo::cispo_loss(batch, &self.loss_cfg)
    }
}

pub fn create(options: &Options) -> Result<Box<dyn Algorithm>> {
    Ok(Box::new(Cispo::new(decode_options("cispo", options)?)?))
}

pub fn register(reg: &mut Registry) {
    reg.add_algorithm("cispo", "CISPO: GRPO advantages, -sg(min(ratio, eps_max))*A*logp, token mean", create);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Options {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults_and_errors() {
        let a = Cispo::new(Config::default()).unwrap();
        assert!(!a.needs_reference());
        assert_eq!((a.loss_cfg.max_ratio, a.loss_cfg.min_ratio), (5.0, None));
        assert_eq!(a.loss_cfg.aggregation, recode_core::algo::Aggregation::TokenMean);
        let e = create(&opts("epsilon_high = 5.0")).err().unwrap().to_string();
        assert!(e.contains("cispo") && e.contains("epsilon_high"), "{e}");
        let e = create(&opts("epsilon_max = 0.5\nepsilon_low = 0.2")).err().unwrap().to_string();
        assert!(e.contains("epsilon_low"), "{e}");
    }

    #[test]
    fn capped_weight_keeps_the_gradient() {
        // ρ = e^2 ≈ 7.39 > 5: w = 5; PPO would zero this token (A > 0), CISPO gives −5·A / tokens.
        let b = LossBatch {
            rows: 1, cols: 2, logp: &[-1.0, -0.5], old_logp: &[-3.0, -0.5], ref_logp: None, sampler_logp: None,
            advantages: &[0.5], mask: &[1.0, 1.0], norm_rows: 1, norm_tokens: 2.0,
        };
        let out = create(&Options::new()).unwrap().loss(&b).unwrap();
        assert_eq!(out.grad, vec![-1.25, -0.25]);
        // Loss value −w·A·logp, token mean: (−5·0.5·−1 − 1·0.5·−0.5) / 2 = 1.375.
        assert!((out.loss - 1.375).abs() < 1e-12, "{}", out.loss);
        assert!(out.metrics.contains(&("cispo_clip_ratio".to_string(), 0.5)));
    }
}
