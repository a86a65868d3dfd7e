//! The RL loop: sample prompts → generate G completions each → score → advantages → (filter
//! groups) → old/reference log-probs → optimisation passes in micro-batches → log → checkpoint.

pub mod data_order;
pub mod heldout;
pub mod schedule;
pub mod sft;
pub mod step;

use crate::api::{Algorithm, Policy, Reward};
use crate::rundir::{write_atomic, RunDir};
use crate::spec::Spec;
use crate::tb::Board;
use anyhow::{Context, Result};
use data_order::Cursor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One training prompt: the fully rendered prompt text and the reference answer.
#[derive(Debug, Clone)]
pub struct TaskItem {
    pub id: String,
    pub prompt: String,
    pub target: String,
    /// Every column of the data row, for rewards that read them (`RewardInput::columns`).
    pub columns: serde_json::Map<String, serde_json::Value>,
    /// The completion supervised fine-tuning trains (`[sft] target` rendered for the row);
    /// empty under RL.
    pub sft_target: String,
}

pub struct WeightedReward {
    pub label: String,
    pub weight: f64,
    pub reward: Box<dyn Reward>,
}

/// What a checkpoint stores besides the policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Completed rollout steps.
    pub step: usize,
    /// Optimiser steps taken (steps × num_iterations, minus none: skipped updates still count).
    pub optimizer_step: usize,
    pub cursor: Cursor,
    pub seed: u64,
    /// Updates skipped because the loss or gradient was not finite.
    pub skipped_updates: usize,
    /// sha256 of the resolved spec (`resume::spec_hash`); the flattened spec itself is in the
    /// checkpoint's `spec.json`, so a resume under another spec can name what changed.
    #[serde(default)]
    pub spec_hash: String,
}

/// Scalars of one step, by TensorBoard tag.
pub type Metrics = BTreeMap<String, f64>;

/// Called after every step with its number and metrics (the progress bar).
pub type OnStep<'a> = dyn FnMut(usize, &Metrics) + 'a;

/// An evaluation run during training: (policy, step) -> scalars such as "pass@1".
pub type Evaluator<'a> = Box<dyn FnMut(&mut dyn Policy, usize) -> Result<Metrics> + 'a>;

pub const EVAL_FILE: &str = "eval.jsonl";
/// Per-item held-out scores, one line per (step, item): `{"step", "id", "tokens", "scores", "text"}`
/// (`text`: the completion, kept since 2026-12-07).
pub const HELDOUT_ITEMS_FILE: &str = "heldout.jsonl";
/// The copy baseline's per-item scores (step 0 only), as `HELDOUT_ITEMS_FILE`.
pub const HELDOUT_COPY_FILE: &str = "heldout-copy.jsonl";

/// `{"step": step, <name>: <value>, ...}`: one line of metrics.jsonl or eval.jsonl.
fn step_line(step: usize, values: &Metrics) -> serde_json::Value {
    let mut line = serde_json::Map::new();
    line.insert("step".into(), step.into());
    for (k, v) in values {
        line.insert(k.clone(), serde_json::json!(v));
    }
    serde_json::Value::Object(line)
}

pub struct Trainer<'a> {
    pub spec: &'a Spec,
    pub policy: &'a mut dyn Policy,
    pub rewards: Vec<WeightedReward>,
    pub algorithm: Box<dyn Algorithm>,
    pub items: Vec<TaskItem>,
    pub state: TrainerState,
    pub run: RunDir,
    pub board: Option<Board>,
    /// Called after every step with (step, metrics); the CLI drives its progress bar with it.
    pub on_step: Option<Box<OnStep<'a>>>,
    /// Evaluates the policy every `eval.every` steps; its scalars are logged under `eval/`.
    pub evaluator: Option<Evaluator<'a>>,
    /// Scores the held-out split at step 0 and every `heldout.every` steps (`heldout/` scalars).
    pub heldout: Option<heldout::Heldout>,
    prompt_cache: Vec<Option<Option<Vec<u32>>>>,
    /// The prompt order; `state.cursor` is the position in it.
    order: data_order::DataOrder,
    /// The resolved spec by dotted key, saved in every checkpoint.
    spec_flat: BTreeMap<String, String>,
    /// Resume even when the spec differs from the checkpoint's (the differences are logged).
    pub allow_spec_change: bool,
}

pub const TRAINER_STATE_FILE: &str = "trainer.json";
pub const METRICS_FILE: &str = "metrics.jsonl";

impl<'a> Trainer<'a> {
    pub fn new(
        spec: &'a Spec,
        policy: &'a mut dyn Policy,
        rewards: Vec<WeightedReward>,
        algorithm: Box<dyn Algorithm>,
        items: Vec<TaskItem>,
        run: RunDir,
    ) -> Result<Self> {
        anyhow::ensure!(
            !items.is_empty(),
            "no training prompts: the dataset is empty after filtering"
        );
        anyhow::ensure!(
            !rewards.is_empty(),
            "no rewards configured: add at least one [[reward]]"
        );
        let board = if spec.logging.tensorboard {
            Some(Board::new(&run.tb_dir()))
        } else {
            None
        };
        let n = items.len();
        let spec_flat = crate::resume::flatten_spec(spec)?;
        let spec_hash = crate::resume::spec_hash(&spec_flat);
        Ok(Self {
            spec,
            policy,
            rewards,
            algorithm,
            items,
            state: TrainerState {
                seed: spec.run.seed,
                spec_hash,
                ..TrainerState::default()
            },
            run,
            board,
            on_step: None,
            evaluator: None,
            heldout: None,
            prompt_cache: vec![None; n],
            order: data_order::DataOrder::new(n, spec.run.seed, spec.data.shuffle),
            spec_flat,
            allow_spec_change: false,
        })
    }

    /// Restore policy and trainer state from a checkpoint folder, after checking that it was
    /// trained under the same spec; cut the metrics, eval lines and TensorBoard events logged
    /// after it, so the resumed run's logs read as one uninterrupted run. Returns the spec
    /// differences that `allow_spec_change` let through.
    pub fn resume_from(&mut self, ckpt: &Path) -> Result<Vec<String>> {
        let allowed = crate::resume::check_spec(ckpt, &self.spec_flat, self.allow_spec_change)?;
        let text = std::fs::read_to_string(ckpt.join(TRAINER_STATE_FILE))
            .with_context(|| format!("checkpoint {} has no {TRAINER_STATE_FILE}", ckpt.display()))?;
        let spec_hash = std::mem::take(&mut self.state.spec_hash);
        self.state = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid trainer state", ckpt.join(TRAINER_STATE_FILE).display()))?;
        self.state.spec_hash = spec_hash;
        self.policy.load(&ckpt.join("policy"))?;
        let step = self.state.step;
        crate::resume::cut_jsonl(&self.run.root.join(METRICS_FILE), step)?;
        crate::resume::cut_jsonl(&self.run.root.join(EVAL_FILE), step)?;
        crate::resume::cut_jsonl(&self.run.root.join(HELDOUT_ITEMS_FILE), step)?;
        // The open event file must not be rewritten under its writer: close it, cut, reopen.
        let had_board = self.board.take().is_some();
        let dropped = crate::resume::cut_events(&self.run.tb_dir(), step)?;
        if had_board {
            self.board = Some(Board::new(&self.run.tb_dir()));
        }
        self.run.log(&format!(
            "resumed from {} at step {step} ({dropped} TensorBoard events after it dropped)",
            ckpt.display()
        ));
        for d in &allowed {
            self.run
                .log(&format!("resumed under a changed spec (--allow-spec-change): {d}"));
        }
        Ok(allowed)
    }

    /// Run until `training.steps`; returns the metrics of every step run.
    pub fn train(&mut self) -> Result<Vec<Metrics>> {
        self.train_until(self.spec.training.steps)
    }

    /// Run until `stop` steps are complete (at most `training.steps`); the schedule still spans
    /// the whole run, so stopping early and resuming matches an uninterrupted run.
    pub fn train_until(&mut self, stop: usize) -> Result<Vec<Metrics>> {
        let mut all = Vec::new();
        let total = self.spec.training.steps;
        // The untrained baseline (also with `stop` = 0: `recode run --max-steps 0` scores only it).
        if self.state.step == 0 {
            self.score_heldout(0, total)?;
        }
        while self.state.step < stop.min(total) {
            let step = self.state.step + 1;
            let metrics = self.step(step)?;
            self.state.step = step;
            self.log_step(step, &metrics)?;
            // Evaluations before the checkpoint: a run killed in between redoes the step and
            // its evaluations on resume (their lines after the checkpoint are cut).
            let eval_every = self.spec.eval.every;
            if eval_every > 0 && (step.is_multiple_of(eval_every) || step == total) {
                self.evaluate(step)?;
            }
            self.score_heldout(step, total)?;
            let every = self.spec.training.checkpoint_every;
            if step == total || (every > 0 && step.is_multiple_of(every)) {
                self.save_checkpoint()?;
            }
            if let Some(cb) = self.on_step.as_mut() {
                cb(step, &metrics);
            }
            all.push(metrics);
        }
        if let Some(b) = self.board.as_mut() {
            b.flush();
        }
        Ok(all)
    }

    fn score_heldout(&mut self, step: usize, total: usize) -> Result<()> {
        let Some(h) = self.heldout.as_ref().filter(|h| h.due(step, total)) else {
            return Ok(());
        };
        let t = std::time::Instant::now();
        // The copy baseline does not change with training: scored with the untrained model only.
        let scored = h.evaluate(&mut *self.policy, step == 0)?;
        let mut scalars = scored.metrics;
        scalars.insert("heldout/time_s".into(), t.elapsed().as_secs_f64());
        let lines = |items: &[heldout::ItemScores]| -> Vec<serde_json::Value> {
            items
                .iter()
                .map(|it| {
                    serde_json::json!({ "step": step, "id": it.id, "tokens": it.tokens, "scores": it.scores, "text": it.text })
                })
                .collect()
        };
        self.append_jsonl(HELDOUT_ITEMS_FILE, &lines(&scored.items))?;
        if let Some((copy, items)) = scored.copy {
            self.append_jsonl(HELDOUT_COPY_FILE, &lines(&items))?;
            scalars.extend(copy);
        }
        self.record_eval(step, &scalars, "")
    }

    fn evaluate(&mut self, step: usize) -> Result<()> {
        let Some(ev) = self.evaluator.as_mut() else {
            return Ok(());
        };
        let scalars = ev(&mut *self.policy, step)?;
        self.record_eval(step, &scalars, "eval/")
    }

    /// One evaluation's scalars: TensorBoard (tags prefixed by `tb_prefix`), eval.jsonl, log.txt.
    fn record_eval(&mut self, step: usize, scalars: &Metrics, tb_prefix: &str) -> Result<()> {
        if let Some(b) = self.board.as_mut() {
            for (k, v) in scalars {
                b.scalar(&format!("{tb_prefix}{k}"), *v, step);
            }
            b.flush();
        }
        self.append_jsonl(EVAL_FILE, &[step_line(step, scalars)])?;
        self.run.log(&format!("eval at step {step}: {scalars:?}"));
        Ok(())
    }

    /// Appends one JSON line per value to `file` in the run directory (metrics, eval and held-out
    /// logs; resume cuts them back by their `step`).
    fn append_jsonl(&self, file: &str, lines: &[serde_json::Value]) -> Result<()> {
        use std::io::Write;
        let path = self.run.root.join(file);
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(body.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))
    }

    pub fn save_checkpoint(&mut self) -> Result<()> {
        let state = serde_json::to_vec_pretty(&self.state)?;
        let spec_json = serde_json::to_vec_pretty(&self.spec_flat)?;
        let policy = &*self.policy;
        let path = self
            .run
            .checkpoint(self.state.step, self.spec.training.keep_checkpoints, |dir| {
                std::fs::create_dir_all(dir.join("policy"))?;
                policy.save(&dir.join("policy"))?;
                write_atomic(&dir.join(crate::resume::SPEC_FILE), &spec_json)?;
                write_atomic(&dir.join(TRAINER_STATE_FILE), &state)
            })?;
        self.run.log(&format!("checkpoint {}", path.display()));
        Ok(())
    }

    fn log_step(&mut self, step: usize, metrics: &Metrics) -> Result<()> {
        if let Some(b) = self.board.as_mut() {
            for (k, v) in metrics {
                b.scalar(k, *v, step);
            }
            b.flush();
        }
        self.append_jsonl(METRICS_FILE, &[step_line(step, metrics)])?;
        let brief: Vec<String> = ["reward/total/mean", "loss", "kl", "grad_norm", "completion/length_mean"]
            .iter()
            .filter_map(|k| metrics.get(*k).map(|v| format!("{k}={v:.4}")))
            .collect();
        self.run.log(&format!("step {step}: {}", brief.join(" ")));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
