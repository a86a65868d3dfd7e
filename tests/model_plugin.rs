//! A Rust model plugin loaded at run time: examples/plugins/rust-model (a window-MLP language
//! model in burn), built by cargo as a dev-dependency of these tests, so with the same compiler,
//! features and shared burn library as the `recode` binary under test.
//!
//! What it proves: the plugin's autodiff graph and the host's training loop share one burn, so
//! gradients computed inside the plugin reach its parameters and the reward improves.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The plugin library cargo built next to this test binary (target/<profile>/deps).
fn plugin_library() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&deps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("librecode_example_model") && n.ends_with(".so")
        })
        .collect();
    found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    found
        .pop()
        .unwrap_or_else(|| panic!("librecode_example_model*.so not found in {}", deps.display()))
}

fn recode(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_recode"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn similarity(run_dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["reward/similarity/mean"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn plugins_command_lists_the_rust_model_plugin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin_library(), dir.path().join("libwindow_mlp.so")).unwrap();
    let o = recode(&["plugins", "--json", "--dir", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let all: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let p = all
        .iter()
        .find(|p| p["name"] == "window-mlp")
        .unwrap_or_else(|| panic!("not listed: {all:?}\n{err}"));
    assert_eq!(p["kind"], "model");
    assert_eq!(p["version"], "0.1.0");
    assert!(p["source"].as_str().unwrap().ends_with("libwindow_mlp.so"));
}

#[test]
fn a_rust_model_plugin_trains_through_recode_run() {
    let dir = tempfile::tempdir().unwrap();
    let lib = plugin_library();
    let o = Command::new(env!("CARGO_BIN_EXE_recode"))
        .current_dir(root())
        .args(["run", "experiments/tiny-grpo.toml"])
        .args([
            "--set",
            &format!("run.output_dir={:?}", dir.path().display().to_string()),
        ])
        .args(["--set", "run.name=\"window-mlp\""])
        .args(["--set", &format!("model.plugin={:?}", lib.display().to_string())])
        .args(["--set", "model.options={context=3, embedding=16, hidden=32}"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("model plugin `window-mlp` 0.1.0 from"), "{err}");
    let run_dir = PathBuf::from(
        err.lines()
            .find_map(|l| l.strip_prefix("run directory: "))
            .unwrap()
            .trim(),
    );
    let s = similarity(&run_dir);
    let (first, last) = (
        s[..5].iter().sum::<f64>() / 5.0,
        s[s.len() - 5..].iter().sum::<f64>() / 5.0,
    );
    eprintln!("window-mlp plugin, GRPO: similarity {first:.3} -> {last:.3}");
    assert!(
        last > first + 0.15,
        "the plugin model did not learn: {first:.3} -> {last:.3} ({s:?})"
    );
    // Its checkpoints went through the plugin's save.
    let ckpts: Vec<_> = std::fs::read_dir(run_dir.join("checkpoints"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!ckpts.is_empty());
}

#[test]
fn bad_plugin_options_name_the_plugin_and_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let o = recode(&[
        "run",
        "experiments/tiny-grpo.toml",
        "--set",
        &format!("run.output_dir={:?}", dir.path().display().to_string()),
        "--set",
        &format!("model.plugin={:?}", plugin_library().display().to_string()),
        "--set",
        "model.options={window=3}",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("window-mlp") && err.contains("unknown field `window`"),
        "{err}"
    );
}
