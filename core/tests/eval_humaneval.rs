//! HumanEval-format evaluation on the shipped sample (and on the real file when present).

use recode_core::eval::humaneval;
use recode_core::eval::sandbox::Outcome;
use recode_core::eval::{evaluate, evaluate_reference, load_problems, EvalOptions, Problem, PromptVariant};
use std::path::{Path, PathBuf};

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/humaneval-sample.jsonl")
}

fn opts() -> EvalOptions {
    EvalOptions {
        k: vec![1, 2],
        workers: 2,
        benchmark: "humaneval".into(),
        ..Default::default()
    }
}

#[test]
fn sample_completions_full_functions_and_wrong_answers() {
    let problems = load_problems("humaneval", &sample_path()).unwrap();
    assert_eq!(problems.len(), 5);
    let Problem::HumanEval(t) = &problems[2] else { panic!() };
    assert_eq!(t.entry_point, "evens");
    let cands: Vec<Vec<String>> = problems
        .iter()
        .map(|p| {
            let Problem::HumanEval(t) = p else { panic!() };
            vec![
                // A body continuing the prompt.
                t.canonical_solution.clone(),
                // A whole function without docstring, as extracted from an <answer> block.
                format!("from typing import List\n\n{}\n{}", def_line(t), t.canonical_solution),
                // Wrong.
                "    return None\n".to_string(),
            ]
        })
        .collect();
    let r = evaluate(&problems, &cands, &opts(), false).unwrap();
    for p in &r.problems {
        assert_eq!(
            (p.n, p.c),
            (3, 2),
            "{}: {:?}",
            p.id,
            p.samples.iter().map(|s| &s.outcome).collect::<Vec<_>>()
        );
        assert!(p.c_without_update.is_none());
        assert!(matches!(p.samples[2].outcome, Outcome::Failed { .. }));
    }
    assert!((r.overall.pass_at_k["pass@1"] - 2.0 / 3.0).abs() < 1e-12);
    assert!((r.overall.pass_at_k["pass@2"] - 1.0).abs() < 1e-12);
    let m = problems[0].prompt_messages(PromptVariant::Recode);
    assert_eq!(m.len(), 2);
    assert!(m[1].content.contains("def add(a: int, b: int) -> int:") && m[1].content.contains("<answer>"));
}

fn def_line(t: &humaneval::HumanEvalTask) -> &str {
    t.prompt
        .lines()
        .find(|l| l.starts_with(&format!("def {}(", t.entry_point)))
        .unwrap()
}

#[test]
fn real_humaneval_reference_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/humaneval.jsonl");
    let path = path.as_path();
    if !path.exists() {
        recode_test_support::skip_or_fail_in_ci(&format!("HumanEval reference check: {} not present", path.display()));
        return;
    }
    let problems = load_problems("humaneval", path).unwrap();
    assert_eq!(problems.len(), 164);
    let r = evaluate_reference(&problems, &EvalOptions { workers: 4, ..opts() }, false).unwrap();
    let failed: Vec<_> = r
        .problems
        .iter()
        .filter(|p| p.c == 0)
        .map(|p| (&p.id, &p.samples[0].outcome))
        .collect();
    eprintln!(
        "humaneval reference: {} of 164 pass, {:.1}s; failures {failed:?}",
        164 - failed.len(),
        r.wall_s
    );
    assert!(failed.is_empty(), "{failed:?}");
}
