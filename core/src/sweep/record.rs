//! The record of a sweep (`sweep.json`): the plan's runs with their status, attempts and metric
//! summaries, loaded and saved atomically; and the per-step series read from a run's logs.

use super::stats::Spread;
use crate::rundir::write_atomic;
use crate::trainer::{EVAL_FILE, METRICS_FILE};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The file in a sweep folder that records the plan and the state of every run.
pub const SWEEP_FILE: &str = "sweep.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Running,
    Finished,
    Failed,
    /// Stopped by Ctrl-C or a signal; `--resume` continues it from its newest checkpoint.
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// The value at the last logged step.
    #[serde(rename = "final", deserialize_with = "super::stats::f64_or_nan")]
    pub last: f64,
    /// The largest value logged, and its step.
    #[serde(deserialize_with = "super::stats::f64_or_nan")]
    pub best: f64,
    pub best_step: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub name: String,
    pub variant: String,
    pub group: String,
    pub seed: Option<u64>,
    /// Resolved values of the sweep's varied keys.
    pub values: BTreeMap<String, String>,
    /// Paths relative to the sweep folder.
    pub spec_file: String,
    pub log_file: String,
    pub run_dir: Option<String>,
    pub status: Status,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    /// Wall time of all attempts, seconds.
    pub wall_s: f64,
    pub steps_total: usize,
    pub steps_done: usize,
    /// Why it failed: the end of its log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricSummary>,
}

/// Runs that differ only in their seed, summarised over seeds (finished runs only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantStats {
    pub group: String,
    pub values: BTreeMap<String, String>,
    pub runs: usize,
    /// Spread of each metric's final value.
    pub metrics: BTreeMap<String, SpreadRecord>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SpreadRecord {
    pub n: usize,
    #[serde(deserialize_with = "super::stats::f64_or_nan")]
    pub mean: f64,
    #[serde(deserialize_with = "super::stats::f64_or_nan")]
    pub std: f64,
    #[serde(deserialize_with = "super::stats::f64_or_nan")]
    pub ci95: f64,
}

impl From<Spread> for SpreadRecord {
    fn from(s: Spread) -> Self {
        Self {
            n: s.n,
            mean: s.mean,
            std: s.std,
            ci95: s.ci95,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepRecord {
    pub name: String,
    pub file: String,
    pub base: String,
    pub varied: Vec<String>,
    /// Metric patterns ('*' matches anything) and the keys they matched.
    pub metric_patterns: Vec<String>,
    #[serde(default)]
    pub metrics: Vec<String>,
    pub runs: Vec<RunRecord>,
    #[serde(default)]
    pub variants: Vec<VariantStats>,
    /// Per variant (group, in run order): the held-out change over the untrained model.
    #[serde(default)]
    pub heldout: Vec<(String, Vec<super::heldout_change::HeldoutChange>)>,
}

impl SweepRecord {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(SWEEP_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{} is not a sweep folder (no {SWEEP_FILE})", dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a sweep record", path.display()))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(SWEEP_FILE), serde_json::to_string_pretty(self)?.as_bytes())
    }

    pub fn count(&self, s: Status) -> usize {
        self.runs.iter().filter(|r| r.status == s).count()
    }
}

/// Per-step series of one run: metrics.jsonl, and eval.jsonl under `eval/`.
pub type Series = BTreeMap<String, Vec<(usize, f64)>>;

pub fn read_series(run_dir: &Path) -> Series {
    let mut out = Series::new();
    for (file, prefix) in [(METRICS_FILE, ""), (EVAL_FILE, "eval/")] {
        let Ok(text) = std::fs::read_to_string(run_dir.join(file)) else {
            continue;
        };
        for line in text.lines() {
            let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let Some(step) = o.get("step").and_then(|s| s.as_u64()) else {
                continue;
            };
            for (k, v) in &o {
                if let (true, Some(x)) = (k != "step", v.as_f64()) {
                    out.entry(format!("{prefix}{k}")).or_default().push((step as usize, x));
                }
            }
        }
    }
    out
}
