//! `recode eval` end to end on the shipped CodeUpdateArena sample: the report keeps every sample,
//! and its samples file re-scores with `--candidates` to the same outcomes.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn eval(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_recode"))
        .args(["eval", "--bench", "cua", "--data", "data/cua-sample.jsonl"])
        .args(args)
        .current_dir(root())
        .output()
        .expect("run recode");
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "recode eval {args:?} failed:\n{out}\n{err}");
    out.into_owned()
}

fn samples(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (id, passed, outcome kind, program) of every sample.
fn outcomes(lines: &[Value]) -> Vec<(String, bool, String, String)> {
    lines
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            (
                s("id"),
                l["passed"].as_bool().unwrap(),
                l["outcome"]["kind"].as_str().unwrap().to_string(),
                s("program"),
            )
        })
        .collect()
}

#[test]
fn samples_file_rescores_to_the_same_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let problems: Vec<Value> = std::fs::read_to_string(root().join("data/cua-sample.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Completions as a model writes them: the reference in an <answer> block, and one wrong one.
    let mut cands = String::new();
    for p in &problems {
        let c = format!(
            "<think>ok</think>\n<answer>\n```python\n{}```\n</answer>",
            p["ref_solution"].as_str().unwrap()
        );
        cands.push_str(&serde_json::json!({"id": p["prog_syn_id"], "completion": c}).to_string());
        cands.push('\n');
    }
    let wrong = "```python\ndef squared_distance(p, q):\n    return -1\n```";
    cands.push_str(&serde_json::json!({"id": problems[3]["prog_syn_id"], "completion": wrong}).to_string());
    cands.push('\n');
    let cand_path = dir.path().join("cands.jsonl");
    std::fs::write(&cand_path, cands).unwrap();
    let out1 = dir.path().join("first.json");
    eval(&[
        "--candidates",
        cand_path.to_str().unwrap(),
        "--out",
        out1.to_str().unwrap(),
    ]);
    let first = samples(&dir.path().join("first.samples.jsonl"));
    assert_eq!(first.len(), 5);
    let o1 = outcomes(&first);
    assert_eq!(o1.iter().filter(|o| o.1).count(), 4, "{o1:?}");
    assert_eq!((o1[4].1, o1[4].2.as_str()), (false, "failed"));
    assert!(first[4]["completion"].as_str().unwrap().starts_with("```python"));
    assert!(
        first[4]["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("AssertionError"),
        "{}",
        first[4]
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out1).unwrap()).unwrap();
    assert!(
        report["python_env"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with('3')),
        "{}",
        report["python_env"]
    );
    assert_eq!(report["signature_imports"], true);

    // Re-score the samples file itself.
    let out2 = dir.path().join("second.json");
    eval(&[
        "--candidates",
        dir.path().join("first.samples.jsonl").to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]);
    let second = samples(&dir.path().join("second.samples.jsonl"));
    assert_eq!(outcomes(&second), o1);
    assert_eq!(second[4]["completion"], first[4]["completion"]);

    // A reference run's samples have no completion; their programs re-score as they are.
    let out3 = dir.path().join("ref.json");
    eval(&["--reference", "--out", out3.to_str().unwrap()]);
    let refs = samples(&dir.path().join("ref.samples.jsonl"));
    assert!(
        refs.iter().all(|l| l["completion"].is_null() && l["passed"] == true),
        "{refs:?}"
    );
    let md = eval(&["--candidates", dir.path().join("ref.samples.jsonl").to_str().unwrap()]);
    assert!(md.contains("| **overall** | 4 | 4 | 0 | 100.0 |"), "{md}");
}
