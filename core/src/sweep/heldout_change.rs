//! Each variant's change on the held-out split over the untrained model, with a paired bootstrap
//! confidence interval over held-out items (the Table 2 view of a reward ablation).
//!
//! Per run, `heldout.jsonl` holds every item's scores at step 0 (the untrained baseline) and at
//! later evaluations. For a variant, an item's change is (last evaluation - step 0), averaged
//! over the variant's finished runs (seeds) that scored it at both; the variant's change is the
//! mean over items. The interval resamples items with replacement (the same items for the step-0
//! and last scores, so the pairing is kept) and takes the 2.5 and 97.5 percentiles of the
//! resampled means. It covers item sampling only; with few seeds, seed-to-seed spread is in the
//! per-seed columns, not in the interval.

use crate::trainer::heldout::ItemScores;
use crate::trainer::{HELDOUT_COPY_FILE, HELDOUT_ITEMS_FILE};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Resamples per interval; the generator is seeded, so summaries are reproducible.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldoutChange {
    /// Score label (a reward label, or `exact` for the share of items with EM = 1).
    pub score: String,
    /// Items scored at step 0 and at the end by at least one finished run.
    pub items: usize,
    pub runs: usize,
    /// Mean step-0 score and mean last score over those items.
    #[serde(deserialize_with = "super::stats::f64_or_nan")]
    pub before: f64,
    #[serde(deserialize_with = "super::stats::f64_or_nan")]
    pub after: f64,
    /// after - before, and its 95 % paired-bootstrap interval.
    #[serde(deserialize_with = "super::stats::f64_or_nan")]
    pub change: f64,
    #[serde(deserialize_with = "super::stats::f64_or_nan")]
    pub ci_low: f64,
    #[serde(deserialize_with = "super::stats::f64_or_nan")]
    pub ci_high: f64,
    /// The change of each run (seed) alone, in run order.
    pub per_run: Vec<f64>,
    /// The copy baseline (the old code as the answer, `heldout-copy.jsonl`) on the same items,
    /// and end - copy with its 95 % paired-bootstrap interval: whether training beats copying.
    /// NaN when the runs recorded no copy baseline.
    #[serde(default = "nan", deserialize_with = "super::stats::f64_or_nan")]
    pub copy: f64,
    #[serde(default = "nan", deserialize_with = "super::stats::f64_or_nan")]
    pub vs_copy: f64,
    #[serde(default = "nan", deserialize_with = "super::stats::f64_or_nan")]
    pub vs_copy_low: f64,
    #[serde(default = "nan", deserialize_with = "super::stats::f64_or_nan")]
    pub vs_copy_high: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// One run's held-out records: step -> item id -> scores (with `exact` derived from `em`).
pub fn read_items(run_dir: &Path) -> BTreeMap<usize, BTreeMap<String, BTreeMap<String, f64>>> {
    read_records(&run_dir.join(HELDOUT_ITEMS_FILE))
}

/// The copy baseline's records of one run: item id -> scores (empty when it has none).
pub fn read_copy(run_dir: &Path) -> BTreeMap<String, BTreeMap<String, f64>> {
    read_records(&run_dir.join(HELDOUT_COPY_FILE))
        .remove(&0)
        .unwrap_or_default()
}

fn read_records(path: &Path) -> BTreeMap<usize, BTreeMap<String, BTreeMap<String, f64>>> {
    let mut out: BTreeMap<usize, BTreeMap<String, BTreeMap<String, f64>>> = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return out;
    };
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(step) = v.get("step").and_then(|s| s.as_u64()) else {
            continue;
        };
        let Ok(item) = serde_json::from_value::<ItemScores>(v) else {
            continue;
        };
        let mut scores = item.scores;
        if let Some(em) = scores.get("em").copied() {
            scores.insert("exact".into(), if em == 1.0 { 1.0 } else { 0.0 });
        }
        out.entry(step as usize).or_default().insert(item.id, scores);
    }
    out
}

/// The changes of one variant from its runs' folders (finished runs only).
pub fn variant_changes(run_dirs: &[&Path]) -> Vec<HeldoutChange> {
    // Per run: (item -> (before, after)) for each score label.
    let mut per_run: Vec<BTreeMap<String, BTreeMap<String, (f64, f64)>>> = Vec::new();
    // Label -> item -> copy score (the same in every run of a fixed split; the first one seen).
    let mut copy: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for dir in run_dirs {
        for (id, scores) in read_copy(dir) {
            for (label, v) in scores {
                copy.entry(label).or_default().entry(id.clone()).or_insert(v);
            }
        }
        let recs = read_items(dir);
        let (Some(first), Some((&last_step, last))) = (recs.get(&0), recs.iter().next_back()) else {
            continue;
        };
        if last_step == 0 {
            continue;
        }
        let mut by_score: BTreeMap<String, BTreeMap<String, (f64, f64)>> = BTreeMap::new();
        for (id, before) in first {
            let Some(after) = last.get(id) else { continue };
            for (label, b) in before {
                if let Some(a) = after.get(label) {
                    by_score.entry(label.clone()).or_default().insert(id.clone(), (*b, *a));
                }
            }
        }
        per_run.push(by_score);
    }
    let labels: std::collections::BTreeSet<&String> = per_run.iter().flat_map(|r| r.keys()).collect();
    labels
        .into_iter()
        .map(|label| {
            // Item -> (sum before, sum after, runs) over the runs that scored it.
            let mut acc: BTreeMap<&String, (f64, f64, usize)> = BTreeMap::new();
            let mut run_changes = Vec::new();
            for r in &per_run {
                let Some(items) = r.get(label) else { continue };
                for (id, (b, a)) in items {
                    let e = acc.entry(id).or_insert((0.0, 0.0, 0));
                    e.0 += b;
                    e.1 += a;
                    e.2 += 1;
                }
                let n = items.len().max(1) as f64;
                run_changes.push(items.values().map(|(b, a)| a - b).sum::<f64>() / n);
            }
            let pairs: Vec<(f64, f64)> = acc.values().map(|(b, a, n)| (b / *n as f64, a / *n as f64)).collect();
            let (before, after) = mean_pair(&pairs);
            let (lo, hi) = paired_bootstrap(&pairs, BOOTSTRAP_RESAMPLES, label);
            // (copy, end) per item, over the items that have both; every item or none.
            let copies = copy.get(label.as_str());
            let vs: Vec<(f64, f64)> = acc
                .iter()
                .filter_map(|(id, (_, a, n))| copies?.get(id.as_str()).map(|c| (*c, a / *n as f64)))
                .collect();
            let (copy_mean, vs_copy, vs_lo, vs_hi) = if vs.is_empty() || vs.len() < pairs.len() {
                (f64::NAN, f64::NAN, f64::NAN, f64::NAN)
            } else {
                let (c, a) = mean_pair(&vs);
                let (l, h) = paired_bootstrap(&vs, BOOTSTRAP_RESAMPLES, &format!("{label}/copy"));
                (c, a - c, l, h)
            };
            HeldoutChange {
                score: label.clone(),
                items: pairs.len(),
                runs: run_changes.len(),
                before,
                after,
                change: after - before,
                ci_low: lo,
                ci_high: hi,
                per_run: run_changes,
                copy: copy_mean,
                vs_copy,
                vs_copy_low: vs_lo,
                vs_copy_high: vs_hi,
            }
        })
        .collect()
}

fn mean_pair(pairs: &[(f64, f64)]) -> (f64, f64) {
    let n = pairs.len().max(1) as f64;
    (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    )
}

/// 95 % percentile interval of mean(after - before) over `resamples` resamplings of the items.
/// Seeded by the score label, so every summary of the same logs prints the same interval.
pub fn paired_bootstrap(pairs: &[(f64, f64)], resamples: usize, label: &str) -> (f64, f64) {
    if pairs.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let seed = label
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let diffs: Vec<f64> = pairs.iter().map(|(b, a)| a - b).collect();
    let n = diffs.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| diffs[rng.gen_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_change_has_a_point_interval_and_noise_widens_it() {
        let same: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, i as f64 + 0.5)).collect();
        let (lo, hi) = paired_bootstrap(&same, 500, "x");
        assert!((lo - 0.5).abs() < 1e-12 && (hi - 0.5).abs() < 1e-12, "{lo} {hi}");
        // Changes of +1 and -1 in equal numbers: the interval straddles 0 and lies within [-1, 1];
        // for 40 items its half-width is near 1.96 * 1 / sqrt(40) = 0.31.
        let noisy: Vec<(f64, f64)> = (0..40).map(|i| (0.0, if i % 2 == 0 { 1.0 } else { -1.0 })).collect();
        let (lo, hi) = paired_bootstrap(&noisy, 2000, "x");
        assert!(lo < 0.0 && hi > 0.0 && lo > -1.0 && hi < 1.0, "{lo} {hi}");
        assert!(((hi - lo) / 2.0 - 0.31).abs() < 0.05, "{lo} {hi}");
    }

    #[test]
    fn changes_pair_items_across_steps_and_average_seeds() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, lines: &[(usize, &str, f64)]| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            let body: String = lines
                .iter()
                .map(|(s, id, v)| {
                    format!(
                        "{}\n",
                        serde_json::json!({"step": s, "id": id, "tokens": 3, "scores": {"em": v, "es": v}})
                    )
                })
                .collect();
            std::fs::write(d.join(HELDOUT_ITEMS_FILE), body).unwrap();
            d
        };
        // Seed 1: item a 0 -> 1, item b 1 -> 1. Seed 2: a 0 -> 0, b 1 -> 0 (and a step in between).
        let r1 = write("r1", &[(0, "a", 0.0), (0, "b", 1.0), (4, "a", 1.0), (4, "b", 1.0)]);
        let r2 = write(
            "r2",
            &[
                (0, "a", 0.0),
                (0, "b", 1.0),
                (2, "a", 1.0),
                (4, "a", 0.0),
                (4, "b", 0.0),
            ],
        );
        let ch = variant_changes(&[&r1, &r2]);
        let es = ch.iter().find(|c| c.score == "es").unwrap();
        assert_eq!((es.items, es.runs), (2, 2));
        // Item a: before 0, after mean(1, 0) = 0.5; item b: before 1, after 0.5. Change 0.
        assert!((es.before - 0.5).abs() < 1e-12 && (es.after - 0.5).abs() < 1e-12 && es.change.abs() < 1e-12);
        assert_eq!(es.per_run, vec![0.5, -0.5]);
        let exact = ch.iter().find(|c| c.score == "exact").unwrap();
        assert!((exact.change - es.change).abs() < 1e-12);
        assert!(es.copy.is_nan() && es.vs_copy.is_nan(), "no copy baseline recorded");
        // A copy baseline of a = 1, b = 0.5 (in one run only): end - copy = mean(0.5 - 1, 0.5 - 0.5).
        let copy = serde_json::json!({"step": 0, "id": "a", "tokens": 5, "scores": {"em": 1.0, "es": 1.0}}).to_string()
            + "\n"
            + &serde_json::json!({"step": 0, "id": "b", "tokens": 5, "scores": {"em": 0.0, "es": 0.5}}).to_string();
        std::fs::write(r2.join(HELDOUT_COPY_FILE), copy).unwrap();
        let ch = variant_changes(&[&r1, &r2]);
        let es = ch.iter().find(|c| c.score == "es").unwrap();
        assert!(
            (es.copy - 0.75).abs() < 1e-12 && (es.vs_copy + 0.25).abs() < 1e-12,
            "{} {}",
            es.copy,
            es.vs_copy
        );
        assert!(es.vs_copy_low <= es.vs_copy && es.vs_copy <= es.vs_copy_high);
        let exact = ch.iter().find(|c| c.score == "exact").unwrap();
        assert!((exact.copy - 0.5).abs() < 1e-12, "the copy's exact share");
    }
}
