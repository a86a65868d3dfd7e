//! GRPO with TRL `GRPOTrainer` semantics: group-normalised advantages, clipped surrogate,
//! k3 KL penalty against the reference policy, `loss_type` aggregation.

use anyhow::{ensure, Result};
use recode_core::algo::{self, Aggregation, Clip, PgLossConfig, RolloutIs, RolloutIsMode, ScaleRewards};
use recode_core::api::{Algorithm, LossBatch, LossOutput};
use recode_core::registry::{decode_options, Registry};
use recode_core::spec::Options;
use serde::{Deserialize, Serialize};

pub mod cispo;
pub mod gspo;
pub mod verl_estimators;

/// How per-token losses are aggregated (TRL's `loss_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Mean over sequences of each sequence's token mean (original GRPO; length-biased).
    Grpo,
    /// Token mean over the whole mini-batch.
    Bnpo,
    /// Token sum / (sequences × `max_completion_length`).
    DrGrpo,
}

/// Options of `[algorithm] name = "grpo"`; every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// KL coefficient β of the k3 penalty; 0 removes the term and the reference forward pass.
    pub beta: f64,
    /// Lower clip range ε: the ratio is clipped to [1 − epsilon, 1 + epsilon_high].
    pub epsilon: f64,
    /// Upper clip range (DAPO's clip-higher); unset means `epsilon`.
    pub epsilon_high: Option<f64>,
    /// "bnpo" (ReCode GRPO script), "grpo" or "dr_grpo".
    pub loss_type: LossType,
    /// "group", "batch" or "none": which std divides the centred rewards.
    pub scale_rewards: ScaleRewards,
    /// Normaliser of `loss_type = "dr_grpo"` (use `generation.max_new_tokens`).
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
            beta: 0.001,
            epsilon: 0.2,
            epsilon_high: None,
            loss_type: LossType::Bnpo,
            scale_rewards: ScaleRewards::Group,
            max_completion_length: 1024,
            rollout_is: RolloutIsMode::None,
            rollout_is_cap: 2.0,
        }
    }
}

impl LossType {
    /// How this loss type sums token losses (Dr. GRPO divides by the maximal completion length).
    pub fn aggregation(self, max_completion_length: usize) -> Aggregation {
        match self {
            LossType::Grpo => Aggregation::SeqMeanTokenMean,
            LossType::Bnpo => Aggregation::TokenMean,
            LossType::DrGrpo => Aggregation::SeqSumConstant { max_len: max_completion_length },
        }
    }
}

/// The checks every GRPO-family plugin of this crate shares, with errors naming the plugin.
pub(crate) fn check_common(plugin: &str, beta: f64, max_completion_length: usize) -> Result<()> {
    ensure!(beta >= 0.0 && beta.is_finite(), "options of plugin `{plugin}`: beta must be >= 0, got {beta}");
    ensure!(max_completion_length > 0, "options of plugin `{plugin}`: max_completion_length must be > 0");
    Ok(())
}

pub struct Grpo {
    pub config: Config,
    loss_cfg: PgLossConfig,
}

impl Grpo {
    pub fn new(config: Config) -> Result<Self> {
        let c = &config;
        let eps_high = c.epsilon_high.unwrap_or(c.epsilon);
        let clip = Clip { eps_low: c.epsilon, eps_high, dual_clip: None };
        let aggregation = c.loss_type.aggregation(c.max_completion_length);
        let rollout_is = RolloutIs::new("grpo", c.rollout_is, c.rollout_is_cap)?;
        let names = ["epsilon", "epsilon_high"];
        let loss_cfg = PgLossConfig::checked("grpo", names, clip, c.beta, c.max_completion_length, aggregation, rollout_is)?;
        Ok(Self { loss_cfg, config })
    }
}

impl Algorithm for Grpo {
    fn name(&self) -> &str {
        "grpo"
    }
    fn advantages(&self, rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
        algo::grpo_advantages(rewards, group_size, self.config.scale_rewards, algo::GRPO_STD_EPS)
    }
    fn needs_reference(&self) -> bool {
        self.config.beta > 0.0
    }
    fn loss(&self, batch: &LossBatch<'_>) -> Result<LossOutput> {
        algo::policy_gradient_loss(batch, &self.loss_cfg)
    }
}

pub fn create(options: &Options) -> Result<Box<dyn Algorithm>> {
    Ok(Box::new(Grpo::new(decode_options("grpo", options)?)?))
}

pub fn register(reg: &mut Registry) {
    reg.add_algorithm("grpo", "GRPO (TRL semantics): group-normalised advantages, clipped ratio, k3 KL", create);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(toml_src: &str) -> Options {
        toml::from_str(toml_src).unwrap()
    }

    #[test]
    fn defaults_and_decoding() {
        let a = Grpo::new(decode_options("grpo", &Options::new()).unwrap()).unwrap();
        assert_eq!(a.config, Config::default());
        assert!(a.needs_reference());
        assert_eq!(a.loss_cfg.clip, Clip { eps_low: 0.2, eps_high: 0.2, dual_clip: None });
        assert_eq!(a.loss_cfg.aggregation, Aggregation::TokenMean);
        let a = Grpo::new(decode_options("grpo", &opts("beta = 0.0\nepsilon_high = 0.28\nloss_type = \"dr_grpo\"\nmax_completion_length = 64")).unwrap()).unwrap();
        assert!(!a.needs_reference());
        assert_eq!(a.loss_cfg.clip.eps_high, 0.28);
        assert_eq!(a.loss_cfg.aggregation, Aggregation::SeqSumConstant { max_len: 64 });
    }

    #[test]
    fn bad_options_are_named_errors() {
        let e = create(&opts("betta = 0.1")).err().unwrap().to_string();
        assert!(e.contains("grpo") && e.contains("betta"), "{e}");
        let e = create(&opts("loss_type = \"ppo\"")).err().unwrap().to_string();
        assert!(e.contains("ppo"), "{e}");
        let e = create(&opts("epsilon = 1.5")).err().unwrap().to_string();
        assert!(e.contains("epsilon"), "{e}");
    }

    #[test]
    fn advantages_follow_scale_rewards() {
        let r = [1.0, 0.0, 0.5, 0.25];
        let g = create(&Options::new()).unwrap().advantages(&r, 4).unwrap();
        // From tests/reference/algo_ref.py.
        assert!((g[0] - 1.3171565993073961).abs() < 1e-12);
        let n = create(&opts("scale_rewards = \"none\"")).unwrap().advantages(&r, 4).unwrap();
        assert_eq!(n, vec![0.5625, -0.4375, 0.0625, -0.1875]);
    }

    #[test]
    fn first_pass_loss_is_minus_mean_advantage() {
        // ρ = 1, logp = ref: loss = −A per token; token mean over 3 tokens of A = (1, 1, −2) → 0;
        // gradient −A/3 per token.
        let lp = [-0.5f32, -1.0, -2.0];
        let b = LossBatch {
            rows: 3, cols: 1, logp: &lp, old_logp: &lp, ref_logp: Some(&lp), sampler_logp: None,
            advantages: &[1.0, 1.0, -2.0], mask: &[1.0; 3], norm_rows: 3, norm_tokens: 3.0,
        };
        let out = create(&Options::new()).unwrap().loss(&b).unwrap();
        assert!(out.loss.abs() < 1e-12);
        let want = [-1.0f32 / 3.0, -1.0 / 3.0, 2.0 / 3.0];
        for (g, w) in out.grad.iter().zip(want) {
            assert!((g - w).abs() < 1e-7, "{g} vs {w}");
        }
    }
}
