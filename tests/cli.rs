//! The `recode` binary end to end: specs, plugins loaded by path, rewards, data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn recode(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recode"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run recode")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn toml_files(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_spec_validates() {
    let mut files = toml_files("experiments");
    files.extend(toml_files("configs"));
    files.extend(toml_files("ablations"));
    assert!(files.len() >= 10, "{files:?}");
    let mut args = vec!["validate", "--quiet"];
    args.extend(files.iter().map(String::as_str));
    let o = recode(&args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for f in &files {
        assert!(out.contains(&format!("ok: {f}")), "{f} not reported ok:\n{out}");
    }
}

#[test]
fn validate_prints_provenance() {
    let o = recode(&["validate", "experiments/tiny-grpo.toml"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("configs/tiny-model.toml"), "{out}");
    assert!(out.contains("# built-in default"), "{out}");
}

fn write_spec(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("spec.toml");
    let base = root().join("experiments/tiny-grpo.toml");
    std::fs::write(&p, format!("extends = [{:?}]\n{body}", base.display().to_string())).unwrap();
    p
}

#[test]
fn misspelled_key_is_refused_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "[training]\nlearning_rate = 0.1\n");
    let o = recode(&["validate", spec.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains(&spec.display().to_string()), "{err}");
    assert!(
        err.contains("training.learning_rate") && err.contains("unknown field"),
        "{err}"
    );
    // The same spec does not run.
    let o = recode(&["run", spec.to_str().unwrap()]);
    assert!(!o.status.success());
}

#[test]
fn every_range_and_name_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "[training]\nlr = 2.0\n[generation]\ntop_p = 0.0\n[algorithm]\nname = \"ppo\"\n[data]\npath = \"nope.jsonl\"\n",
    );
    let (_, err) = text(&recode(&["validate", spec.to_str().unwrap()]));
    for needle in [
        "training.lr",
        "generation.top_p",
        "unknown algorithm plugin `ppo`",
        "data.path",
        "nope.jsonl",
    ] {
        assert!(err.contains(needle), "missing {needle}:\n{err}");
    }
    // Plugin options are checked too.
    let spec = write_spec(dir.path(), "[algorithm.options]\nbetta = 0.1\n");
    let (_, err) = text(&recode(&["validate", spec.to_str().unwrap()]));
    assert!(err.contains("betta"), "{err}");
}

fn cc_plugin(src: &str, dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    let out = dir.join(format!("lib{name}.so"));
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1"])
        .arg(format!("-I{}", root().join("include").display()))
        .args(defines.iter().map(|d| format!("-D{d}")))
        .arg(root().join(src))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("cc is required");
    assert!(st.success());
    out
}

#[test]
fn c_and_rust_reward_plugins_load_by_path_and_score() {
    let dir = tempfile::tempdir().unwrap();
    let c_lib = cc_plugin(
        "examples/plugins/c-reward/keyword_reward.c",
        dir.path(),
        "keyword_reward",
        &[],
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(root().join("examples/plugins/rust-reward/Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.path().join("rust-target"))
        .status()
        .unwrap();
    assert!(st.success());
    let rust_lib = dir.path().join("rust-target/debug/librecode_example_rust_reward.so");
    std::fs::copy(&rust_lib, dir.path().join("librust_reward.so")).unwrap();
    let rust_lib = dir.path().join("librust_reward.so");

    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"completion\": \"import numpy\\na = 1\", \"target\": \"a = 1\\nb = 2\"}\n{\"completion\": \"nothing\", \"target\": \"a = 1\"}\n",
    )
    .unwrap();
    let c_arg = c_lib.display().to_string();
    let rust_arg = format!("{}:0.5", rust_lib.display());
    let o = recode(&[
        "reward",
        "score",
        "--reward",
        &c_arg,
        "--reward",
        &rust_arg,
        "--input",
        input.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    // keyword "import": 1 then 0; target-line overlap: 1 of 2 target lines, then 1 of 1 line.
    assert_eq!(lines[0]["components"]["keyword_reward"], 1.0);
    assert_eq!(lines[0]["components"]["rust_reward"], 0.5);
    assert_eq!(lines[0]["reward"], 1.25);
    assert_eq!(lines[1]["components"]["keyword_reward"], 0.0);
    assert_eq!(lines[1]["components"]["rust_reward"], 0.0);

    // Named in a spec, the plugins validate; `recode plugins` lists them beside the built-ins.
    let spec = write_spec(
        dir.path(),
        &format!(
            "[[reward]]\nname = {:?}\n[[reward]]\nname = {:?}\nweight = 0.5\n",
            c_arg,
            rust_lib.display().to_string()
        ),
    );
    let o = recode(&["validate", "--quiet", spec.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o).1);
    let (out, _) = text(&recode(&["plugins", "--dir", dir.path().to_str().unwrap()]));
    for needle in ["c-keyword", "rust-target-overlap", "es_star", "grpo", "transformer"] {
        assert!(out.contains(needle), "{needle} missing from:\n{out}");
    }
}

#[test]
fn builtin_rewards_score_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    // Exact answer: format +1, es_star 3.5*1 - 1.5 = 2. No block: format -1, es_star -2.
    let good = "reasoning</think>\n<answer>\n```python\nx = 1\n```\n</answer>";
    std::fs::write(
        &input,
        format!(
            "{}\n{}\n",
            serde_json::json!({"completion": good, "target": "x = 1"}),
            serde_json::json!({"completion": "no code", "target": "x = 1"})
        ),
    )
    .unwrap();
    let o = recode(&[
        "reward",
        "score",
        "--reward",
        "format",
        "--reward",
        "es_star",
        "--input",
        input.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["reward"], 3.0);
    assert_eq!(lines[1]["reward"], -3.0);
    let o = recode(&[
        "reward",
        "score",
        "--reward",
        "no_such_reward",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(text(&o).1.contains("unknown reward `no_such_reward`"));
}

#[test]
fn mismatched_model_plugin_is_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let lib = cc_plugin(
        "core/tests/plugin_fixtures/bad.c",
        dir.path(),
        "model_plugin",
        &["FINGERPRINT=\"recode-core 0.0.1; rustc 1.0.0; burn 0.1.0\""],
    );
    let spec = write_spec(
        dir.path(),
        &format!("[model]\nplugin = {:?}\n", lib.display().to_string()),
    );
    let o = recode(&[
        "run",
        spec.to_str().unwrap(),
        "--set",
        &format!("run.output_dir={:?}", dir.path().display().to_string()),
    ]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("model plugin was built for") && err.contains("burn 0.1.0") && err.contains("rebuild"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn data_inspect_counts_the_shipped_sample() {
    let o = recode(&["data", "inspect", "data/sample-migrations.jsonl", "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v["totals"]["rows"].as_u64().unwrap();
    assert!(rows >= 40, "{v}");
}

fn eval_json(args: &[&str], out: &Path) -> serde_json::Value {
    let mut all = args.to_vec();
    let out_s = out.display().to_string();
    all.extend(["--out", &out_s]);
    let o = recode(&all);
    let (stdout, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(stdout.contains("| **overall** |"), "Markdown table printed:\n{stdout}");
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn eval_reference_passes_and_wrong_candidates_fail() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let r = eval_json(
        &[
            "eval",
            "--bench",
            "cua",
            "--data",
            "data/cua-sample.jsonl",
            "--reference",
        ],
        &out,
    );
    assert_eq!(r["overall"]["pass_at_k"]["pass@1"], 1.0, "{}", r["overall"]);
    let h = eval_json(
        &[
            "eval",
            "--bench",
            "humaneval",
            "--data",
            "data/humaneval-sample.jsonl",
            "--reference",
        ],
        &out,
    );
    assert_eq!(h["overall"]["pass_at_k"]["pass@1"], 1.0, "{}", h["overall"]);

    // Two samples per problem: one wrong answer and the reference itself, wrapped as a model
    // would write it; pass@1 = 1/2 for every problem.
    let ids: Vec<String> = r["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    let problems = recode_core_free_references("data/cua-sample.jsonl");
    let mut lines = String::new();
    for id in &ids {
        lines.push_str(&serde_json::json!({"id": id, "completion": "<answer>\n```python\ndef nothing():\n    return None\n```\n</answer>"}).to_string());
        lines.push('\n');
        let reference = &problems[id];
        lines.push_str(&serde_json::json!({"id": id, "completion": format!("</think>\n<answer>\n```python\n{reference}\n```\n</answer>")}).to_string());
        lines.push('\n');
    }
    let cands = dir.path().join("c.jsonl");
    std::fs::write(&cands, lines).unwrap();
    let c = eval_json(
        &[
            "eval",
            "--bench",
            "cua",
            "--data",
            "data/cua-sample.jsonl",
            "--candidates",
            cands.to_str().unwrap(),
            "--n",
            "2",
            "--k",
            "1,2",
        ],
        &out,
    );
    assert_eq!(c["overall"]["pass_at_k"]["pass@1"], 0.5, "{}", c["overall"]);
    assert_eq!(c["overall"]["pass_at_k"]["pass@2"], 1.0, "{}", c["overall"]);
}

/// Reference solutions of the final-format CodeUpdateArena sample, read independently of the harness.
fn recode_core_free_references(path: &str) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                v["prog_syn_id"].as_str().unwrap().to_string(),
                v["ref_solution"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The WGPU path on tiny tensors: runs on Mesa's lavapipe (CPU Vulkan) where installed, as in CI.
#[test]
fn wgpu_backend_matches_cpu_on_the_tiny_model() {
    let icd = Path::new("/usr/share/vulkan/icd.d");
    let has_vulkan = std::fs::read_dir(icd).map(|d| d.flatten().count() > 0).unwrap_or(false);
    if !has_vulkan {
        recode_test_support::skip_or_fail_in_ci(&format!(
            "WGPU check: no Vulkan driver in {} (.ci/run installs mesa-vulkan-drivers)",
            icd.display()
        ));
        return;
    }
    let score = |backend: &str| -> Vec<f64> {
        let o = recode(&[
            "score",
            "--model",
            "tests/fixtures/tiny-qwen2",
            "--text",
            "task alpha hello",
            "--json",
            "--backend",
            backend,
        ]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{backend}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.as_f64())
            .collect()
    };
    let (cpu, gpu) = (score("cpu"), score("wgpu"));
    assert_eq!(cpu.len(), 15);
    for (a, b) in cpu.iter().zip(&gpu) {
        assert!((a - b).abs() < 1e-4, "cpu {a} vs wgpu {b}");
    }
}

/// Without a terminal (stderr is a pipe here), progress is printed as lines a log file can show.
#[test]
fn progress_is_printed_as_lines_without_a_terminal() {
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_recode"))
            .args(args)
            .current_dir(root())
            .env("RECODE_PROGRESS_SECS", "0")
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        err
    };
    let err = run(&[
        "eval",
        "--bench",
        "cua",
        "--data",
        "data/cua-sample.jsonl",
        "--reference",
    ]);
    assert!(
        err.lines()
            .any(|l| l.starts_with("execute: 4/4 problems, ") && l.contains("elapsed")),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out_dir = format!("run.output_dir={:?}", dir.path().display().to_string());
    let err = run(&[
        "run",
        "experiments/tiny-grpo.toml",
        "--set",
        "training.steps=2",
        "--set",
        "logging.progress=true",
        "--set",
        &out_dir,
    ]);
    let first = err
        .lines()
        .find(|l| l.starts_with("train: 1/2 steps, "))
        .unwrap_or_else(|| panic!("no step line:\n{err}"));
    assert!(
        first.contains("about") && first.contains("left") && first.contains("tokens/s"),
        "{first}"
    );
    assert!(err.lines().any(|l| l.starts_with("train: 2/2 steps, ")), "{err}");
}

/// `recode bench step` on an SFT spec times the update alone and says the other phases do not
/// run in SFT.
#[test]
fn bench_step_times_an_sft_spec() {
    let o = recode(&["bench", "step", "experiments/tiny-sft.toml", "--steps", "2"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("SFT (training.mode = \"sft\")"), "{out}");
    assert!(out.contains("generation     not in SFT"), "{out}");
    let update = out.lines().find(|l| l.starts_with("update")).unwrap();
    assert!(
        update.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() > 0.0,
        "{update}"
    );
}
