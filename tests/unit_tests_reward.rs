//! The `unit_tests` reward: the answer's program runs with the row's tests in the evaluation
//! sandbox. Reference answers pass, old code fails where its behaviour differs, rows without tests
//! do not apply, hostile completions end as failures (not a crash or a hang), and the tiny model
//! trains with format + unit_tests through `recode run`.

use recode_core::api::{Reward, RewardInput};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Instant;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn reward(options: &str) -> Option<Box<dyn Reward>> {
    let mut reg = recode_core::registry::Registry::default();
    recode_reward::register(&mut reg);
    let options: recode_core::spec::Options = toml::from_str(options).unwrap();
    match reg.reward("unit_tests").unwrap()(&options) {
        Ok(r) => Some(r),
        Err(e) => {
            recode_test_support::skip_or_fail_in_ci(&format!("unit_tests reward: {e:#}"));
            None
        }
    }
}

fn rows() -> Vec<serde_json::Map<String, Value>> {
    std::fs::read_to_string(root().join("data/unit-tests-sample.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap().as_object().unwrap().clone())
        .collect()
}

fn answer(code: &str) -> String {
    format!("\n</think>\n<answer>\n```python\n{code}\n```\n</answer>")
}

#[test]
fn reference_answers_pass_old_code_fails_where_it_differs_and_rows_without_tests_do_not_apply() {
    let Some(r) = reward("workers = 2") else { return };
    let rows = rows();
    let completions: Vec<String> = rows
        .iter()
        .flat_map(|row| {
            [
                answer(row["new_code"].as_str().unwrap()),
                answer(row["old_code"].as_str().unwrap()),
            ]
        })
        .collect();
    let no_tests = serde_json::Map::new();
    let mut inputs: Vec<RewardInput> = completions
        .iter()
        .enumerate()
        .map(|(i, c)| RewardInput {
            completion: c,
            columns: Some(&rows[i / 2]),
            ..Default::default()
        })
        .collect();
    inputs.push(RewardInput {
        completion: "x",
        columns: Some(&no_tests),
        ..Default::default()
    });
    let out = r.score_items(&inputs).unwrap();
    let s: Vec<Option<f64>> = out.scores;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(s[2 * i], Some(1.0), "reference answer of `{}`", row["description"]);
    }
    // itertools.pairwise: zip(xs, xs[1:]) fails on an iterator (1 of 3 tests); math.prod: reduce
    // fails on an empty list (1 of 3).
    let old: Vec<Option<f64>> = (0..rows.len()).map(|i| s[2 * i + 1]).collect();
    assert_eq!(old[1], Some(2.0 / 3.0), "{old:?}");
    assert_eq!(old[2], Some(2.0 / 3.0), "{old:?}");
    assert_eq!(old[0], Some(1.0), "{old:?}");
    assert_eq!(s[s.len() - 1], None, "a row without tests");
    let strict = reward("all_or_nothing = true").unwrap();
    assert_eq!(strict.score(&inputs[2..4]).unwrap(), vec![1.0, 0.0]);
}

/// Completions that attack the host, hang, exhaust memory or processes, flood output or kill
/// their own harness: each scores 0 within the time limits, and a good answer still scores 1
/// after them.
#[test]
fn hostile_completions_score_zero_and_never_crash_or_hang_the_reward() {
    let Some(r) = reward("timeout_s = 2.0\nworkers = 2") else {
        return;
    };
    let row = rows().remove(0); // strip_scheme
    let canary = tempfile::tempdir().unwrap();
    let file = canary.path().join("canary.txt");
    std::fs::write(&file, "untouched").unwrap();
    let attacks = [
        "def strip_scheme(url):\n    while True:\n        pass".to_string(),
        "import os\nwhile True:\n    os.fork()".to_string(),
        "x = bytearray(1 << 40)\ndef strip_scheme(url):\n    return url".to_string(),
        "import sys\nsys.stdout.write('x' * (1 << 28))\ndef strip_scheme(url):\n    return url".to_string(),
        "import os\nos._exit(0)".to_string(),
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef strip_scheme(url):\n    return None".to_string(),
        format!("import shutil\nshutil.rmtree({:?}, ignore_errors=True)\nopen({:?}, 'w').write('owned')\ndef strip_scheme(url):\n    raise SystemExit(0)", canary.path().display().to_string(), file.display().to_string()),
        "class S(str):\n    def __eq__(self, o):\n        return True\ndef strip_scheme(url):\n    return S()".to_string(),
    ];
    let completions: Vec<String> = attacks.iter().map(|a| answer(a)).collect();
    let mut inputs: Vec<RewardInput> = completions
        .iter()
        .map(|c| RewardInput {
            completion: c,
            columns: Some(&row),
            ..Default::default()
        })
        .collect();
    let good = answer(row["new_code"].as_str().unwrap());
    inputs.push(RewardInput {
        completion: &good,
        columns: Some(&row),
        ..Default::default()
    });
    let t = Instant::now();
    let scores = r.score(&inputs).unwrap();
    let took = t.elapsed().as_secs_f64();
    eprintln!("hostile scores {scores:?} in {took:.1} s");
    // The always-equal string is the harness's known limit (documented in docs/evaluation.md):
    // `==` on a remote object runs the candidate's __eq__, so it may pass `==` tests.
    for (i, s) in scores[..attacks.len() - 1].iter().enumerate() {
        assert_eq!(*s, 0.0, "attack {i} scored {s}:\n{}", attacks[i]);
    }
    assert_eq!(scores[attacks.len()], 1.0, "the good answer after the attacks");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "untouched");
    // 9 programs of 3 tests at 2 s a test, two at a time: well under the worst case.
    assert!(took < 60.0, "took {took} s");
}

#[test]
fn the_tiny_model_trains_with_format_and_unit_tests() {
    if reward("workers = 1").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_recode"))
        .current_dir(root())
        .args([
            "run",
            "experiments/tiny-unit-tests.toml",
            "--set",
            &format!("run.output_dir={:?}", dir.path().display().to_string()),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let run_dir = err
        .lines()
        .find_map(|l| l.strip_prefix("run directory: "))
        .map(|l| PathBuf::from(l.trim()))
        .unwrap();
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let m = l["reward/unit_tests/mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&m), "{l}");
        assert!(l["time/scoring_s"].as_f64().unwrap() > 0.0);
    }
}
