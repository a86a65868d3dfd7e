//! RLOO, REINFORCE++ and REINFORCE++-baseline with verl semantics: verl's advantage estimators
//! (`rloo`, `reinforce_plus_plus`, `reinforce_plus_plus_baseline` in `core_algos`) for outcome
//! rewards, trained with verl's default actor loss (clipped ratio with dual clip, token mean,
//! optional KL loss). One option set for the three, named as verl's actor config names them.

use anyhow::{ensure, Result};
use recode_core::algo::{self, Clip, LossAggMode, PgLossConfig, RolloutIs, RolloutIsMode};
use recode_core::api::{Algorithm, LossBatch, LossOutput};
use recode_core::registry::{decode_options, Registry};
use recode_core::spec::Options;
use serde::{Deserialize, Serialize};

/// The advantage estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    /// Leave-one-out baseline: A = r − mean of the group's other rewards.
    Rloo,
    /// Rewards whitened over all tokens of the batch (no group baseline).
    ReinforcePp,
    /// Group mean subtracted, then whitened over all tokens of the batch.
    ReinforcePpBaseline,
}

impl Estimator {
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Rloo => "rloo",
            Estimator::ReinforcePp => "reinforce_plus_plus",
            Estimator::ReinforcePpBaseline => "reinforce_plus_plus_baseline",
        }
    }
}

/// Options of `[algorithm] name = "rloo"`, `"reinforce_plus_plus"` and
/// `"reinforce_plus_plus_baseline"`; every key is optional. Defaults are verl's actor defaults.
/// Returns are undiscounted (γ = 1): with one reward per completion every token shares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// ε_low: the ratio is clipped to [1 − clip_ratio_low, 1 + clip_ratio_high].
    pub clip_ratio_low: f64,
    /// ε_high.
    pub clip_ratio_high: f64,
    /// Dual-clip bound c (> 1): for A < 0 the loss is capped at −c·A.
    pub clip_ratio_c: f64,
    /// "token-mean", "seq-mean-token-mean", "seq-mean-token-sum" or "seq-mean-token-sum-norm".
    pub loss_agg_mode: LossAggMode,
    /// Coefficient of the k3 KL loss against the reference (verl `kl_loss_coef` with
    /// `use_kl_loss`; `low_var_kl` is k3); 0 removes the term and the reference pass.
    pub kl_loss_coef: f64,
    /// Normaliser of "seq-mean-token-sum-norm" (use `generation.max_new_tokens`).
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
            clip_ratio_low: 0.2,
            clip_ratio_high: 0.2,
            clip_ratio_c: 3.0,
            loss_agg_mode: LossAggMode::TokenMean,
            kl_loss_coef: 0.0,
            max_completion_length: 1024,
            rollout_is: RolloutIsMode::None,
            rollout_is_cap: 2.0,
        }
    }
}

pub struct VerlPg {
    pub estimator: Estimator,
    pub config: Config,
    loss_cfg: PgLossConfig,
}

impl VerlPg {
    pub fn new(estimator: Estimator, config: Config) -> Result<Self> {
        let (c, name) = (&config, estimator.name());
        ensure!((0.0..1.0).contains(&c.clip_ratio_low), "options of plugin `{name}`: clip_ratio_low must be in [0, 1), got {}", c.clip_ratio_low);
        ensure!(c.clip_ratio_high >= 0.0, "options of plugin `{name}`: clip_ratio_high must be >= 0, got {}", c.clip_ratio_high);
        ensure!(c.clip_ratio_c > 1.0, "options of plugin `{name}`: clip_ratio_c must be > 1 (verl), got {}", c.clip_ratio_c);
        ensure!(c.kl_loss_coef >= 0.0 && c.kl_loss_coef.is_finite(), "options of plugin `{name}`: kl_loss_coef must be >= 0, got {}", c.kl_loss_coef);
        ensure!(c.max_completion_length > 0, "options of plugin `{name}`: max_completion_length must be > 0");
        let clip = Clip { eps_low: c.clip_ratio_low, eps_high: c.clip_ratio_high, dual_clip: Some(c.clip_ratio_c) };
        let aggregation = c.loss_agg_mode.aggregation(c.max_completion_length);
        let rollout_is = RolloutIs::new(name, c.rollout_is, c.rollout_is_cap)?;
        Ok(Self { estimator, loss_cfg: PgLossConfig { clip, beta: c.kl_loss_coef, aggregation, rollout_is }, config })
    }
}

impl Algorithm for VerlPg {
    fn name(&self) -> &str {
        self.estimator.name()
    }
    /// Without lengths every completion counts as one token in the whitening.
    fn advantages(&self, rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
        self.advantages_with_lengths(rewards, group_size, &vec![1; rewards.len()])
    }
    fn advantages_with_lengths(&self, rewards: &[f64], group_size: usize, lengths: &[usize]) -> Result<Vec<f64>> {
        match self.estimator {
            Estimator::Rloo => algo::rloo_advantages(rewards, group_size),
            Estimator::ReinforcePp => algo::reinforce_pp_advantages(rewards, group_size, lengths),
            Estimator::ReinforcePpBaseline => algo::reinforce_pp_baseline_advantages(rewards, group_size, lengths),
        }
    }
    fn needs_reference(&self) -> bool {
        self.config.kl_loss_coef > 0.0
    }
    fn loss(&self, batch: &LossBatch<'_>) -> Result<LossOutput> {
        algo::policy_gradient_loss(batch, &self.loss_cfg)
    }
}

fn create_with(estimator: Estimator, options: &Options) -> Result<Box<dyn Algorithm>> {
    Ok(Box::new(VerlPg::new(estimator, decode_options(estimator.name(), options)?)?))
}

pub fn create_rloo(options: &Options) -> Result<Box<dyn Algorithm>> {
    create_with(Estimator::Rloo, options)
}

pub fn create_reinforce_pp(options: &Options) -> Result<Box<dyn Algorithm>> {
    create_with(Estimator::ReinforcePp, options)
}

pub fn create_reinforce_pp_baseline(options: &Options) -> Result<Box<dyn Algorithm>> {
    create_with(Estimator::ReinforcePpBaseline, options)
}

pub fn register(reg: &mut Registry) {
    reg.add_algorithm("rloo", "RLOO (verl semantics): leave-one-out baseline, clipped ratio, token mean", create_rloo);
    reg.add_algorithm(
        "reinforce_plus_plus",
        "REINFORCE++ (verl semantics): rewards whitened over the batch's tokens, clipped ratio",
        create_reinforce_pp,
    );
    reg.add_algorithm(
        "reinforce_plus_plus_baseline",
        "REINFORCE++-baseline (verl semantics): group mean subtracted, then whitened over the batch's tokens",
        create_reinforce_pp_baseline,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Options {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults_and_errors() {
        let a = VerlPg::new(Estimator::Rloo, Config::default()).unwrap();
        assert!(!a.needs_reference());
        assert_eq!(a.loss_cfg.clip, Clip { eps_low: 0.2, eps_high: 0.2, dual_clip: Some(3.0) });
        assert!(create_reinforce_pp(&opts("kl_loss_coef = 0.001")).unwrap().needs_reference());
        let e = create_reinforce_pp_baseline(&opts("gamma = 0.99")).err().unwrap().to_string();
        assert!(e.contains("reinforce_plus_plus_baseline") && e.contains("gamma"), "{e}");
        let e = create_rloo(&opts("clip_ratio_c = 1.0")).err().unwrap().to_string();
        assert!(e.contains("rloo") && e.contains("clip_ratio_c"), "{e}");
    }

    #[test]
    fn estimators_differ_as_documented() {
        let r = [1.0, 0.0, 0.0, 0.0];
        // RLOO by hand: 1 − 0 = 1; 0 − 1/3.
        let a = create_rloo(&Options::new()).unwrap().advantages(&r, 4).unwrap();
        assert!((a[0] - 1.0).abs() < 1e-15 && (a[1] + 1.0 / 3.0).abs() < 1e-15, "{a:?}");
        // Whitening: zero mean, unit (unbiased) variance over the four one-token completions.
        let w = create_reinforce_pp(&Options::new()).unwrap().advantages(&r, 4).unwrap();
        let m: f64 = w.iter().sum::<f64>() / 4.0;
        let v: f64 = w.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 3.0;
        assert!(m.abs() < 1e-12 && (v - 1.0).abs() < 1e-6, "{w:?}");
        // Token weighting: a long completion pulls the mean towards its reward.
        let l = create_reinforce_pp(&Options::new()).unwrap().advantages_with_lengths(&[1.0, 0.0], 2, &[3, 1]).unwrap();
        assert!(l[0] > 0.0 && l[0] < -l[1], "{l:?}");
    }
}
