//! Training end to end on the tiny model (tests/fixtures/tiny-qwen2) through `recode run`:
//! learning with GRPO and DAPO, no learning with the advantage sign flipped, exact resume, and
//! TensorBoard files read back by TensorBoard's own reader.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `recode run SPEC --set run.output_dir=OUT ...` and returns the run directory.
fn run(spec: &str, out: &Path, sets: &[&str], extra: &[&str]) -> PathBuf {
    let o = run_command(spec, out, sets).args(extra).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "recode run {spec} failed:\n{err}\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    run_dir_of(&err).expect("run directory printed")
}

/// `recode run SPEC --set run.output_dir=OUT --set ...`, from the project root.
fn run_command(spec: &str, out: &Path, sets: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_recode"));
    cmd.current_dir(root()).args([
        "run",
        spec,
        "--set",
        &format!("run.output_dir={:?}", out.display().to_string()),
    ]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd
}

fn metrics(run_dir: &Path) -> Vec<serde_json::Map<String, Value>> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap().as_object().unwrap().clone())
        .collect()
}

fn series(m: &[serde_json::Map<String, Value>], key: &str) -> Vec<f64> {
    m.iter().map(|x| x[key].as_f64().unwrap()).collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Mean of the first and last `w` steps of the unweighted similarity reward.
fn start_end(run_dir: &Path, w: usize) -> (f64, f64) {
    let s = series(&metrics(run_dir), "reward/similarity/mean");
    (mean(&s[..w]), mean(&s[s.len() - w..]))
}

#[test]
fn grpo_and_dapo_learn_and_a_flipped_sign_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let grpo = run("experiments/tiny-grpo.toml", dir.path(), &[], &[]);
    let dapo = run("experiments/tiny-dapo.toml", dir.path(), &[], &[]);
    // Negating the reward negates every advantage: the gradient now points away from the target.
    let flipped = run(
        "experiments/tiny-grpo.toml",
        dir.path(),
        &[
            "run.name=\"tiny-flipped\"",
            "reward=[{name=\"similarity\", weight=-1.0}]",
        ],
        &[],
    );
    let (g0, g1) = start_end(&grpo, 5);
    let (d0, d1) = start_end(&dapo, 5);
    let (f0, f1) = start_end(&flipped, 5);
    eprintln!(
        "similarity first/last 5 steps: grpo {g0:.3} -> {g1:.3}, dapo {d0:.3} -> {d1:.3}, flipped {f0:.3} -> {f1:.3}"
    );
    assert!(g1 > g0 + 0.15, "GRPO did not learn: {g0:.3} -> {g1:.3}");
    assert!(d1 > d0 + 0.15, "DAPO did not learn: {d0:.3} -> {d1:.3}");
    assert!(f1 < f0 + 0.02, "the flipped sign still learned: {f0:.3} -> {f1:.3}");
}

#[test]
fn an_out_of_tree_c_algorithm_trains_the_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libgrpo_lite.so");
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2"])
        .arg(format!("-I{}", root().join("include").display()))
        .arg(root().join("examples/plugins/c-algorithm/grpo_lite.c"))
        .arg("-o")
        .arg(&lib)
        .arg("-lm")
        .status()
        .expect("cc is required");
    assert!(st.success());
    let name = format!("algorithm.name={:?}", lib.display().to_string());
    let run_dir = run(
        "experiments/tiny-grpo.toml",
        dir.path(),
        &[&name, "run.name=\"tiny-c-algo\""],
        &[],
    );
    let (s0, s1) = start_end(&run_dir, 5);
    eprintln!("C plugin GRPO: similarity {s0:.3} -> {s1:.3}");
    assert!(
        s1 > s0 + 0.15,
        "the C algorithm plugin did not learn: {s0:.3} -> {s1:.3}"
    );
}

/// Scalars that depend on wall-clock time differ between runs; everything else must match.
fn comparable(m: &serde_json::Map<String, Value>) -> Vec<(String, f64)> {
    m.iter()
        .filter(|(k, _)| !k.starts_with("time/") && !k.starts_with("throughput/"))
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect()
}

/// The sampled trajectory (rewards, lengths, advantages) must be bit-identical. Scalars reduced
/// over gradients may differ in the last digits: burn's CPU backward does not sum in a fixed
/// order across processes (measured: grad_norm varies by ~1e-6 relative between two identical
/// fresh runs).
fn assert_same_trajectory(a: &[serde_json::Map<String, Value>], b: &[serde_json::Map<String, Value>]) {
    assert_eq!(a.len(), b.len(), "number of logged steps");
    for (x, y) in a.iter().zip(b) {
        let (cx, cy) = (comparable(x), comparable(y));
        assert_eq!(cx.len(), cy.len());
        for ((kx, vx), (ky, vy)) in cx.iter().zip(&cy) {
            assert_eq!(kx, ky);
            let reduced = ["grad_norm", "loss", "kl", "clip_frac", "ratio_mean"].contains(&kx.as_str());
            if reduced {
                assert!(
                    (vx - vy).abs() <= 1e-5 * vx.abs().max(vy.abs()).max(1e-3),
                    "step {}: {kx} {vx} vs {vy}",
                    x["step"]
                );
            } else {
                assert_eq!(vx, vy, "step {}: {kx}", x["step"]);
            }
        }
    }
}

/// Six steps straight, and three steps then a resume for three more: the resumed run continues in
/// the same folder and logs the same trajectory. Returns the uninterrupted run's metrics.
fn check_resume(spec: &str, name: &str) -> Vec<serde_json::Map<String, Value>> {
    let dir = tempfile::tempdir().unwrap();
    let sets = ["training.steps=6", "training.checkpoint_every=3"];
    let full = run(spec, dir.path(), &sets, &[]);
    let mut sets_b = sets.to_vec();
    let name = format!("run.name=\"{name}\"");
    sets_b.push(&name);
    let part = run(spec, dir.path(), &sets_b, &["--max-steps", "3"]);
    assert_eq!(metrics(&part).len(), 3);
    let resumed = run(spec, dir.path(), &sets_b, &["--resume", part.to_str().unwrap()]);
    assert_eq!(resumed, part, "resume continues in the same run directory");
    let (a, b) = (metrics(&full), metrics(&resumed));
    assert_eq!(a.len(), 6);
    assert_same_trajectory(&a, &b);
    a
}

#[test]
fn resumed_run_logs_the_same_metrics_as_an_uninterrupted_one() {
    let a = check_resume("experiments/tiny-grpo.toml", "tiny-resume");
    // Loss and reward really moved, so equality is not trivial.
    assert!(series(&a, "loss").iter().any(|l| *l != 0.0));
}

#[test]
fn tensorboard_reader_sees_our_scalars_text_and_histograms() {
    let Some(python) = recode_test_support::python("TensorBoard's reader on our event files") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run_dir = run(
        "experiments/tiny-grpo.toml",
        dir.path(),
        &[
            "training.steps=3",
            "logging.sample_every=1",
            "eval.every=3",
            "eval.data=\"data/cua-sample.jsonl\"",
            "eval.max_new_tokens=8",
        ],
        &[],
    );
    let o = Command::new(python)
        .arg(root().join("tests/reference/read_tensorboard.py"))
        .arg(run_dir.join("tb"))
        .output()
        .expect("the tests' python");
    assert!(
        o.status.success(),
        "tests/reference/read_tensorboard.py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let tb: Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = metrics(&run_dir);
    for tag in [
        "reward/similarity/mean",
        "reward/similarity/std",
        "reward/total/mean",
        "advantage/mean",
        "advantage/std",
        "groups/zero_variance_frac",
        "kl",
        "clip_frac",
        "loss",
        "lr",
        "grad_norm",
        "completion/length_mean",
        "throughput/tokens_per_s",
        "time/generation_s",
    ] {
        let points = tb["scalars"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("no scalar {tag} in {}", tb["scalars"]));
        assert_eq!(points.len(), 3, "{tag}");
        for (p, row) in points.iter().zip(&m) {
            assert_eq!(p[0].as_u64(), row["step"].as_u64());
            let (got, want) = (p[1].as_f64().unwrap(), row[tag].as_f64().unwrap());
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{tag}: {got} vs {want}"
            );
        }
    }
    // Evaluation during training: pass@k as scalars, and the full report beside the events.
    let eval_points = tb["scalars"]["eval/pass@1"].as_array().expect("eval/pass@1 logged");
    assert_eq!(eval_points[0][0].as_u64(), Some(3));
    assert!(run_dir.join("eval-step-000003.json").exists());
    let samples = tb["text"]["samples"].as_array().expect("sample completions as text");
    assert!(samples[0][1].as_str().unwrap().contains("reward"), "{samples:?}");
    let hist: Vec<&str> = tb["histograms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        hist.contains(&"reward/total") && hist.contains(&"advantage"),
        "{hist:?}"
    );
    let plugins = tb["plugins"].to_string();
    assert!(plugins.contains("text") && plugins.contains("hparams"), "{plugins}");
}

/// Runs `recode run` with extra environment and returns (success, stderr).
fn run_raw(spec: &str, out: &Path, sets: &[&str], extra: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let o = run_command(spec, out, sets)
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn run_dir_of(stderr: &str) -> Option<PathBuf> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("run directory: "))
        .map(|l| PathBuf::from(l.trim()))
}

/// Every file of a checkpoint's policy folder, by name.
fn policy_files(ckpt: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![ckpt.join("policy")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(
                    e.path().strip_prefix(ckpt).unwrap().display().to_string(),
                    std::fs::read(e.path()).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn a_nan_injected_into_real_grpo_and_dapo_runs_skips_that_update_and_keeps_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    for spec in ["experiments/tiny-grpo.toml", "experiments/tiny-dapo.toml"] {
        let sets = [
            "training.steps=4",
            "training.checkpoint_every=1",
            "training.num_iterations=1",
        ];
        // Optimiser step 2 is rollout step 2's only pass.
        let (ok, err) = run_raw(spec, dir.path(), &sets, &[], &[("RECODE_INJECT_NONFINITE", "2")]);
        assert!(ok, "{spec} with a NaN injected stopped:\n{err}");
        let run_dir = run_dir_of(&err).unwrap();
        let m = metrics(&run_dir);
        assert_eq!(series(&m, "update/skipped"), vec![0.0, 1.0, 0.0, 0.0], "{spec}");
        assert!(
            m.iter().all(|x| x["loss"].as_f64().unwrap().is_finite()),
            "{spec}: a NaN reached the logged loss"
        );
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["skipped_updates"], 1, "{spec}");
        let log = std::fs::read_to_string(run_dir.join("log.txt")).unwrap();
        assert!(
            log.contains("non-finite current log-prob at row 0, token 0: update skipped"),
            "{spec}: {log}"
        );
        // The skipped step left weights and optimiser state exactly as the step before; the
        // steps around it did change them. burn writes the optimiser's per-parameter map in hash
        // order, so its file is compared as a multiset of bytes (an AdamW step rewrites the
        // moments, which changes that multiset); the weights are compared byte for byte.
        let ck = |s: usize| {
            let mut f = policy_files(&run_dir.join(format!("checkpoints/step-{s:06}")));
            for (name, bytes) in f.iter_mut() {
                if name.ends_with("optimizer.mpk") {
                    bytes.sort_unstable();
                }
            }
            f
        };
        assert!(ck(1) == ck(2), "{spec}: the skipped update changed the saved policy");
        assert!(
            ck(2) != ck(3) && ck(3) != ck(4),
            "{spec}: the updates after it must change the saved policy"
        );
    }
}

#[test]
fn resume_under_a_different_spec_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let sets = [
        "training.steps=4",
        "training.checkpoint_every=1",
        "run.name=\"tiny-strict\"",
    ];
    let part = run("experiments/tiny-grpo.toml", dir.path(), &sets, &["--max-steps", "2"]);
    let resume = ["--resume", part.to_str().unwrap()];
    let mut changed = sets.to_vec();
    changed.push("training.lr=0.02");
    let (ok, err) = run_raw("experiments/tiny-grpo.toml", dir.path(), &changed, &resume, &[]);
    assert!(!ok, "a resume under another lr was accepted");
    assert!(
        err.contains("training.lr: 0.01 -> 0.02") && err.contains("--allow-spec-change"),
        "{err}"
    );
    assert_eq!(metrics(&part).len(), 2, "a refused resume must not touch the run");
    let mut allowed = resume.to_vec();
    allowed.push("--allow-spec-change");
    let (ok, err) = run_raw("experiments/tiny-grpo.toml", dir.path(), &changed, &allowed, &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: resuming under a changed spec: training.lr: 0.01 -> 0.02"),
        "{err}"
    );
    assert_eq!(metrics(&part).len(), 4);
}

/// A small deterministic generator for the kill times (the test must be reproducible).
fn next_delay(state: &mut u64) -> std::time::Duration {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    std::time::Duration::from_millis(100 + (*state >> 33) % 600)
}

#[test]
fn a_run_killed_at_random_points_and_resumed_logs_the_uninterrupted_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    // 200 tiny steps take about 4 s here; kills land 0.1-0.7 s into each attempt.
    let sets = ["training.steps=200", "training.checkpoint_every=1"];
    let full = run("experiments/tiny-grpo.toml", dir.path(), &sets, &[]);
    let mut sets_k = sets.to_vec();
    sets_k.push("run.name=\"tiny-killed\"");
    let (mut rng, mut kills, mut run_dir): (u64, usize, Option<PathBuf>) = (7, 0, None);
    let log_path = dir.path().join("attempt.log");
    for attempt in 0..40 {
        let mut cmd = run_command("experiments/tiny-grpo.toml", dir.path(), &sets_k);
        let resumable = run_dir.as_ref().is_some_and(|d| {
            d.join("checkpoints")
                .read_dir()
                .is_ok_and(|mut r| r.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("step-"))))
        });
        if resumable {
            cmd.args(["--resume", run_dir.as_ref().unwrap().to_str().unwrap()]);
        }
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap());
        let mut child = cmd.spawn().unwrap();
        let status = if kills < 4 {
            let delay = next_delay(&mut rng);
            let t = std::time::Instant::now();
            loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break Some(s);
                }
                if t.elapsed() >= delay {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                    eprintln!("attempt {attempt}: killed after {delay:?} (resumed: {resumable})");
                    break None;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        } else {
            Some(child.wait().unwrap())
        };
        let err = std::fs::read_to_string(&log_path).unwrap();
        if run_dir.is_none() || !resumable {
            run_dir = run_dir_of(&err).or(run_dir);
        }
        if let Some(s) = status {
            assert!(s.success(), "attempt {attempt} failed:\n{err}");
            break;
        }
    }
    assert!(kills >= 4, "the run finished before it could be killed 4 times");
    let killed = run_dir.unwrap();
    assert_same_trajectory(&metrics(&full), &metrics(&killed));
    assert_eq!(metrics(&killed).len(), 200);
    // TensorBoard sees each step once per tag, as in the uninterrupted run.
    let Some(python) = recode_test_support::python("TensorBoard's reader on a resumed run's events") else {
        return;
    };
    let o = Command::new(python)
        .arg(root().join("tests/reference/read_tensorboard.py"))
        .arg(killed.join("tb"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tb: Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps: Vec<u64> = tb["scalars"]["reward/total/mean"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        (1..=200).collect::<Vec<u64>>(),
        "TensorBoard steps after kills and resumes"
    );
}

#[test]
fn heldout_rows_are_scored_at_step_zero_and_during_training() {
    let dir = tempfile::tempdir().unwrap();
    let sets = [
        "training.steps=20",
        "data.heldout_fraction=0.25",
        "heldout.every=10",
        "heldout.rewards=[\"similarity\", \"em\"]",
        "run.name=\"tiny-heldout\"",
    ];
    let run_dir = run("experiments/tiny-grpo.toml", dir.path(), &sets, &[]);
    let lines: Vec<Value> = std::fs::read_to_string(run_dir.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = lines.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(
        steps,
        vec![0, 10, 20],
        "held-out scored at the baseline, every 10 steps and at the end"
    );
    for l in &lines {
        assert_eq!(l["heldout/items"], 2.0, "8 rows, a quarter held out: {l}");
        let exact = l["heldout/exact_rate"].as_f64().unwrap();
        assert!([0.0, 0.5, 1.0].contains(&exact), "{l}");
    }
    let sim: Vec<f64> = lines
        .iter()
        .map(|l| l["heldout/similarity"].as_f64().unwrap())
        .collect();
    eprintln!("held-out similarity by step 0/10/20: {sim:?}");
    // The synthetic task has one answer for every prompt, so what is learned carries over to the
    // held-out prompts: greedy similarity on them must rise.
    assert!(sim[2] > sim[0] + 0.1, "held-out similarity did not improve: {sim:?}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["heldout"].as_array().unwrap().len(), 3);
    // `--max-steps 0`: the baseline alone, the same numbers, no training step.
    let mut sets0 = sets.to_vec();
    sets0[4] = "run.name=\"tiny-baseline\"";
    let base = run("experiments/tiny-grpo.toml", dir.path(), &sets0, &["--max-steps", "0"]);
    let only: Vec<Value> = std::fs::read_to_string(base.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["heldout/similarity"], lines[0]["heldout/similarity"]);
    assert!(
        !base.join("metrics.jsonl").exists() || metrics(&base).is_empty(),
        "--max-steps 0 trained"
    );
}

// ---- Supervised fine-tuning (training.mode = "sft", experiments/tiny-sft.toml) ----

/// The tiny model without adapters, for token ids and greedy answers outside `recode run`.
fn tiny_policy(path: &Path) -> Box<dyn recode_core::api::Policy> {
    let mut reg = recode_core::registry::Registry::default();
    recode_model::register(&mut reg);
    let mut spec = recode_core::spec::ModelSpec {
        path: path.display().to_string(),
        ..Default::default()
    };
    spec.adapter.kind = recode_core::spec::AdapterKind::None;
    let ctx = recode_core::registry::ModelContext {
        spec: &spec,
        backend: &Default::default(),
        training: &Default::default(),
        seed: 1,
    };
    reg.model("transformer").unwrap()(&ctx).unwrap()
}

fn heldout_lines(run_dir: &Path, file: &str) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join(file))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Step 1's loss is computed on the untrained weights (full fine-tuning: the fixture's own), over
/// every training row at once (prompts_per_step = all 8 rows, so the data order does not matter):
/// it must equal the token-mean NLL of "hello" + EOS after each prompt under the numpy forward
/// (tests/reference/qwen2_ref.py, independent of burn). d(loss)/d(logp) = -1/N per target token
/// is checked by hand in core/src/trainer/sft.rs; the backward from there is gradcheck-tested.
#[test]
fn sft_loss_is_the_token_mean_nll_of_a_numpy_forward() {
    let Some(python) = recode_test_support::python("the numpy reference of the SFT loss") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sets = [
        "training.steps=1",
        "training.prompts_per_step=8",
        "run.name=\"tiny-sft-loss\"",
    ];
    let run_dir = run("experiments/tiny-sft.toml", dir.path(), &sets, &[]);
    let loss = series(&metrics(&run_dir), "loss")[0];

    let fixture = root().join("tests/fixtures/tiny-qwen2");
    let policy = tiny_policy(&fixture);
    let codec = policy.codec();
    let mut target = codec.encode("hello").unwrap();
    target.push(codec.eos_ids()[0]);
    let seqs: Vec<Value> = std::fs::read_to_string(root().join("tests/fixtures/tiny-task.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let row: Value = serde_json::from_str(l).unwrap();
            // configs/tiny-model.toml: user = "{{ update_info }}\n", a template that concatenates.
            let prompt = codec
                .encode(&format!("{}\n", row["update_info"].as_str().unwrap()))
                .unwrap();
            serde_json::json!({"prompt": prompt, "completion": target})
        })
        .collect();
    assert_eq!(seqs.len(), 8);
    let (req, out) = (dir.path().join("req.json"), dir.path().join("out.json"));
    std::fs::write(&req, serde_json::json!({ "seqs": seqs }).to_string()).unwrap();
    let script = root().join("plugins/model/tests/reference/qwen2_ref.py");
    recode_test_support::run_reference(&python, &script, &[&fixture, &req, &out]);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let lps: Vec<f64> = v["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    assert_eq!(lps.len(), 8 * target.len());
    let nll = -lps.iter().sum::<f64>() / lps.len() as f64;
    eprintln!("SFT step-1 loss {loss}, numpy NLL {nll}");
    assert!((loss - nll).abs() <= 1e-4 * nll.abs(), "loss {loss} vs numpy {nll}");
}

/// SFT drives the target's NLL down and then greedily generates it on held-out prompts; the
/// held-out file keeps each answer's text.
#[test]
fn sft_learns_the_target_and_greedy_generation_then_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let sets = [
        "data.heldout_fraction=0.25",
        "training.steps=30",
        "heldout.every=30",
        "heldout.rewards=[\"similarity\"]",
        // Room for "hello" (5 tokens of the tiny tokenizer) and the EOS that SFT taught.
        "generation.max_new_tokens=8",
        "run.name=\"tiny-sft-learn\"",
    ];
    let run_dir = run("experiments/tiny-sft.toml", dir.path(), &sets, &[]);
    let loss = series(&metrics(&run_dir), "loss");
    eprintln!("SFT loss by step: {loss:?}");
    assert_eq!(loss.len(), 30);
    assert!(loss[29] < 0.05 * loss[0], "the target's NLL did not fall: {loss:?}");
    let items = heldout_lines(&run_dir, "heldout.jsonl");
    let at = |step: u64| -> Vec<&Value> { items.iter().filter(|l| l["step"] == step).collect() };
    assert_eq!(at(0).len(), 2);
    assert!(
        at(0).iter().any(|l| l["text"] != "hello"),
        "untrained already answers: {items:?}"
    );
    for l in at(30) {
        assert_eq!(l["text"], "hello", "{l}");
        assert_eq!(l["tokens"], 6, "\"hello\" and the EOS: {l}");
    }
}

/// An SFT run stopped and resumed logs what an uninterrupted one logs, as RL runs do.
#[test]
fn a_resumed_sft_run_logs_the_same_metrics_as_an_uninterrupted_one() {
    let a = check_resume("experiments/tiny-sft.toml", "tiny-sft-resume");
    assert!(series(&a, "loss").windows(2).any(|w| w[0] != w[1]));
}

/// The warm start: an RL run with `model.adapter.init` = an SFT run's PEFT adapter, or its run
/// directory (newest checkpoint), starts from the SFT weights: its step-0 held-out answers and
/// scores equal the SFT run's last. `recode eval --model M --adapter DIR` loads the same adapter
/// through the same loader and gives the same greedy answers as `recode eval --run`.
#[test]
fn rl_warm_started_from_an_sft_adapter_scores_what_the_sft_run_ended_with() {
    let dir = tempfile::tempdir().unwrap();
    let lora = [
        "model.adapter.kind=\"lora\"",
        "model.adapter.rank=4",
        "model.adapter.alpha=8.0",
        "model.adapter.target_modules=[\"all-linear\"]",
        "training.lr=0.02",
        "data.heldout_fraction=0.25",
        "heldout.every=12",
        "heldout.rewards=[\"em\", \"similarity\"]",
    ];
    let mut sft_sets = lora.to_vec();
    sft_sets.push("run.name=\"tiny-sft-warm\"");
    let sft = run("experiments/tiny-sft.toml", dir.path(), &sft_sets, &[]);
    let peft = sft.join("adapter");
    assert!(
        peft.join("adapter_model.safetensors").is_file(),
        "no PEFT export in {}",
        sft.display()
    );
    let last: Vec<Value> = heldout_lines(&sft, "heldout.jsonl")
        .into_iter()
        .filter(|l| l["step"] == 12)
        .collect();
    let sft_scores = |l: &Value| (l["id"].clone(), l["text"].clone(), l["scores"].clone());
    for (i, init) in [peft.clone(), sft.clone()].iter().enumerate() {
        let mut rl_sets = lora.to_vec();
        let name = format!("run.name=\"tiny-warm-{i}\"");
        let init_set = format!("model.adapter.init={:?}", init.display().to_string());
        rl_sets.extend([name.as_str(), init_set.as_str(), "training.steps=1"]);
        let rl = run(
            "experiments/tiny-grpo.toml",
            dir.path(),
            &rl_sets,
            &["--max-steps", "0"],
        );
        let first: Vec<Value> = heldout_lines(&rl, "heldout.jsonl");
        assert_eq!(
            first.iter().map(sft_scores).collect::<Vec<_>>(),
            last.iter().map(sft_scores).collect::<Vec<_>>(),
            "warm start from {}",
            init.display()
        );
    }
    // A cold start scores otherwise (so the equality above is not trivial).
    let mut cold = lora.to_vec();
    cold.extend(["run.name=\"tiny-cold\"", "training.steps=1"]);
    let cold = run("experiments/tiny-grpo.toml", dir.path(), &cold, &["--max-steps", "0"]);
    assert_ne!(
        heldout_lines(&cold, "heldout.jsonl")
            .iter()
            .map(sft_scores)
            .collect::<Vec<_>>(),
        last.iter().map(sft_scores).collect::<Vec<_>>()
    );

    // The same adapter through the library loader behind `recode eval --adapter`: greedy answers
    // equal those of the run's own checkpoint.
    let mut reg = recode_core::registry::Registry::default();
    recode_model::register(&mut reg);
    let fixture = root().join("tests/fixtures/tiny-qwen2");
    let opts = Default::default();
    let mut from_peft =
        recode_core::load::policy_with_adapter(&reg, &[], fixture.to_str().unwrap(), "cpu", &peft, &opts).unwrap();
    let mut from_run = recode_core::load::policy_from_run(&reg, &sft, None, &|_| {}).unwrap();
    let prompts: Vec<Vec<u32>> = ["task alpha\n", "something new\n", "x\n"]
        .iter()
        .map(|p| from_run.codec().encode(p).unwrap())
        .collect();
    let params = recode_core::api::SamplingParams {
        max_new_tokens: 5,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        stop_token_ids: vec![],
        stop_strings: vec![],
        seed: 0,
        row_seeds: vec![],
    };
    let a = from_peft.generate(&prompts, &params).unwrap();
    let b = from_run.generate(&prompts, &params).unwrap();
    assert_eq!(
        a.iter().map(|g| &g.tokens).collect::<Vec<_>>(),
        b.iter().map(|g| &g.tokens).collect::<Vec<_>>()
    );
    // `--adapter` given the run directory (its newest checkpoint, adapter settings from its spec).
    let mut from_ckpt =
        recode_core::load::policy_with_adapter(&reg, &[], fixture.to_str().unwrap(), "cpu", &sft, &opts).unwrap();
    let c = from_ckpt.generate(&prompts, &params).unwrap();
    assert_eq!(
        a.iter().map(|g| &g.tokens).collect::<Vec<_>>(),
        c.iter().map(|g| &g.tokens).collect::<Vec<_>>()
    );
    assert!(
        a.iter().any(|g| g.text == "hello"),
        "{:?}",
        a.iter().map(|g| &g.text).collect::<Vec<_>>()
    );
    // A mismatched adapter is refused, naming what differs.
    let mut bad_spec = lora.to_vec();
    bad_spec.extend([
        "run.name=\"tiny-warm-bad\"",
        "model.adapter.rank=2",
        "model.adapter.alpha=4.0",
    ]);
    let bad_init = format!("model.adapter.init={:?}", peft.display().to_string());
    bad_spec.push(bad_init.as_str());
    let (ok, err) = run_raw(
        "experiments/tiny-grpo.toml",
        dir.path(),
        &bad_spec,
        &["--max-steps", "0"],
        &[],
    );
    assert!(
        !ok && err.contains("model.adapter.init") && err.contains("shape"),
        "{err}"
    );
}
