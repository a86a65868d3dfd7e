//! The built-in RL algorithms, one row each in [`ALGORITHMS`]: a name, an advantage estimator,
//! a loss, and an options struct (in `options.rs`, every key with its default and meaning). One
//! generic [`TableAlgorithm`] runs any row; [`register`] adds them all to the host's registry.
//! The maths are small named functions in `recode_core::algo`; this crate only combines them.
//!
//! Options follow one naming scheme, TRL's `GRPOConfig` (`beta`, `epsilon`, `epsilon_high`,
//! `loss_type`, `scale_rewards`), because GRPO is the default and most specs here are written
//! against it; knobs TRL lacks take plain names (`dual_clip`, `dynamic_sampling`). verl's names
//! (`kl_loss_coef`, `clip_ratio_low`, ...) are still accepted, with a deprecation warning
//! (`options::ALIASES`).

use anyhow::Result;
use recode_core::algo::{self, CispoConfig};
use recode_core::api::{Algorithm, LossBatch, LossOutput};
use recode_core::registry::Registry;
use recode_core::spec::Options;

pub mod options;
use options::{AlgorithmOptions, Cispo, Dapo, DrGrpo, Grpo, Gspo, Verl};
pub use options::{LossType, Settings};

/// An advantage estimator: rewards (consecutive groups), group size, completion lengths in tokens.
pub type Estimator = fn(&[f64], usize, &[usize], &Settings) -> Result<Vec<f64>>;
/// A loss over one micro-batch, with its gradient w.r.t. the current log-probs.
pub type Loss = fn(&LossBatch<'_>, &Settings) -> Result<LossOutput>;

/// One algorithm: what it is called, how it computes advantages and loss, and how its options
/// are read (`create`, made from an options struct by [`row`]).
pub struct Row {
    pub name: &'static str,
    pub advantage: (&'static str, Estimator),
    pub loss: (&'static str, Loss),
    pub about: &'static str,
    create: fn(&'static Row, &Options) -> Result<TableAlgorithm>,
}

/// The table. Defaults follow the paper or library each row names (see its options struct).
pub static ALGORITHMS: [Row; 8] = [
    row::<Grpo>(
        "grpo",
        GROUP_NORMALISED,
        CLIPPED,
        "GRPO (TRL semantics): clipped ratio, k3 KL to the reference",
    ),
    row::<Dapo>(
        "dapo",
        GROUP_NORMALISED,
        CLIPPED,
        "DAPO (verl semantics): clip-higher, dual clip, token mean, dynamic sampling, no KL",
    ),
    row::<DrGrpo>(
        "dr_grpo",
        CENTRED,
        CLIPPED,
        "Dr. GRPO: no std division, token sum over a constant length",
    ),
    row::<Gspo>(
        "gspo",
        GROUP_NORMALISED,
        SEQUENCE_CLIPPED,
        "GSPO: length-normalised sequence-level ratio, clip 3e-4/4e-4",
    ),
    row::<Cispo>(
        "cispo",
        GROUP_NORMALISED,
        CAPPED_WEIGHT,
        "CISPO: -sg(min(ratio, eps_max))*A*logp, no token loses its gradient",
    ),
    row::<Verl>(
        "rloo",
        LEAVE_ONE_OUT,
        CLIPPED,
        "RLOO (verl semantics): leave-one-out baseline, clipped ratio, dual clip",
    ),
    row::<Verl>(
        "reinforce_plus_plus",
        TOKEN_WHITENED,
        CLIPPED,
        "REINFORCE++ (verl semantics): rewards whitened over the batch's tokens",
    ),
    row::<Verl>(
        "reinforce_plus_plus_baseline",
        GROUP_TOKEN_WHITENED,
        CLIPPED,
        "REINFORCE++-baseline (verl): group mean subtracted, then whitened over tokens",
    ),
];

// Advantage estimators (verl's `core_algos` names in the comments).
const GROUP_NORMALISED: (&str, Estimator) = (
    "(r - group mean) / (std + eps), std per `scale_rewards`",
    |r, g, _, s| algo::grpo_advantages(r, g, s.scale_rewards, s.adv_epsilon),
);
const CENTRED: (&str, Estimator) = ("r - group mean", |r, g, _, _| algo::dr_grpo_advantages(r, g));
const LEAVE_ONE_OUT: (&str, Estimator) = ("r - mean of the group's other rewards (rloo)", |r, g, _, _| {
    algo::rloo_advantages(r, g)
});
const TOKEN_WHITENED: (&str, Estimator) = (
    "rewards whitened over the batch's tokens (reinforce_plus_plus)",
    |r, g, l, _| algo::reinforce_pp_advantages(r, g, l),
);
const GROUP_TOKEN_WHITENED: (&str, Estimator) = (
    "group mean subtracted, then whitened over tokens (reinforce_plus_plus_baseline)",
    |r, g, l, _| algo::reinforce_pp_baseline_advantages(r, g, l),
);

// Losses.
const CLIPPED: (&str, Loss) = ("PPO clipped token ratio (+ dual clip, + beta k3 KL)", |b, s| {
    algo::policy_gradient_loss(b, &s.pg)
});
const SEQUENCE_CLIPPED: (&str, Loss) = ("PPO clip on the length-normalised sequence ratio", |b, s| {
    algo::gspo_loss(b, &s.pg)
});
const CAPPED_WEIGHT: (&str, Loss) = ("-sg(clip(ratio)) * A * logp", |b, s| {
    let cfg = CispoConfig {
        max_ratio: s.pg.clip.eps_high,
        min_ratio: s.weight_floor,
        beta: s.pg.beta,
        aggregation: s.pg.aggregation,
        rollout_is: s.pg.rollout_is,
    };
    algo::cispo_loss(b, &cfg)
});

/// A row whose options are the struct `O`.
const fn row<O: AlgorithmOptions>(
    name: &'static str,
    advantage: (&'static str, Estimator),
    loss: (&'static str, Loss),
    about: &'static str,
) -> Row {
    Row {
        name,
        advantage,
        loss,
        about,
        create: create_from::<O>,
    }
}

fn create_from<O: AlgorithmOptions>(row: &'static Row, options: &Options) -> Result<TableAlgorithm> {
    let settings = options::decode::<O>(row.name, options)?;
    Ok(TableAlgorithm { row, settings })
}

/// Any row of the table with its checked settings.
pub struct TableAlgorithm {
    pub row: &'static Row,
    pub settings: Settings,
}

impl TableAlgorithm {
    /// The algorithm `name` with `options` (an unknown name is an error listing the table).
    pub fn new(name: &str, options: &Options) -> Result<Self> {
        let Some(row) = ALGORITHMS.iter().find(|r| r.name == name) else {
            let names: Vec<_> = ALGORITHMS.iter().map(|r| r.name).collect();
            anyhow::bail!("unknown algorithm `{name}`; built-in algorithms: {}", names.join(", "));
        };
        (row.create)(row, options)
    }
}

impl Algorithm for TableAlgorithm {
    fn name(&self) -> &str {
        self.row.name
    }
    /// Without lengths every completion counts as one token (only the whitening estimators care).
    fn advantages(&self, rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
        self.advantages_with_lengths(rewards, group_size, &vec![1; rewards.len()])
    }
    fn advantages_with_lengths(&self, rewards: &[f64], group_size: usize, lengths: &[usize]) -> Result<Vec<f64>> {
        (self.row.advantage.1)(rewards, group_size, lengths, &self.settings)
    }
    fn keep_group(&self, group_rewards: &[f64]) -> bool {
        !self.settings.dynamic_sampling || algo::group_has_variance(group_rewards)
    }
    fn needs_reference(&self) -> bool {
        self.settings.pg.beta > 0.0
    }
    fn loss(&self, batch: &LossBatch<'_>) -> Result<LossOutput> {
        (self.row.loss.1)(batch, &self.settings)
    }
}

/// Adds every row to the registry.
pub fn register(reg: &mut Registry) {
    for row in &ALGORITHMS {
        reg.add_algorithm(row.name, row.about, move |o: &Options| {
            Ok(Box::new((row.create)(row, o)?) as Box<dyn Algorithm>)
        });
    }
}

#[cfg(test)]
mod tests;
