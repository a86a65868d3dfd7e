//! GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization"): GRPO's advantages with one
//! length-normalised importance ratio per sequence and its own, much tighter clip range. TRL:
//! `importance_sampling_level = "sequence"`; verl: `policy_loss = "gspo"`.

use crate::LossType;
use anyhow::Result;
use recode_core::algo::{self, Clip, PgLossConfig, RolloutIs, RolloutIsMode, ScaleRewards};
use recode_core::api::{Algorithm, LossBatch, LossOutput};
use recode_core::registry::{decode_options, Registry};
use recode_core::spec::Options;
use serde::{Deserialize, Serialize};

/// Options of `[algorithm] name = "gspo"`; every key is optional. Defaults are the paper's (v2,
/// §5.1) as TRL's paper index gives them: no KL, ε = 3e-4, ε_high = 4e-4, sequence-mean loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// KL coefficient β of the k3 penalty; 0 (GSPO's setting) removes the reference pass.
    pub beta: f64,
    /// Lower clip range of the sequence ratio: s is clipped to [1 − epsilon, 1 + epsilon_high].
    pub epsilon: f64,
    /// Upper clip range of the sequence ratio.
    pub epsilon_high: f64,
    /// "grpo" (mean over sequences of the token mean: the paper's 1/G Σᵢ), "bnpo" or "dr_grpo".
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
            epsilon: 3e-4,
            epsilon_high: 4e-4,
            loss_type: LossType::Grpo,
            scale_rewards: ScaleRewards::Group,
            max_completion_length: 1024,
            rollout_is: RolloutIsMode::None,
            rollout_is_cap: 2.0,
        }
    }
}

pub struct Gspo {
    pub config: Config,
    loss_cfg: PgLossConfig,
}

impl Gspo {
    pub fn new(config: Config) -> Result<Self> {
        let c = &config;
        let clip = Clip { eps_low: c.epsilon, eps_high: c.epsilon_high, dual_clip: None };
        let aggregation = c.loss_type.aggregation(c.max_completion_length);
        let rollout_is = RolloutIs::new("gspo", c.rollout_is, c.rollout_is_cap)?;
        let names = ["epsilon", "epsilon_high"];
        let loss_cfg = PgLossConfig::checked("gspo", names, clip, c.beta, c.max_completion_length, aggregation, rollout_is)?;
        Ok(Self { loss_cfg, config })
    }
}

impl Algorithm for Gspo {
    fn name(&self) -> &str {
        "gspo"
    }
    fn advantages(&self, rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
        algo::grpo_advantages(rewards, group_size, self.config.scale_rewards, algo::GRPO_STD_EPS)
    }
    fn needs_reference(&self) -> bool {
        self.config.beta > 0.0
    }
    fn loss(&self, batch: &LossBatch<'_>) -> Result<LossOutput> {
        algo::gspo_loss(batch, &self.loss_cfg)
    }
}

pub fn create(options: &Options) -> Result<Box<dyn Algorithm>> {
    Ok(Box::new(Gspo::new(decode_options("gspo", options)?)?))
}

pub fn register(reg: &mut Registry) {
    reg.add_algorithm("gspo", "GSPO: GRPO advantages, length-normalised sequence-level ratio, clip 3e-4/4e-4", create);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Options {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults_and_errors() {
        let a = Gspo::new(Config::default()).unwrap();
        assert!(!a.needs_reference());
        assert_eq!(a.loss_cfg.clip, Clip { eps_low: 3e-4, eps_high: 4e-4, dual_clip: None });
        assert_eq!(a.loss_cfg.aggregation, recode_core::algo::Aggregation::SeqMeanTokenMean);
        let e = create(&opts("clip_ratio = 0.2")).err().unwrap().to_string();
        assert!(e.contains("gspo") && e.contains("clip_ratio"), "{e}");
        let e = create(&opts("rollout_is = \"token\"")).err().unwrap().to_string();
        assert!(e.contains("token"), "{e}");
        let e = create(&opts("rollout_is_cap = 0.0")).err().unwrap().to_string();
        assert!(e.contains("rollout_is_cap"), "{e}");
    }

    #[test]
    fn sequence_ratio_is_clipped_as_a_whole() {
        // Row of 2 tokens, log ratios 0.3 and −0.1: s = exp(0.1) > 1 + 4e-4 with A > 0, so the
        // clipped branch is active: loss −(1 + 4e-4)·A, no gradient; A = 1, one row.
        let b = LossBatch {
            rows: 1, cols: 2, logp: &[-1.0, -2.0], old_logp: &[-1.3, -1.9], ref_logp: None, sampler_logp: None,
            advantages: &[1.0], mask: &[1.0, 1.0], norm_rows: 1, norm_tokens: 2.0,
        };
        let out = create(&Options::new()).unwrap().loss(&b).unwrap();
        assert!((out.loss + 1.0004).abs() < 1e-12, "{}", out.loss);
        assert_eq!(out.grad, vec![0.0, 0.0]);
        assert!(out.metrics.contains(&("clip_ratio/high_mean".to_string(), 1.0)));
    }
}
