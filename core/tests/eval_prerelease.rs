//! Self-check on the real CodeUpdateArena pre-release (`../shared`, beside the repository; a skip
//! where it is missing, a failure under CI=true, which has it):
//! reference solutions must pass with the update installed, and mostly fail without it.

use recode_core::eval::cua;
use recode_core::eval::sandbox::{Outcome, SandboxConfig};
use recode_core::eval::{evaluate_reference, load_problems, EvalOptions, Problem};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn data() -> Option<std::path::PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/codeupdatearena-prerelease.jsonl");
    if p.exists() {
        Some(p)
    } else {
        recode_test_support::skip_or_fail_in_ci(&format!(
            "CodeUpdateArena pre-release checks: {} not present",
            p.display()
        ));
        None
    }
}

#[test]
fn loads_all_577_examples_and_splits_tests_like_python() {
    let Some(path) = data() else { return };
    let ex = cua::load(&path).unwrap();
    assert_eq!(ex.len(), 577);
    // Our line-based splitter must agree with Python's own parser on every test file.
    let ours: Vec<Vec<String>> = ex
        .iter()
        .map(|e| e.tests().into_iter().map(|t| t.name).collect())
        .collect();
    let script = "import ast, json, sys\nfor r in map(json.loads, open(sys.argv[1])):\n    for e in r['prog_syn_examples']:\n        t = ast.parse(e['unit_tests'])\n        print(json.dumps([n.name for n in t.body if isinstance(n, ast.FunctionDef) and n.name.startswith('test')]))\n";
    let Some(python) = recode_test_support::python("Python's own test splitter on the pre-release") else {
        return;
    };
    let out = Command::new(python).arg("-c").arg(script).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<Vec<String>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "example {i} ({})", ex[i].prog_syn_id);
    }
    // Every update's install statement can be built.
    for e in &ex {
        e.install_statement().unwrap();
    }
}

#[test]
fn reference_self_check() {
    let Some(path) = data() else { return };
    let problems = load_problems("cua", &path).unwrap();
    let workers = std::env::var("RECODE_EVAL_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(4);
    // The tests' pinned Python (numpy, sympy), so those examples run wherever the tests do.
    let Some(python) = recode_test_support::python("the CodeUpdateArena reference self-check") else {
        return;
    };
    let opts = EvalOptions {
        k: vec![1],
        workers,
        sandbox: SandboxConfig {
            python,
            ..Default::default()
        },
        ..Default::default()
    };
    let t = Instant::now();
    let r = evaluate_reference(&problems, &opts, false).unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!("{}", r.to_markdown());
    let evaluated: Vec<_> = r.problems.iter().filter(|p| p.environment.is_none()).collect();
    let passed = evaluated.iter().filter(|p| p.c == 1).count();
    for (p, prob) in r.problems.iter().zip(&problems) {
        if p.environment.is_none() && p.c == 0 {
            let Problem::Cua(e) = prob else { unreachable!() };
            eprintln!("FAIL {} ({}): {:?}", p.id, e.source, p.samples[0].outcome);
        }
    }
    let skipped: usize = r.problems.iter().filter(|p| p.environment.is_some()).count();
    eprintln!(
        "reference self-check: {passed}/{} pass ({:.1}%), {skipped} environment-skipped, wall {secs:.1}s with {workers} workers",
        evaluated.len(),
        100.0 * passed as f64 / evaluated.len().max(1) as f64
    );
    // torch is not installed here: its examples must be reported as environment, not failures.
    for p in r.problems.iter().filter(|p| p.package == "torch") {
        let torch_missing = p.environment.as_deref().is_some_and(|e| e.contains("torch"));
        assert!(torch_missing || p.samples[0].outcome.counts(), "{}", p.id);
    }
    assert!(!evaluated.is_empty());
    assert!(
        passed as f64 >= 0.95 * evaluated.len() as f64,
        "only {passed}/{} references pass",
        evaluated.len()
    );
    // Without the update, references that use the new API must mostly fail.
    let wo = evaluated.iter().filter(|p| p.c_without_update == Some(1)).count();
    eprintln!("references passing WITHOUT the update: {wo}/{}", evaluated.len());
    assert!((wo as f64) < 0.5 * evaluated.len() as f64);
    assert!(evaluated
        .iter()
        .all(|p| !matches!(p.samples[0].outcome, Outcome::SandboxError { .. })));
}
