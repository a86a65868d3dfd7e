//! Every built-in algorithm's `[algorithm.options]`, with defaults, in one place. Each struct is
//! one row's options (rows may share one); [`AlgorithmOptions::settings`] checks them and resolves
//! them into the [`Settings`] the generic algorithm runs with.

use anyhow::{bail, ensure, Result};
use recode_core::algo::{Aggregation, Clip, PgLossConfig, RolloutIs, RolloutIsMode, ScaleRewards, GRPO_STD_EPS};
use recode_core::registry::decode_options;
use recode_core::spec::Options;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What an algorithm runs with once its options are read and checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Which std divides the centred rewards (group-normalised estimators only).
    pub scale_rewards: ScaleRewards,
    /// Added to that std before dividing.
    pub adv_epsilon: f64,
    /// Drop groups whose rewards are all equal (the host regenerates).
    pub dynamic_sampling: bool,
    /// Clip, KL coefficient, aggregation and rollout correction of the loss. For CISPO,
    /// `clip.eps_high` is the weight's cap ε_max.
    pub pg: PgLossConfig,
    /// CISPO's optional lower bound of the weight (1 − epsilon_low).
    pub weight_floor: Option<f64>,
}

/// An options struct of the table: decoded from `[algorithm.options]`, checked into [`Settings`].
pub trait AlgorithmOptions: DeserializeOwned {
    fn settings(&self, algorithm: &str) -> Result<Settings>;
}

/// How per-token losses are summed (TRL's `loss_type`, plus verl's `seq-mean-token-sum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Mean over sequences of each sequence's token mean (original GRPO; length-biased).
    /// verl: `seq-mean-token-mean`.
    Grpo,
    /// Token mean over the whole mini-batch. verl: `token-mean`.
    Bnpo,
    /// Token sum / (sequences × `max_completion_length`). verl: `seq-mean-token-sum-norm`.
    DrGrpo,
    /// Mean over sequences of each sequence's token sum. verl: `seq-mean-token-sum`.
    SeqMeanTokenSum,
}

impl LossType {
    pub fn aggregation(self, max_completion_length: usize) -> Aggregation {
        match self {
            LossType::Grpo => Aggregation::SeqMeanTokenMean,
            LossType::Bnpo => Aggregation::TokenMean,
            LossType::DrGrpo => Aggregation::SeqSumConstant {
                max_len: max_completion_length,
            },
            LossType::SeqMeanTokenSum => Aggregation::SeqMeanTokenSum,
        }
    }
}

/// Deprecated option names (verl's) and the names that replace them. Values of `loss_agg_mode`
/// and `norm_adv_by_std` are translated too (see [`canonical`]).
pub const ALIASES: [(&str, &str); 6] = [
    ("kl_loss_coef", "beta"),
    ("clip_ratio_low", "epsilon"),
    ("clip_ratio_high", "epsilon_high"),
    ("clip_ratio_c", "dual_clip"),
    ("loss_agg_mode", "loss_type"),
    ("norm_adv_by_std", "scale_rewards"),
];

/// The options with deprecated names replaced, and one warning per replacement.
pub fn canonical(algorithm: &str, options: &Options) -> Result<(Options, Vec<String>)> {
    let mut out = options.clone();
    let mut warnings = vec![];
    for (old, new) in ALIASES {
        let Some(value) = out.remove(old) else { continue };
        ensure!(!out.contains_key(new), "options of plugin `{algorithm}`: both `{old}` and `{new}` are set; `{old}` is the old name of `{new}`, keep one");
        let value = match (old, value) {
            ("loss_agg_mode", toml::Value::String(s)) => toml::Value::String(
                match s.as_str() {
                    "token-mean" => "bnpo",
                    "seq-mean-token-mean" => "grpo",
                    "seq-mean-token-sum" => "seq_mean_token_sum",
                    "seq-mean-token-sum-norm" => "dr_grpo",
                    other => bail!("options of plugin `{algorithm}`: loss_agg_mode {other:?} is not one of \"token-mean\", \"seq-mean-token-mean\", \"seq-mean-token-sum\", \"seq-mean-token-sum-norm\""),
                }
                .into(),
            ),
            ("norm_adv_by_std", toml::Value::Boolean(b)) => toml::Value::String(if b { "group" } else { "none" }.into()),
            (_, v) => v,
        };
        warnings.push(format!("warning: options of plugin `{algorithm}`: `{old}` is deprecated, use `{new}` (now read as {new} = {value})"));
        out.insert(new.into(), value);
    }
    Ok((out, warnings))
}

/// Decodes and checks `options` as `O` for the row `algorithm`, printing deprecation warnings.
pub fn decode<O: AlgorithmOptions>(algorithm: &str, options: &Options) -> Result<Settings> {
    let (options, warnings) = canonical(algorithm, options)?;
    for w in warnings {
        eprintln!("{w}");
    }
    decode_options::<O>(algorithm, &options)?.settings(algorithm)
}

/// The clipped-loss part of the settings, checked (errors name the algorithm and the option).
fn pg(
    algorithm: &str,
    clip: Clip,
    beta: f64,
    max_len: usize,
    loss_type: LossType,
    is: (RolloutIsMode, f64),
) -> Result<PgLossConfig> {
    let rollout_is = RolloutIs::new(algorithm, is.0, is.1)?;
    PgLossConfig::checked(
        algorithm,
        ["epsilon", "epsilon_high"],
        clip,
        beta,
        max_len,
        loss_type.aggregation(max_len),
        rollout_is,
    )
}

fn dual_clip(algorithm: &str, c: f64) -> Result<Option<f64>> {
    ensure!(
        c > 1.0,
        "options of plugin `{algorithm}`: dual_clip must be > 1 (verl's clip_ratio_c), got {c}"
    );
    Ok(Some(c))
}

fn settings(pg: PgLossConfig) -> Settings {
    Settings {
        scale_rewards: ScaleRewards::Group,
        adv_epsilon: GRPO_STD_EPS,
        dynamic_sampling: false,
        pg,
        weight_floor: None,
    }
}

/// `grpo`: TRL's `GRPOConfig` defaults, with the ReCode GRPO script's β and `bnpo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grpo {
    /// KL coefficient β of the k3 penalty; 0 removes the term and the reference forward pass.
    pub beta: f64,
    /// Lower clip range ε: the ratio is clipped to [1 − epsilon, 1 + epsilon_high].
    pub epsilon: f64,
    /// Upper clip range (DAPO's clip-higher); unset means `epsilon`.
    pub epsilon_high: Option<f64>,
    /// "bnpo", "grpo", "dr_grpo" or "seq_mean_token_sum" (see [`LossType`]).
    pub loss_type: LossType,
    /// "group", "batch" or "none": which std divides the centred rewards.
    pub scale_rewards: ScaleRewards,
    /// Normaliser of `loss_type = "dr_grpo"`; the host sets it to `generation.max_new_tokens`.
    pub max_completion_length: usize,
    /// Rollout/train importance-sampling correction: "none", "token_truncate", "token_mask",
    /// "sequence_truncate" or "sequence_mask" (TRL's `vllm_importance_sampling_mode`).
    pub rollout_is: RolloutIsMode,
    /// The cap C of the correction's ratio (truncated to C, or masked above C).
    pub rollout_is_cap: f64,
}

impl Default for Grpo {
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

impl AlgorithmOptions for Grpo {
    fn settings(&self, a: &str) -> Result<Settings> {
        let clip = Clip {
            eps_low: self.epsilon,
            eps_high: self.epsilon_high.unwrap_or(self.epsilon),
            dual_clip: None,
        };
        let pg = pg(
            a,
            clip,
            self.beta,
            self.max_completion_length,
            self.loss_type,
            (self.rollout_is, self.rollout_is_cap),
        )?;
        Ok(Settings {
            scale_rewards: self.scale_rewards,
            ..settings(pg)
        })
    }
}

/// `dapo`: verl's DAPO recipe (clip-higher 0.2 / 0.28, dual clip 10, token mean, dynamic
/// sampling, no KL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dapo {
    /// ε_low: the ratio is clipped to [1 − epsilon, 1 + epsilon_high]. verl: `clip_ratio_low`.
    pub epsilon: f64,
    /// ε_high (clip-higher; larger than ε_low to keep exploration). verl: `clip_ratio_high`.
    pub epsilon_high: f64,
    /// Dual-clip bound c (> 1): for A < 0 the loss is capped at −c·A. verl: `clip_ratio_c`.
    pub dual_clip: f64,
    /// See [`LossType`]; verl's `loss_agg_mode` values are accepted under that old name.
    pub loss_type: LossType,
    /// "group" or "none" (verl's `norm_adv_by_std_in_grpo` true / false); "batch" also works.
    pub scale_rewards: ScaleRewards,
    /// Added to the group std before dividing (verl: 1e-6).
    pub adv_epsilon: f64,
    /// Drop groups whose rewards are all equal (DAPO dynamic sampling).
    pub dynamic_sampling: bool,
    /// Normaliser of `loss_type = "dr_grpo"`; the host sets it to `generation.max_new_tokens`.
    pub max_completion_length: usize,
    /// Rollout/train importance-sampling correction (as in `grpo`).
    pub rollout_is: RolloutIsMode,
    /// The cap C of the correction's ratio.
    pub rollout_is_cap: f64,
}

impl Default for Dapo {
    fn default() -> Self {
        Self {
            epsilon: 0.2,
            epsilon_high: 0.28,
            dual_clip: 10.0,
            loss_type: LossType::Bnpo,
            scale_rewards: ScaleRewards::Group,
            adv_epsilon: 1e-6,
            dynamic_sampling: true,
            max_completion_length: 1024,
            rollout_is: RolloutIsMode::None,
            rollout_is_cap: 2.0,
        }
    }
}

impl AlgorithmOptions for Dapo {
    fn settings(&self, a: &str) -> Result<Settings> {
        ensure!(
            self.adv_epsilon >= 0.0,
            "options of plugin `{a}`: adv_epsilon must be >= 0, got {}",
            self.adv_epsilon
        );
        let clip = Clip {
            eps_low: self.epsilon,
            eps_high: self.epsilon_high,
            dual_clip: dual_clip(a, self.dual_clip)?,
        };
        let pg = pg(
            a,
            clip,
            0.0,
            self.max_completion_length,
            self.loss_type,
            (self.rollout_is, self.rollout_is_cap),
        )?;
        Ok(Settings {
            scale_rewards: self.scale_rewards,
            adv_epsilon: self.adv_epsilon,
            dynamic_sampling: self.dynamic_sampling,
            ..settings(pg)
        })
    }
}

/// `dr_grpo`: "GRPO done right" (Liu et al. 2025): the token sum over a constant length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrGrpo {
    /// KL coefficient β of the k3 penalty (Dr. GRPO uses none).
    pub beta: f64,
    /// Lower clip range: the ratio is clipped to [1 − epsilon, 1 + epsilon_high].
    pub epsilon: f64,
    /// Upper clip range; unset means `epsilon`.
    pub epsilon_high: Option<f64>,
    /// The constant normaliser: loss = Σ tokens / (sequences × max_completion_length); the host
    /// sets it to `generation.max_new_tokens`.
    pub max_completion_length: usize,
    /// Rollout/train importance-sampling correction (as in `grpo`).
    pub rollout_is: RolloutIsMode,
    /// The cap C of the correction's ratio.
    pub rollout_is_cap: f64,
}

impl Default for DrGrpo {
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

impl AlgorithmOptions for DrGrpo {
    fn settings(&self, a: &str) -> Result<Settings> {
        let clip = Clip {
            eps_low: self.epsilon,
            eps_high: self.epsilon_high.unwrap_or(self.epsilon),
            dual_clip: None,
        };
        Ok(settings(pg(
            a,
            clip,
            self.beta,
            self.max_completion_length,
            LossType::DrGrpo,
            (self.rollout_is, self.rollout_is_cap),
        )?))
    }
}

/// `gspo` (Zheng et al. 2025): the paper's defaults (v2, §5.1): no KL, ε = 3e-4, ε_high = 4e-4,
/// sequence-mean loss. TRL: `importance_sampling_level = "sequence"`; verl: `policy_loss = "gspo"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gspo {
    /// KL coefficient β of the k3 penalty; 0 (GSPO's setting) removes the reference pass.
    pub beta: f64,
    /// Lower clip range of the sequence ratio: s is clipped to [1 − epsilon, 1 + epsilon_high].
    pub epsilon: f64,
    /// Upper clip range of the sequence ratio.
    pub epsilon_high: f64,
    /// "grpo" (the paper's 1/G Σᵢ) or another [`LossType`].
    pub loss_type: LossType,
    /// "group", "batch" or "none": which std divides the centred rewards.
    pub scale_rewards: ScaleRewards,
    /// Normaliser of `loss_type = "dr_grpo"`; the host sets it to `generation.max_new_tokens`.
    pub max_completion_length: usize,
    /// Rollout/train importance-sampling correction (as in `grpo`).
    pub rollout_is: RolloutIsMode,
    /// The cap C of the correction's ratio.
    pub rollout_is_cap: f64,
}

impl Default for Gspo {
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

impl AlgorithmOptions for Gspo {
    fn settings(&self, a: &str) -> Result<Settings> {
        let clip = Clip {
            eps_low: self.epsilon,
            eps_high: self.epsilon_high,
            dual_clip: None,
        };
        let pg = pg(
            a,
            clip,
            self.beta,
            self.max_completion_length,
            self.loss_type,
            (self.rollout_is, self.rollout_is_cap),
        )?;
        Ok(Settings {
            scale_rewards: self.scale_rewards,
            ..settings(pg)
        })
    }
}

/// `cispo` (MiniMax-M1, 2025). TRL: `loss_type = "cispo"` (there `epsilon_high` is the cap);
/// verl: `policy_loss = "cispo"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cispo {
    /// KL coefficient β of the k3 penalty; 0 removes the reference pass.
    pub beta: f64,
    /// Upper bound of the importance weight: w = min(ρ, epsilon_max) (TRL's documentation
    /// recommends 5.0; ScaleRL's ε_max).
    pub epsilon_max: f64,
    /// Optional lower bound: w ≥ 1 − epsilon_low (MiniMax-M1's general form; unset, as in the
    /// paper and TRL, means none).
    pub epsilon_low: Option<f64>,
    /// "bnpo" (TRL's CISPO normaliser) or another [`LossType`].
    pub loss_type: LossType,
    /// "group", "batch" or "none": which std divides the centred rewards.
    pub scale_rewards: ScaleRewards,
    /// Normaliser of `loss_type = "dr_grpo"`; the host sets it to `generation.max_new_tokens`.
    pub max_completion_length: usize,
    /// Rollout/train importance-sampling correction (as in `grpo`).
    pub rollout_is: RolloutIsMode,
    /// The cap C of the correction's ratio.
    pub rollout_is_cap: f64,
}

impl Default for Cispo {
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

impl AlgorithmOptions for Cispo {
    fn settings(&self, a: &str) -> Result<Settings> {
        ensure!(
            self.epsilon_max > 0.0 && self.epsilon_max.is_finite(),
            "options of plugin `{a}`: epsilon_max must be > 0, got {}",
            self.epsilon_max
        );
        if let Some(lo) = self.epsilon_low {
            ensure!(
                (0.0..=1.0).contains(&lo),
                "options of plugin `{a}`: epsilon_low must be in [0, 1], got {lo}"
            );
            ensure!(
                1.0 - lo <= self.epsilon_max,
                "options of plugin `{a}`: 1 − epsilon_low ({}) exceeds epsilon_max ({})",
                1.0 - lo,
                self.epsilon_max
            );
        }
        // The cap rides in eps_high; eps_low is unused by this loss (0 passes the range check).
        let clip = Clip {
            eps_low: 0.0,
            eps_high: self.epsilon_max,
            dual_clip: None,
        };
        let pg = pg(
            a,
            clip,
            self.beta,
            self.max_completion_length,
            self.loss_type,
            (self.rollout_is, self.rollout_is_cap),
        )?;
        Ok(Settings {
            scale_rewards: self.scale_rewards,
            weight_floor: self.epsilon_low.map(|lo| 1.0 - lo),
            ..settings(pg)
        })
    }
}

/// `rloo`, `reinforce_plus_plus`, `reinforce_plus_plus_baseline`: verl's actor defaults (clip
/// 0.2, dual clip 3, token mean, no KL loss). Returns are undiscounted (γ = 1): with one reward per
/// completion every token shares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verl {
    /// Coefficient of the k3 KL loss against the reference (verl: `kl_loss_coef` with
    /// `use_kl_loss`; `low_var_kl` is k3); 0 removes the term and the reference pass.
    pub beta: f64,
    /// ε_low: the ratio is clipped to [1 − epsilon, 1 + epsilon_high]. verl: `clip_ratio_low`.
    pub epsilon: f64,
    /// ε_high. verl: `clip_ratio_high`.
    pub epsilon_high: f64,
    /// Dual-clip bound c (> 1): for A < 0 the loss is capped at −c·A. verl: `clip_ratio_c`.
    pub dual_clip: f64,
    /// See [`LossType`]; verl's `loss_agg_mode` values are accepted under that old name.
    pub loss_type: LossType,
    /// Normaliser of `loss_type = "dr_grpo"`; the host sets it to `generation.max_new_tokens`.
    pub max_completion_length: usize,
    /// Rollout/train importance-sampling correction (as in `grpo`).
    pub rollout_is: RolloutIsMode,
    /// The cap C of the correction's ratio.
    pub rollout_is_cap: f64,
}

impl Default for Verl {
    fn default() -> Self {
        Self {
            beta: 0.0,
            epsilon: 0.2,
            epsilon_high: 0.2,
            dual_clip: 3.0,
            loss_type: LossType::Bnpo,
            max_completion_length: 1024,
            rollout_is: RolloutIsMode::None,
            rollout_is_cap: 2.0,
        }
    }
}

impl AlgorithmOptions for Verl {
    fn settings(&self, a: &str) -> Result<Settings> {
        let clip = Clip {
            eps_low: self.epsilon,
            eps_high: self.epsilon_high,
            dual_clip: dual_clip(a, self.dual_clip)?,
        };
        Ok(settings(pg(
            a,
            clip,
            self.beta,
            self.max_completion_length,
            self.loss_type,
            (self.rollout_is, self.rollout_is_cap),
        )?))
    }
}
