//! Builds the example plugins (system `cc`, `cargo`) and misbehaving fixtures, then loads them
//! through `recode_core::plugin_abi` and checks values and error messages.

use recode_core::algo::{self, Aggregation, Clip, PgLossConfig, ScaleRewards};
use recode_core::api::{LossBatch, RewardInput};
use recode_core::plugin_abi::{self, check_model_plugin, check_model_plugin_against, describe, host_fingerprint};
use recode_core::registry::PluginKind;
use recode_core::spec::Options;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `cc -shared -fPIC` one C file into `dir/<name>.so` with the given -D flags.
fn cc(src: &Path, dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    let out = dir.join(format!("lib{name}.so"));
    let include = root().join("include");
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror"])
        .arg(format!("-I{}", include.display()))
        .args(defines.iter().map(|d| format!("-D{d}")))
        .arg(src)
        .arg("-o")
        .arg(&out)
        .arg("-lm")
        .status()
        .expect("the system C compiler `cc` is required for the plugin tests");
    assert!(st.success(), "cc failed for {}", src.display());
    out
}

fn bad(dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    cc(&root().join("core/tests/plugin_fixtures/bad.c"), dir, name, defines)
}

fn opts(s: &str) -> Options {
    toml::from_str(s).unwrap()
}

fn item<'a>(completion: &'a str, target: &'a str, tokens: usize) -> RewardInput<'a> {
    RewardInput {
        prompt: "p",
        completion,
        target,
        completion_tokens: tokens,
        ..Default::default()
    }
}

fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn c_reward_example_scores_and_validates_options() {
    let dir = tempfile::tempdir().unwrap();
    let lib = cc(
        &root().join("examples/plugins/c-reward/keyword_reward.c"),
        dir.path(),
        "kw",
        &[],
    );
    let info = describe(&lib).unwrap();
    assert_eq!(
        (info.kind, info.name.as_str(), info.version.as_str()),
        (PluginKind::Reward, "c-keyword", "0.1.0")
    );
    assert_eq!(info.source, lib.display().to_string());

    let r = plugin_abi::load_reward(&lib, &opts("keyword = \"numpy\"\nmax_tokens = 5")).unwrap();
    assert_eq!(r.name(), "c-keyword");
    let batch = [
        item("import numpy as np", "", 4),
        item("import pandas", "", 2),
        item("numpy", "", 6),
    ];
    assert_eq!(r.score(&batch).unwrap(), vec![1.0, 0.0, 0.0]);
    assert_eq!(r.score(&[]).unwrap(), Vec::<f64>::new());
    // Default keyword "import", no cap.
    let r = plugin_abi::load_reward(&lib, &Options::new()).unwrap();
    assert_eq!(r.score(&batch).unwrap(), vec![1.0, 1.0, 0.0]);

    let e = err_of(plugin_abi::load_reward(&lib, &opts("keyword = \"\"")));
    assert!(
        e.contains("invalid options") && e.contains("keyword") && e.contains("libkw.so"),
        "{e}"
    );
}

#[test]
fn rust_reward_example_scores_and_a_panic_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(root().join("examples/plugins/rust-reward/Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "building examples/plugins/rust-reward failed");
    let lib = dir.path().join("debug/librecode_example_rust_reward.so");
    assert_eq!(describe(&lib).unwrap().name, "rust-target-overlap");

    let r = plugin_abi::load_reward(&lib, &Options::new()).unwrap();
    let target = "a = 1\nb = 2\n";
    let batch = [
        item("x\na = 1\nb = 2\n", target, 3),
        item("a = 1", target, 1),
        item("", target, 0),
    ];
    assert_eq!(r.score(&batch).unwrap(), vec![1.0, 0.5, 0.0]);

    let r = plugin_abi::load_reward(&lib, &opts("panic = true")).unwrap();
    let e = err_of(r.score(&batch));
    assert!(
        e.contains("panic in rust-target-overlap: asked to panic") && e.contains("error code 2"),
        "{e}"
    );
    // The host is still alive and the library still usable.
    let r = plugin_abi::load_reward(&lib, &Options::new()).unwrap();
    assert_eq!(r.score(&batch[..1]).unwrap(), vec![1.0]);
}

#[test]
fn c_algorithm_example_matches_builtin_grpo_without_kl() {
    let dir = tempfile::tempdir().unwrap();
    let lib = cc(
        &root().join("examples/plugins/c-algorithm/grpo_lite.c"),
        dir.path(),
        "grpo_lite",
        &[],
    );
    let a = plugin_abi::load_algorithm(&lib, &opts("epsilon = 0.2")).unwrap();
    assert_eq!(a.name(), "c-grpo-lite");
    assert!(!a.needs_reference());
    assert!(a.keep_group(&[1.0, 1.0]), "no keep_group export: every group is kept");

    let rewards = [1.0, 0.0, 0.5, 0.25, 2.0, 2.0, 2.0, 2.0];
    let got = a.advantages(&rewards, 4).unwrap();
    let want = algo::grpo_advantages(&rewards, 4, ScaleRewards::Group, algo::GRPO_STD_EPS).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
    assert!(err_of(a.advantages(&rewards, 3)).contains("groups of 3"));

    // ρ ≠ 1 on several tokens (both clip sides), a fully masked row, NaN in padding.
    let logp = [
        -1.0,
        -0.5,
        -2.0,
        f32::NAN,
        -0.3,
        -1.2,
        -0.7,
        -3.0,
        -0.4,
        -0.9,
        -1.1,
        -0.2,
    ];
    let old = [-1.3, -0.5, -1.6, -0.1, -0.1, -1.8, -0.7, -3.0, -0.4, -0.9, -1.1, -0.2];
    let mask = [1., 1., 1., 0., 1., 1., 1., 0., 0., 0., 0., 0.];
    let b = LossBatch {
        rows: 3,
        cols: 4,
        logp: &logp,
        old_logp: &old,
        ref_logp: None,
        sampler_logp: None,
        advantages: &[0.8, -1.5, 0.3],
        mask: &mask,
        norm_rows: 6,
        norm_tokens: 9.0,
    };
    let got = a.loss(&b).unwrap();
    let cfg = PgLossConfig {
        clip: Clip {
            eps_low: 0.2,
            eps_high: 0.2,
            dual_clip: None,
        },
        beta: 0.0,
        aggregation: Aggregation::TokenMean,
        rollout_is: Default::default(),
    };
    let want = algo::policy_gradient_loss(&b, &cfg).unwrap();
    assert!((got.loss - want.loss).abs() < 1e-9, "{} vs {}", got.loss, want.loss);
    for (g, w) in got.grad.iter().zip(&want.grad) {
        assert!((g - w).abs() < 1e-6, "{:?} vs {:?}", got.grad, want.grad);
    }
    assert!(want.grad.contains(&0.0) && want.grad.iter().any(|&g| g != 0.0));
    assert_eq!(got.metrics.len(), 1);
    assert_eq!(got.metrics[0].0, "clip_frac");
    assert!((got.metrics[0].1 - want.metrics[0].1).abs() < 1e-12);

    // Bad shapes never reach the plugin.
    let e = err_of(a.loss(&LossBatch {
        advantages: &[0.8],
        ..b.clone()
    }));
    assert!(e.contains("advantages"), "{e}");
    let e = err_of(plugin_abi::load_algorithm(&lib, &opts("epsilon = 2.0")));
    assert!(e.contains("epsilon") && e.contains("libgrpo_lite.so"), "{e}");
}

#[test]
fn misbehaving_reward_plugins_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let batch = [item("a", "", 1), item("b", "", 1), item("c", "", 1)];
    let none = Options::new();

    let nan = bad(dir.path(), "nan", &["MODE=1"]);
    let e = err_of(plugin_abi::load_reward(&nan, &none).unwrap().score(&batch));
    assert!(e.contains("libnan.so") && e.contains("score 1 of 3 is NaN"), "{e}");

    let short = bad(dir.path(), "short", &["MODE=2"]);
    let e = err_of(plugin_abi::load_reward(&short, &none).unwrap().score(&batch));
    assert!(e.contains("score 2 of 3") && e.contains("not written"), "{e}");

    let failing = bad(dir.path(), "failing", &["MODE=3"]);
    let e = err_of(plugin_abi::load_reward(&failing, &none).unwrap().score(&batch));
    assert!(
        e.contains("libfailing.so") && e.contains("judge server unreachable (error code 3)"),
        "{e}"
    );

    let abi = bad(dir.path(), "abi2", &["ABI=2"]);
    let e = err_of(plugin_abi::load_reward(&abi, &none));
    assert!(
        e.contains("libabi2.so") && e.contains("ABI version 2") && e.contains("supports version 1"),
        "{e}"
    );
    assert!(describe(&abi).is_err());

    let missing = bad(dir.path(), "missing", &["NO_SCORE"]);
    let e = err_of(plugin_abi::load_reward(&missing, &none));
    assert!(
        e.contains("libmissing.so")
            && e.contains("missing symbol `recode_reward_score`")
            && e.contains("reward plugin"),
        "{e}"
    );

    let kind = bad(dir.path(), "kind", &["KIND=2"]);
    let e = err_of(plugin_abi::load_reward(&kind, &none));
    assert!(
        e.contains("libkind.so") && e.contains("is a algorithm plugin") && e.contains("reward plugin was expected"),
        "{e}"
    );
    let e = err_of(plugin_abi::load_algorithm(&bad(dir.path(), "rew", &[]), &none));
    assert!(
        e.contains("is a reward plugin") && e.contains("algorithm plugin was expected"),
        "{e}"
    );

    let e = err_of(plugin_abi::load_reward(&dir.path().join("nope.so"), &none));
    assert!(e.contains("cannot load plugin library") && e.contains("nope.so"), "{e}");
    // A shared library that is not a plugin at all.
    let not_plugin = dir.path().join("plain.c");
    std::fs::write(&not_plugin, "int f(void) { return 1; }\n").unwrap();
    let e = err_of(describe(&cc(&not_plugin, dir.path(), "plain", &[])));
    assert!(e.contains("missing symbol `recode_plugin_info`"), "{e}");
}

#[test]
fn misbehaving_algorithm_plugins_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let none = Options::new();
    let mask = [1.0, 0.0];
    let b = LossBatch {
        rows: 1,
        cols: 2,
        logp: &[-1.0, -1.0],
        old_logp: &[-1.0, -1.0],
        ref_logp: None,
        sampler_logp: None,
        advantages: &[1.0],
        mask: &mask,
        norm_rows: 1,
        norm_tokens: 1.0,
    };
    let ok = plugin_abi::load_algorithm(&bad(dir.path(), "algo_ok", &["KIND=2", "ALGO"]), &none).unwrap();
    assert_eq!(ok.loss(&b).unwrap().grad, vec![0.25, 0.0]);

    let short =
        plugin_abi::load_algorithm(&bad(dir.path(), "algo_short", &["KIND=2", "ALGO", "MODE=4"]), &none).unwrap();
    let e = err_of(short.advantages(&[1.0, 2.0], 2));
    assert!(e.contains("libalgo_short.so") && e.contains("advantage 1 of 2"), "{e}");

    let nan = plugin_abi::load_algorithm(&bad(dir.path(), "algo_nan", &["KIND=2", "ALGO", "MODE=5"]), &none).unwrap();
    let e = err_of(nan.loss(&b));
    assert!(e.contains("gradient 0 of 2 is NaN"), "{e}");

    let masked =
        plugin_abi::load_algorithm(&bad(dir.path(), "algo_masked", &["KIND=2", "ALGO", "MODE=6"]), &none).unwrap();
    let e = err_of(masked.loss(&b));
    assert!(e.contains("gradient 1 is 1 at a masked token"), "{e}");
}

#[test]
fn model_plugin_fingerprint_mismatch_is_refused() {
    let host = host_fingerprint();
    assert_eq!(host, plugin_abi::fingerprint_for(plugin_abi::BURN_VERSION));
    assert!(
        host.starts_with("recode-core ") && host.contains("; rustc 1.") && host.ends_with("; burn 0.21.0"),
        "{host}"
    );

    let dir = tempfile::tempdir().unwrap();
    let wrong = bad(
        dir.path(),
        "model_wrong",
        &[
            "KIND=3",
            "NO_SCORE",
            "FINGERPRINT=\"recode-core 0.0.1; rustc 1.70.0; burn 0.13.0\"",
        ],
    );
    let e = err_of(check_model_plugin(&wrong));
    assert!(
        e.contains("libmodel_wrong.so")
            && e.contains("recode-core 0.0.1; rustc 1.70.0; burn 0.13.0")
            && e.contains(&host),
        "{e}"
    );

    let define = format!("FINGERPRINT=\"{host}\"");
    let right = bad(dir.path(), "model_right", &["KIND=3", "NO_SCORE", &define]);
    check_model_plugin(&right).unwrap();
    assert!(check_model_plugin_against(&right, &plugin_abi::fingerprint_for("burn 0.22.1")).is_err());
    assert_eq!(describe(&right).unwrap().kind, PluginKind::Model);

    let e = err_of(check_model_plugin(&bad(dir.path(), "not_model", &[])));
    assert!(
        e.contains("missing symbol `recode_model_plugin_abi_fingerprint`"),
        "{e}"
    );
}
