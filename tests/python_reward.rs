//! Rewards written in Python (`[[reward]] python = ...`): parity of a Python ReCode reward with the
//! built-ins on every row of the ReCode training set, a TRL-style reward reading a data column,
//! a verl-style `compute_score`, every error with its message, and training through `recode run`
//! and `recode sweep` on the tiny model.

use recode_core::api::{Reward, RewardInput};
use recode_core::reward_py::{PythonReward, PythonRewardConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Python reward from `file` (relative to the repository), run by the tests' pinned interpreter.
fn start(python: &Path, file: &str, function: &str, style: &str, options: Value) -> anyhow::Result<PythonReward> {
    PythonReward::start(PythonRewardConfig {
        path: root().join(file).display().to_string(),
        module: String::new(),
        function: function.into(),
        style: style.into(),
        completions_as: "text".into(),
        python_exe: python.display().to_string(),
        timeout_s: 20.0,
        options: options.as_object().cloned().unwrap_or_default(),
    })
}

fn answer(code: &str) -> String {
    format!("\n</think>\n<answer>\n```python\n{code}\n```\n</answer>")
}

/// The paper's format + ES* written in Python (examples/rewards/recode_rewards.py, TRL style, from
/// the paper's description) gives the built-ins' scores on all 1,781 rows of the ReCode training
/// set, as the completion with its own new_code and with a perturbed one (its old_code, or its
/// new_code where the row has none, with a comment, a blank line and a string holding `#` added),
/// each scored against new_code.
#[test]
fn a_python_recode_reward_equals_the_built_ins_on_every_training_row() {
    let Some(python) = recode_test_support::python("the Python reward parity check") else {
        return;
    };
    let data = root().join("../shared/data/recode-train.jsonl");
    let text = std::fs::read_to_string(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let mut completions = vec![];
    let mut targets = vec![];
    for line in text.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let new = row["new_code"].as_str().unwrap();
        // 21 rows have no old_code: their perturbed answer starts from the new code.
        let old = row["old_code"].as_str().unwrap_or(new);
        completions.push(answer(new));
        targets.push(new.to_string());
        completions.push(answer(&format!(
            "{old}\n# a comment\n\n  \nperturbed = 'x#y'  # trailing"
        )));
        targets.push(new.to_string());
    }
    assert_eq!(completions.len(), 2 * 1781, "every row of the training set, twice");
    let columns: Vec<serde_json::Map<String, Value>> = targets
        .iter()
        .map(|t| json!({ "new_code": t }).as_object().unwrap().clone())
        .collect();
    let inputs: Vec<RewardInput> = completions
        .iter()
        .zip(&targets)
        .zip(&columns)
        .map(|((c, t), col)| RewardInput {
            completion: c,
            target: t,
            columns: Some(col),
            ..Default::default()
        })
        .collect();
    let mut reg = recode_core::registry::Registry::default();
    recode_reward::register(&mut reg);
    let file = "examples/rewards/recode_rewards.py";
    for (builtin, function) in [("format", "format_reward"), ("es_star", "es_star_reward")] {
        let want = reg.reward(builtin).unwrap()(&Default::default())
            .unwrap()
            .score(&inputs)
            .unwrap();
        let py = start(&python, file, function, "trl", json!({})).unwrap();
        let t = std::time::Instant::now();
        let got = py.score(&inputs).unwrap();
        eprintln!(
            "{function}: {} completions in {:.2} s through the worker",
            inputs.len(),
            t.elapsed().as_secs_f64()
        );
        // The per-step cost on the 0.5B recipe: one batch of 8 completions (G = 8), round trip.
        let t = std::time::Instant::now();
        for chunk in inputs.chunks(8).take(50) {
            py.score(chunk).unwrap();
        }
        eprintln!(
            "{function}: {:.2} ms per batch of 8 (mean of 50 round trips)",
            t.elapsed().as_secs_f64() * 1e3 / 50.0
        );
        let bad: Vec<String> = want
            .iter()
            .zip(&got)
            .enumerate()
            .filter(|(_, (w, g))| (*w - *g).abs() > 1e-9)
            .map(|(i, (w, g))| format!("completion {i}: built-in {w}, python {g}"))
            .collect();
        assert!(
            bad.is_empty(),
            "{builtin}: {} of {} differ:\n{}",
            bad.len(),
            want.len(),
            bad[..bad.len().min(10)].join("\n")
        );
        // Not a trivial agreement: the perturbed answers score below the exact ones.
        if builtin == "es_star" {
            assert!(got.iter().any(|s| *s < 1.9) && got.contains(&2.0));
        }
    }
}

#[test]
fn a_trl_reward_reads_a_column_and_none_means_does_not_apply() {
    let Some(python) = recode_test_support::python("TRL-style Python rewards") else {
        return;
    };
    let r = start(
        &python,
        "tests/fixtures/rewards/trl_column.py",
        "reward",
        "trl",
        json!({}),
    )
    .unwrap();
    let cols: Vec<serde_json::Map<String, Value>> = [json!({"min_length": 2}), json!({"min_length": 5}), json!({})]
        .iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
    let ids = [vec![1u32, 2, 3], vec![1, 2], vec![7]];
    let inputs: Vec<RewardInput> = (0..3)
        .map(|i| RewardInput {
            completion: "x",
            completion_ids: &ids[i],
            columns: Some(&cols[i]),
            ..Default::default()
        })
        .collect();
    let out = r.score_items(&inputs).unwrap();
    assert_eq!(out.scores, vec![Some(1.0), Some(0.0), None]);
    // Where a score is required (held-out scoring), None is an error that says so.
    let err = r.score(&inputs).unwrap_err().to_string();
    assert!(err.contains("returned None for item 2"), "{err}");
    // Options are keyword arguments.
    let s = start(
        &python,
        "tests/fixtures/rewards/trl_column.py",
        "scaled",
        "trl",
        json!({"scale": 0.5}),
    )
    .unwrap();
    assert_eq!(s.score(&inputs[..1]).unwrap(), vec![0.5]);
}

#[test]
fn a_verl_compute_score_returns_a_score_and_metrics() {
    let Some(python) = recode_test_support::python("verl-style Python rewards") else {
        return;
    };
    let r = start(
        &python,
        "examples/rewards/verl_recode.py",
        "compute_score",
        "verl",
        json!({}),
    )
    .unwrap();
    let good = answer("x = 1");
    let inputs = [
        RewardInput {
            completion: &good,
            target: "x = 1",
            ..Default::default()
        },
        RewardInput {
            completion: "no answer",
            target: "x = 1",
            ..Default::default()
        },
    ];
    let out = r.score_items(&inputs).unwrap();
    assert_eq!(out.scores, vec![Some(3.0), Some(-3.0)]);
    let metric = |k: &str| out.metrics.iter().find(|m| m.0 == k).unwrap().1;
    assert_eq!(metric("format"), 0.0);
    assert_eq!(metric("es_star"), 0.0);
}

/// Every error names the reward's file and function and says what was expected; none is a
/// silent 0.
#[test]
fn every_python_reward_error_is_a_clear_message() {
    let Some(python) = recode_test_support::python("Python reward errors") else {
        return;
    };
    let broken = "tests/fixtures/rewards/broken.py";
    let input = [RewardInput {
        completion: "x",
        ..Default::default()
    }];
    let err_start = |file: &str, f: &str, style: &str| match start(&python, file, f, style, json!({})) {
        Ok(_) => panic!("{file}:{f} started"),
        Err(e) => format!("{e:#}"),
    };
    let e = err_start("tests/fixtures/rewards/missing.py", "reward", "trl");
    assert!(e.contains("missing.py") && e.contains("does not exist"), "{e}");
    let e = err_start(broken, "absent", "trl");
    assert!(e.contains("has no function `absent`") && e.contains("raises"), "{e}");
    let e = err_start(broken, "wrong_signature", "trl");
    assert!(e.contains("takes no `completions`") && e.contains("broken.py"), "{e}");
    let e = err_start(broken, "compute_score_without_ground_truth", "verl");
    assert!(e.contains("takes no `ground_truth`"), "{e}");
    let e = err_start(broken, "raises", "grpo");
    assert!(e.contains("style: expected \"trl\" or \"verl\""), "{e}");

    let err_score = |f: &str| -> String {
        let r = start(&python, broken, f, "trl", json!({})).unwrap();
        let t = std::time::Instant::now();
        let e = format!("{:#}", r.score_items(&input).unwrap_err());
        assert!(t.elapsed().as_secs_f64() < 30.0, "{f} took {:?}", t.elapsed());
        assert!(e.contains("broken.py:") && e.contains(f), "{e}");
        e
    };
    let e = err_score("raises");
    assert!(
        e.contains("ZeroDivisionError") && e.contains("Traceback") && e.contains("line"),
        "{e}"
    );
    let r = start(&python, broken, "wrong_length", "trl", json!({})).unwrap();
    let two = [input[0].clone(), input[0].clone()];
    let e = format!("{:#}", r.score_items(&two).unwrap_err());
    assert!(e.contains("returned 1 scores for 2 completions"), "{e}");
    let e = err_score("wrong_type");
    assert!(e.contains("item 0: expected a float or None, got str"), "{e}");
    let e = err_score("not_a_list");
    assert!(e.contains("expected a list of 1 floats"), "{e}");
    let e = err_score("nan");
    assert!(e.contains("not a finite number"), "{e}");
    let e = err_score("dies");
    assert!(e.contains("the worker died") && e.contains("exit status: 3"), "{e}");
    let r = PythonReward::start(PythonRewardConfig {
        path: root().join(broken).display().to_string(),
        module: String::new(),
        function: "hangs".into(),
        style: "trl".into(),
        completions_as: "text".into(),
        python_exe: python.display().to_string(),
        timeout_s: 1.0,
        options: Default::default(),
    })
    .unwrap();
    let e = format!("{:#}", r.score_items(&input).unwrap_err());
    assert!(e.contains("no answer within 1 s") && e.contains("timeout_s"), "{e}");
}

fn recode(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_recode"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// A TRL-style and a verl-style reward file train the tiny model through `recode run`, and a sweep
/// whose two variants differ in a Python reward's options runs both; `recode validate` imports
/// the file and refuses a missing function without running a step.
#[test]
fn python_rewards_train_through_run_and_sweep_and_validate_checks_them() {
    let Some(python) = recode_test_support::python("training with Python rewards") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = format!("run.output_dir={:?}", dir.path().display().to_string());
    let exe = format!("{:?}", python.display().to_string());
    let trl = format!(
        "reward=[{{python=\"tests/fixtures/rewards/trl_column.py\", function=\"scaled\", python_exe={exe}, options={{scale=0.1}}}}]"
    );
    let verl = format!("reward=[{{python=\"examples/rewards/verl_recode.py\", style=\"verl\", python_exe={exe}}}]");
    for (name, reward) in [("py-trl", &trl), ("py-verl", &verl)] {
        let run_name = format!("run.name=\"{name}\"");
        let (ok, log) = recode(&[
            "run",
            "experiments/tiny-grpo.toml",
            "--set",
            &out,
            "--set",
            &run_name,
            "--set",
            reward,
            "--set",
            "training.steps=2",
        ]);
        assert!(ok, "{name}: {log}");
        let run_dir = PathBuf::from(
            log.lines()
                .find_map(|l| l.strip_prefix("run directory: "))
                .unwrap()
                .trim(),
        );
        let metrics = std::fs::read_to_string(dir.path().join(&run_dir).join("metrics.jsonl"))
            .or_else(|_| std::fs::read_to_string(run_dir.join("metrics.jsonl")))
            .unwrap();
        let last: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
        let label = if name == "py-trl" { "scaled" } else { "compute_score" };
        assert!(last[format!("reward/{label}/mean")].is_number(), "{name}: {last}");
        if name == "py-trl" {
            // The worker's stderr is in the run's log.
            let log = std::fs::read_to_string(run_dir.join("log.txt")).unwrap();
            assert!(
                log.contains("[python reward") && log.contains("trl_column.py imported"),
                "{log}"
            );
        }
        if name == "py-verl" {
            assert!(last["reward/compute_score/es_star"].is_number(), "{last}");
        }
    }
    // validate imports the file: a missing function is refused before any step.
    let bad_spec = dir.path().join("bad.toml");
    std::fs::write(
        &bad_spec,
        format!(
            "extends = [{:?}]\nreward = [{{ python = \"tests/fixtures/rewards/trl_column.py\", function = \"nope\", python_exe = {exe} }}]\n",
            root().join("experiments/tiny-grpo.toml").display().to_string()
        ),
    )
    .unwrap();
    let (ok, log) = recode(&["validate", bad_spec.to_str().unwrap()]);
    assert!(!ok && log.contains("has no function `nope`"), "{log}");

    // A sweep over a Python reward's option.
    let sweep = dir.path().join("py-sweep.toml");
    let variant = |name: &str, scale: f64| {
        format!(
            "[[variant]]\nname = \"{name}\"\nset = {{ reward = [{{ python = \"tests/fixtures/rewards/trl_column.py\", function = \"scaled\", python_exe = {exe}, options = {{ scale = {scale:?} }} }}] }}\n"
        )
    };
    let text = format!(
        "base = {:?}\nset = {{ \"training.steps\" = 2 }}\n{}{}[[variant]]\nname = \"verl\"\nset = {{ reward = [{{ python = \"examples/rewards/verl_recode.py\", style = \"verl\", python_exe = {exe} }}] }}\n",
        root().join("experiments/tiny-grpo.toml").display().to_string(),
        variant("scale-a", 0.1),
        variant("scale-b", -0.1)
    );
    std::fs::write(&sweep, text).unwrap();
    let sweep_dir = dir.path().join("sweep-out");
    let (ok, log) = recode(&["sweep", sweep.to_str().unwrap(), "--out", sweep_dir.to_str().unwrap()]);
    assert!(ok, "{log}");
    let summary = std::fs::read_to_string(sweep_dir.join("summary.csv")).unwrap();
    assert!(
        summary.contains("scale-a") && summary.contains("scale-b") && summary.contains("verl"),
        "{summary}"
    );
    let record = std::fs::read_to_string(sweep_dir.join("sweep.json")).unwrap();
    assert_eq!(record.matches("\"finished\"").count(), 3, "{record}");
}

#[test]
fn recode_plugins_lists_python_reward_files_beside_the_built_ins() {
    let (ok, out) = recode(&["plugins", "--dir", "examples/rewards"]);
    assert!(ok, "{out}");
    for (name, style) in [
        ("format_reward", "trl"),
        ("es_star_reward", "trl"),
        ("compute_score", "verl"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(name) && l.contains(&format!("({style} style)"))),
            "{name}: {out}"
        );
    }
    // Helpers that take no completions are not rewards.
    assert!(!out.contains("levenshtein"), "{out}");
    assert!(out.contains("es_star") && out.contains("built-in"), "{out}");
}
