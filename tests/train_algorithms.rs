//! The algorithms added after GRPO/DAPO/Dr.GRPO (GSPO, CISPO, RLOO, REINFORCE++ and
//! REINFORCE++-baseline) train the tiny model (tests/fixtures/tiny-qwen2) through `recode run`:
//! the similarity reward goes up, and does not with the reward's sign flipped. Also: the
//! rollout/train correction reaches the loss and is logged, and TRL's metric names are logged.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `recode run experiments/tiny-grpo.toml --set run.output_dir=OUT --set ...`; returns the run directory.
fn run(out: &Path, sets: &[String]) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_recode"));
    cmd.current_dir(root()).args([
        "run",
        "experiments/tiny-grpo.toml",
        "--set",
        &format!("run.output_dir={:?}", out.display().to_string()),
    ]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "recode run {sets:?} failed:\n{err}\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("run directory: "))
        .expect("run directory printed");
    PathBuf::from(line.trim())
}

fn metrics(run_dir: &Path) -> Vec<serde_json::Map<String, Value>> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap().as_object().unwrap().clone())
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Mean of the first and last 5 steps of the unweighted similarity reward.
fn start_end(run_dir: &Path) -> (f64, f64) {
    let s: Vec<f64> = metrics(run_dir)
        .iter()
        .map(|x| x["reward/similarity/mean"].as_f64().unwrap())
        .collect();
    (mean(&s[..5]), mean(&s[s.len() - 5..]))
}

/// `extra`: overrides for this algorithm (both runs).
fn learns_and_flipped_does_not(algorithm: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut sets: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    sets.push(format!("algorithm.name={algorithm:?}"));
    let up = run(
        dir.path(),
        &[sets.clone(), vec![format!("run.name=\"tiny-{algorithm}\"")]].concat(),
    );
    // Negating the reward negates every advantage: the gradient now points away from the target.
    sets.push("reward=[{name=\"similarity\", weight=-1.0}]".into());
    let flipped = run(
        dir.path(),
        &[sets, vec![format!("run.name=\"tiny-{algorithm}-flipped\"")]].concat(),
    );
    let ((u0, u1), (f0, f1)) = (start_end(&up), start_end(&flipped));
    eprintln!("{algorithm}: similarity first/last 5 steps {u0:.3} -> {u1:.3}, flipped {f0:.3} -> {f1:.3}");
    assert!(u1 > u0 + 0.15, "{algorithm} did not learn: {u0:.3} -> {u1:.3}");
    assert!(
        f1 < f0 + 0.02,
        "{algorithm} with the sign flipped still learned: {f0:.3} -> {f1:.3}"
    );
}

// GSPO and CISPO differ from GRPO only off-policy (ratio ≠ 1), so they train with two passes per
// rollout: measured there, GSPO clips up to half the tokens at its 3e-4/4e-4 range and still
// learns (0.035 -> 0.445). On-policy GSPO is GRPO with the sequence-mean loss (tested below), which
// plateaus near 0.20 on this task. RLOO's unscaled advantages are small on this reward: 40 steps
// (0.017 -> 0.315; 30 steps reach 0.203).
#[test]
fn gspo_learns() {
    learns_and_flipped_does_not("gspo", &["training.num_iterations=2"]);
}

#[test]
fn cispo_learns() {
    learns_and_flipped_does_not("cispo", &["training.num_iterations=2"]);
}

#[test]
fn rloo_learns() {
    learns_and_flipped_does_not("rloo", &["training.steps=40"]);
}

#[test]
fn reinforce_plus_plus_learns() {
    learns_and_flipped_does_not("reinforce_plus_plus", &[]);
}

#[test]
fn reinforce_plus_plus_baseline_learns() {
    learns_and_flipped_does_not("reinforce_plus_plus_baseline", &[]);
}

/// On-policy (one pass, ratio exactly 1) GSPO's gradient is GRPO's with the sequence-mean loss
/// (TRL's note on `importance_sampling_level = "sequence"`): the two runs must match bit for bit.
#[test]
fn on_policy_gspo_is_grpo_with_the_sequence_mean_loss() {
    let dir = tempfile::tempdir().unwrap();
    let steps = "training.steps=4".to_string();
    let gspo = metrics(&run(
        dir.path(),
        &[
            steps.clone(),
            "algorithm.name=\"gspo\"".into(),
            "run.name=\"tiny-gspo-on\"".into(),
        ],
    ));
    let grpo = run(
        dir.path(),
        &[
            steps,
            "run.name=\"tiny-grpo-seq\"".into(),
            "algorithm.options.loss_type=\"grpo\"".into(),
            "algorithm.options.beta=0.0".into(),
        ],
    );
    let grpo = metrics(&grpo);
    for (a, b) in gspo.iter().zip(&grpo) {
        for k in ["reward/similarity/mean", "loss", "grad_norm", "advantage/std"] {
            assert_eq!(a[k], b[k], "step {}: {k}", a["step"]);
        }
    }
    assert!(gspo.iter().any(|x| x["grad_norm"].as_f64().unwrap() > 0.0));
}

#[test]
fn rollout_correction_and_trl_metric_names_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let sets = [
        "training.steps=3",
        "run.name=\"tiny-rollout-is\"",
        "algorithm.options.rollout_is=\"sequence_truncate\"",
    ];
    let m = metrics(&run(dir.path(), &sets.map(String::from)));
    for row in &m {
        for key in [
            "reward",
            "reward_std",
            "frac_reward_zero_std",
            "completions/mean_length",
            "completions/clipped_ratio",
            "entropy",
            "kl",
            "clip_ratio/low_mean",
            "clip_ratio/high_mean",
            "sampling/importance_sampling_ratio/mean",
            "sampling/importance_sampling_ratio/capped_frac",
            "sampling/sampling_logp_difference/mean",
        ] {
            assert!(
                row.get(key).and_then(Value::as_f64).is_some_and(f64::is_finite),
                "step {}: no finite `{key}` in {row:?}",
                row["step"]
            );
        }
        let v = |k: &str| row[k].as_f64().unwrap();
        assert_eq!(v("reward"), v("reward/total/mean"));
        assert_eq!(v("completions/mean_length"), v("completion/length_mean"));
        // Sampler and trainer run the same model on the CPU: the ratio is 1 up to kernel rounding.
        assert!(
            (v("sampling/importance_sampling_ratio/mean") - 1.0).abs() < 1e-2,
            "{row:?}"
        );
        assert!(v("sampling/sampling_logp_difference/mean") < 1e-2, "{row:?}");
        assert!(v("entropy") > 0.0);
    }
    // An unknown option is refused before anything runs, naming it and the plugin.
    let o = Command::new(env!("CARGO_BIN_EXE_recode"))
        .current_dir(root())
        .args([
            "run",
            "experiments/tiny-grpo.toml",
            "--set",
            "algorithm.name=\"gspo\"",
            "--set",
            "algorithm.options.clip_ratio=0.2",
        ])
        .args([
            "--set",
            &format!("run.output_dir={:?}", dir.path().display().to_string()),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("clip_ratio") && err.contains("gspo"),
        "{err}"
    );
}

#[test]
fn the_algorithms_ablation_names_every_algorithm_and_validates() {
    let o = Command::new(env!("CARGO_BIN_EXE_recode"))
        .current_dir(root())
        .args(["validate", "-q", "ablations/algorithms.toml"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sweep = std::fs::read_to_string(root().join("ablations/algorithms.toml")).unwrap();
    for name in [
        "grpo",
        "dapo",
        "dr_grpo",
        "gspo",
        "cispo",
        "rloo",
        "reinforce_plus_plus",
        "reinforce_plus_plus_baseline",
    ] {
        assert!(
            sweep.contains(&format!("name = {name:?}")),
            "ablations/algorithms.toml lacks {name}"
        );
    }
}
