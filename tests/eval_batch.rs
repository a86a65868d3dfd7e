//! Evaluation generates in batches across problems and samples; each row has its own seed, so
//! the tiny model (tests/fixtures/tiny-qwen2) gives the same completions and the same report at
//! batch sizes 1, 5 and 8.

use recode_core::api::Policy;
use recode_core::eval::{self, EvalOptions, EvalReport, Problem};
use recode_core::registry::{ModelContext, Registry};
use recode_core::spec::{AdapterKind, BackendSpec, EvalSpec, ModelSpec, TrainingSpec};
use std::path::PathBuf;

const TEMPLATE: &str = "{% for m in messages %}{{ m.content }}{% endfor %}";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_policy() -> Box<dyn Policy> {
    let mut reg = Registry::default();
    recode_model::register(&mut reg);
    let mut spec = ModelSpec {
        path: root().join("tests/fixtures/tiny-qwen2").display().to_string(),
        ..ModelSpec::default()
    };
    spec.adapter.kind = AdapterKind::None;
    let ctx = ModelContext {
        spec: &spec,
        backend: &BackendSpec::default(),
        training: &TrainingSpec::default(),
        seed: 1,
    };
    reg.model("transformer").expect("built-in transformer")(&ctx).expect("tiny model")
}

fn problems(bench: &str, file: &str) -> Vec<Problem> {
    eval::load_problems(bench, &root().join(file)).unwrap()
}

fn run(policy: &mut dyn Policy, problems: &[Problem], bench: &str, batch: usize) -> (EvalReport, eval::GenStats) {
    // Temperature 1: every sample differs, so equal reports mean the same draws per row.
    let spec = EvalSpec {
        benchmark: bench.into(),
        n_samples: 3,
        k: vec![1, 3],
        temperature: 1.0,
        max_new_tokens: 12,
        batch_size: batch,
        ..EvalSpec::default()
    };
    let opts = EvalOptions {
        benchmark: bench.into(),
        ..EvalOptions::from_spec(&spec)
    };
    eval::evaluate_policy(policy, problems, &spec, &opts, 7, Some(TEMPLATE), false).unwrap()
}

/// Everything of a report that does not depend on timing.
fn comparable(r: &EvalReport) -> Vec<String> {
    let mut v = vec![format!("{:?} {:?}", r.overall, r.outcomes)];
    for p in &r.problems {
        v.push(format!("{} {:?}", p.id, p.pass_at_k));
        for s in &p.samples {
            v.push(format!(
                "{:?} | {:?} | {:?} | {}/{}",
                s.completion, s.outcome, s.without_update, s.tests_passed, s.tests_total
            ));
        }
    }
    v
}

#[test]
fn batch_size_does_not_change_completions_or_report() {
    let mut policy = tiny_policy();
    for (bench, file) in [
        ("cua", "data/cua-sample.jsonl"),
        ("humaneval", "data/humaneval-sample.jsonl"),
    ] {
        let probs = problems(bench, file);
        let rows = 3 * probs.len();
        let (one, g1) = run(policy.as_mut(), &probs, bench, 1);
        assert_eq!(g1.batches, rows);
        let want = comparable(&one);
        // Samples of one problem really differ, so the comparison is not of constants.
        let texts: Vec<&Option<String>> = one.problems[0].samples.iter().map(|s| &s.completion).collect();
        assert!(texts[0] != texts[1] || texts[1] != texts[2], "{texts:?}");
        for batch in [5, 8] {
            let (r, g) = run(policy.as_mut(), &probs, bench, batch);
            assert_eq!(g.batches, rows.div_ceil(batch), "{bench} batch {batch}");
            assert_eq!((g.rows, g.tokens), (g1.rows, g1.tokens), "{bench} batch {batch}");
            let got = comparable(&r);
            let first_diff = want.iter().zip(&got).position(|(a, b)| a != b);
            assert!(
                first_diff.is_none() && want.len() == got.len(),
                "{bench}, batch {batch} vs 1, first difference: {:?}",
                first_diff.map(|i| (&want[i], &got[i]))
            );
        }
    }
}
