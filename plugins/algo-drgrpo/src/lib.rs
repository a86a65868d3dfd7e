//! Dr. GRPO ("GRPO done right", Liu et al. 2025): centred rewards without std division and a
//! token-sum loss normalised by a constant, removing GRPO's length and difficulty biases.

use anyhow::Result;
use recode_core::algo::{self, Aggregation, Clip, PgLossConfig, RolloutIs, RolloutIsMode};
use recode_core::api::{Algorithm, LossBatch, LossOutput};
use recode_core::registry::{decode_options, Registry};
use recode_core::spec::Options;
use serde::{Deserialize, Serialize};

/// Options of `[algorithm] name = "dr_grpo"`; every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// KL coefficient β of the k3 penalty (Dr. GRPO uses none).
    pub beta: f64,
    /// Lower clip range: the ratio is clipped to [1 − epsilon, 1 + epsilon_high].
    pub epsilon: f64,
    /// Upper clip range; unset means `epsilon`.
    pub epsilon_high: Option<f64>,
    /// The constant normaliser: loss = Σ tokens / (sequences × max_completion_length).
    /// Use `generation.max_new_tokens`.
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
            beta: 0.0,
            epsilon: 0.2,
            epsilon_high: None,
            max_completion_length: 1024,
            rollout_is: RolloutIsMode::None,
            rollout_is_cap: 2.0,
        }
    }
}

pub struct DrGrpo {
    pub config: Config,
    loss_cfg: PgLossConfig,
}

impl DrGrpo {
    pub fn new(config: Config) -> Result<Self> {
        let c = &config;
        let eps_high = c.epsilon_high.unwrap_or(c.epsilon);
        let clip = Clip { eps_low: c.epsilon, eps_high, dual_clip: None };
        let aggregation = Aggregation::SeqSumConstant { max_len: c.max_completion_length };
        let rollout_is = RolloutIs::new("dr_grpo", c.rollout_is, c.rollout_is_cap)?;
        let names = ["epsilon", "epsilon_high"];
        let loss_cfg = PgLossConfig::checked("dr_grpo", names, clip, c.beta, c.max_completion_length, aggregation, rollout_is)?;
        Ok(Self { loss_cfg, config })
    }
}

impl Algorithm for DrGrpo {
    fn name(&self) -> &str {
        "dr_grpo"
    }
    fn advantages(&self, rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
        algo::dr_grpo_advantages(rewards, group_size)
    }
    fn needs_reference(&self) -> bool {
        self.config.beta > 0.0
    }
    fn loss(&self, batch: &LossBatch<'_>) -> Result<LossOutput> {
        algo::policy_gradient_loss(batch, &self.loss_cfg)
    }
}

pub fn create(options: &Options) -> Result<Box<dyn Algorithm>> {
    Ok(Box::new(DrGrpo::new(decode_options("dr_grpo", options)?)?))
}

pub fn register(reg: &mut Registry) {
    reg.add_algorithm("dr_grpo", "Dr. GRPO: no std division, token sum over a constant length", create);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Options {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults_and_errors() {
        let a = create(&Options::new()).unwrap();
        assert!(!a.needs_reference());
        assert!(create(&opts("beta = 0.04")).unwrap().needs_reference());
        let e = create(&opts("scale_rewards = \"group\"")).err().unwrap().to_string();
        assert!(e.contains("dr_grpo") && e.contains("scale_rewards"), "{e}");
        let e = create(&opts("max_completion_length = 0")).err().unwrap().to_string();
        assert!(e.contains("max_completion_length"), "{e}");
    }

    #[test]
    fn advantages_are_centred_only() {
        let a = create(&Options::new()).unwrap().advantages(&[1.0, 0.0, 0.0, 0.0], 4).unwrap();
        assert_eq!(a, vec![0.75, -0.25, -0.25, -0.25]);
    }

    #[test]
    fn loss_is_token_sum_over_constant() {
        // ρ = 1: per-token loss −A. Row 0: 2 tokens of A = 1; row 1: 1 token of A = −0.5.
        // Σ = −2 + 0.5 = −1.5; / (2 rows × 4) = −0.1875; grads −A/8.
        let lp = [-1.0f32; 6];
        let b = LossBatch {
            rows: 2, cols: 3, logp: &lp, old_logp: &lp, ref_logp: None, sampler_logp: None,
            advantages: &[1.0, -0.5], mask: &[1., 1., 0., 1., 0., 0.], norm_rows: 2, norm_tokens: 3.0,
        };
        let out = create(&opts("max_completion_length = 4")).unwrap().loss(&b).unwrap();
        assert!((out.loss + 0.1875).abs() < 1e-12, "{}", out.loss);
        assert_eq!(out.grad, vec![-0.125, -0.125, 0.0, 0.0625, 0.0, 0.0]);
    }
}
