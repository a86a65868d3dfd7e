//! CodeUpdateArena on the shipped standard-library sample: loading, assembly, prompts, execution.

use recode_core::eval::cua::{self, CuaExample};
use recode_core::eval::sandbox::Outcome;
use recode_core::eval::{
    evaluate, evaluate_candidates, evaluate_reference, load_problems, Candidate, EvalOptions, Problem, PromptVariant,
};
use std::path::{Path, PathBuf};

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/cua-sample.jsonl")
}

fn sample() -> Vec<CuaExample> {
    cua::load(&sample_path()).unwrap()
}

fn opts() -> EvalOptions {
    EvalOptions {
        k: vec![1],
        workers: 2,
        ..Default::default()
    }
}

#[test]
fn loads_final_release_format_and_grouped_format_alike() {
    let ex = sample();
    assert_eq!(ex.len(), 4);
    assert_eq!(ex[0].update.function_path, "math.log");
    assert!(ex[0].source.ends_with("cua-sample.jsonl:1"));
    // Re-group one example as the pre-release writes it: same example back.
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(sample_path()).unwrap().lines().nth(1).unwrap()).unwrap();
    let mut e = line.clone();
    let obj = e.as_object_mut().unwrap();
    let imports = obj.remove("imports").unwrap();
    obj.insert("prog_syn_imports".into(), imports);
    let grouped = serde_json::json!({"update": line["update"], "prog_syn_examples": [e]});
    let g = cua::parse_line(&grouped, &ex[1].source).unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(g[0], ex[1]);
}

#[test]
fn errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    let mut v: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(sample_path()).unwrap().lines().next().unwrap()).unwrap();
    v["update"].as_object_mut().unwrap().remove("signature");
    std::fs::write(&p, format!("\n{v}\n")).unwrap();
    let err = format!("{:#}", cua::load(&p).unwrap_err());
    assert!(
        err.contains("bad.jsonl:2") && err.contains("update") && err.contains("`signature`"),
        "{err}"
    );
    std::fs::write(&p, "{\"update\": 3}\n").unwrap();
    let err = format!("{:#}", cua::load(&p).unwrap_err());
    assert!(err.contains("bad.jsonl:1") && err.contains("`description`"), "{err}");
}

#[test]
fn program_order_and_install_statements() {
    let ex = sample();
    let progs = ex[0].programs("CANDIDATE = 1", true, true).unwrap();
    assert_eq!(progs.len(), 2, "one program per unit test");
    let p = &progs[1];
    let pos = |s: &str| p.find(s).unwrap_or_else(|| panic!("{s} missing in\n{p}"));
    assert!(pos("old_log = math.log") < pos("def log(x, base=10)"));
    assert!(pos("def log(x, base=10)") < pos("setattr(math, 'log', log)"));
    assert!(pos("setattr(math, 'log', log)") < pos("CANDIDATE = 1"));
    assert!(pos("CANDIDATE = 1") < pos("def test_one_hundred_percent"));
    assert!(p.trim_end().ends_with("test_one_hundred_percent()"));
    assert!(!p.contains("test_five_percent"));
    let without = ex[0].programs("CANDIDATE = 1", false, true).unwrap();
    assert!(!without[0].contains("setattr(math, 'log', log)"));
    assert_eq!(
        ex[1].install_statement().unwrap(),
        "del itertools.accumulate\nsetattr(itertools, 'cumulate', cumulate)"
    );
}

#[test]
fn prompt_variants() {
    let p = Problem::Cua(sample().remove(2));
    let text = |v| {
        p.prompt_messages(v)
            .iter()
            .map(|m| format!("{}: {}", m.role, m.content))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let recode = text(PromptVariant::Recode);
    assert!(recode.starts_with("system: ") && recode.contains("\nuser: "));
    for needle in [
        "re.findall",
        "<doc>\nre.findall(pattern, string, flags=0, limit=None): when",
        "New signature: `re.findall(pattern, string, flags=0, limit=None)`",
        "Scenario: A social",
        "def first_hashtags(post: str, k: int) -> list:",
        "<think>",
        "<answer>",
    ] {
        assert!(recode.contains(needle), "recode prompt lacks {needle:?}:\n{recode}");
    }
    let none = text(PromptVariant::NoUpdate);
    assert!(!none.contains("limit=None") && !none.contains("<doc>") && none.contains("Problem: Return the first k"));
    let pre = text(PromptVariant::UpdatePrepended);
    assert!(pre.contains("[DOC]") && pre.contains("limit=None") && pre.contains("def test_two_of_three"));
    assert!("update_prepended".parse::<PromptVariant>().is_ok() && "x".parse::<PromptVariant>().is_err());
}

#[test]
fn reference_passes_and_old_api_candidates_fail() {
    let problems = load_problems("cua", &sample_path()).unwrap();
    let r = evaluate_reference(&problems, &opts(), false).unwrap();
    for p in &r.problems {
        assert_eq!(p.c, 1, "{}: {:?}", p.id, p.samples[0].outcome);
    }
    // Without the update, only the log example's reference (explicit base e) still passes.
    let wo: Vec<usize> = r.problems.iter().map(|p| p.c_without_update.unwrap()).collect();
    assert_eq!(wo, vec![1, 0, 0, 0]);
    assert_eq!(r.overall.pass_at_k["pass@1"], 1.0);
    assert_eq!(r.overall.pass_at_k_without_update["pass@1"], 0.25);
    // Candidates written against the old API: they fail with the update installed.
    let old = [
        "import math\ndef doubling_time(rate):\n    return math.log(2) / rate\n",
        "import itertools\ndef running_balance(opening, amounts):\n    return list(itertools.accumulate(amounts, initial=opening))\n",
        "import re\ndef first_hashtags(post, k):\n    return re.findall(r'#\\w+', post)\n",
        "import math\ndef squared_distance(p, q):\n    return math.hypot(q[0] - p[0], q[1] - p[1])\n",
    ];
    let cands: Vec<Vec<String>> = old.iter().map(|c| vec![c.to_string()]).collect();
    let r = evaluate(&problems, &cands, &opts(), false).unwrap();
    for p in &r.problems {
        assert_eq!(p.c, 0, "{} old-API candidate passed", p.id);
        assert!(
            matches!(p.samples[0].outcome, Outcome::Failed { .. }),
            "{:?}",
            p.samples[0].outcome
        );
    }
    // ...while the first two are right under the old API.
    let wo: Vec<usize> = r.problems.iter().map(|p| p.c_without_update.unwrap()).collect();
    assert_eq!(wo, vec![1, 1, 0, 0]);
    let md = r.to_markdown();
    assert!(md.contains("| **overall** | 4 | 4 | 0 | 0.0 | 50.0 |"), "{md}");
    assert!(md.contains("package: math"));
}

#[test]
fn pass_at_k_with_several_samples_and_missing_packages() {
    let mut problems = load_problems("cua", &sample_path()).unwrap();
    let good = problems[3].reference_solution();
    let bad = "def squared_distance(p, q):\n    return -1\n".to_string();
    problems.truncate(4);
    let mut cands: Vec<Vec<String>> = problems.iter().map(|p| vec![p.reference_solution(); 2]).collect();
    cands[3] = vec![good, bad.clone(), bad];
    // A problem whose own code needs a package that is not installed.
    if let Problem::Cua(e) = &mut problems[0] {
        e.update.imports = format!("import surely_not_installed_pkg\n{}", e.update.imports);
    }
    let o = EvalOptions {
        k: vec![1, 2, 3],
        without_update: false,
        ..opts()
    };
    let r = evaluate(&problems, &cands, &o, false).unwrap();
    assert!(r.problems[0]
        .environment
        .as_deref()
        .unwrap()
        .contains("surely_not_installed_pkg"));
    assert_eq!(r.overall.environment_skipped, 1);
    assert_eq!(r.overall.evaluated, 3);
    let p3 = &r.problems[3];
    assert_eq!((p3.n, p3.c), (3, 1));
    assert!((p3.pass_at_k["pass@1"] - 1.0 / 3.0).abs() < 1e-12);
    assert!((p3.pass_at_k["pass@2"] - 2.0 / 3.0).abs() < 1e-12);
    // pass@3 is defined only for the problem with 3 samples.
    assert!((r.overall.pass_at_k["pass@3"] - 1.0).abs() < 1e-12);
    assert!((r.overall.pass_at_k["pass@1"] - (1.0 + 1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
    assert!(r.to_json().contains("\"environment_skipped\": 1"));
}

/// The squared-distance example with its signature written in `typing` names, which neither the
/// example's imports nor the candidate import.
fn typed_problem() -> Problem {
    let mut e = sample().remove(3);
    assert!(!e.imports.contains("typing") && !e.update.imports.contains("typing"));
    e.solution_signature =
        "def squared_distance(p: Tuple[float, float], q: Union[Tuple[float, float], List[float]]) -> float:".into();
    Problem::Cua(e)
}

const TYPED_CANDIDATE: &str = "import math\n\ndef squared_distance(p: Tuple[float, float], q: Union[Tuple[float, float], List[float]]) -> float:\n    return math.hypot(q[0] - p[0], q[1] - p[1], squared=True)\n";

#[test]
fn signature_names_are_importable_unless_switched_off() {
    let problems = vec![typed_problem()];
    let cands = vec![vec![TYPED_CANDIDATE.to_string()]];
    let on = evaluate(&problems, &cands, &opts(), false).unwrap();
    assert!(on.signature_imports);
    assert!(
        on.problems[0].samples[0].outcome.passed(),
        "{:?}",
        on.problems[0].samples[0].outcome
    );
    let Problem::Cua(e) = &problems[0] else { unreachable!() };
    assert!(e
        .setup(true, true)
        .unwrap()
        .contains("from typing import List, Tuple, Union\n"));
    assert!(!e.setup(true, false).unwrap().contains("typing"));
    // Off, as CodeUpdateArena's own harness: defining the candidate raises NameError.
    let off = evaluate(
        &problems,
        &cands,
        &EvalOptions {
            signature_imports: false,
            ..opts()
        },
        false,
    )
    .unwrap();
    assert!(!off.signature_imports);
    match &off.problems[0].samples[0].outcome {
        Outcome::Failed { reason } => {
            assert!(
                reason.starts_with("candidate: NameError: name '") && reason.contains("is not defined"),
                "{reason}"
            )
        }
        o => panic!("expected a NameError, got {o:?}"),
    }
    assert!(off.to_markdown().contains("signature imports off"));
}

#[test]
fn report_keeps_completion_program_and_outcome_per_sample() {
    let problems = load_problems("cua", &sample_path()).unwrap();
    let completion = |p: &Problem| {
        format!(
            "<think>easy</think>\n<answer>\n```python\n{}```\n</answer>",
            p.reference_solution()
        )
    };
    let mut cands: Vec<Vec<Candidate>> = problems
        .iter()
        .map(|p| vec![Candidate::from_completion(&completion(p))])
        .collect();
    cands[1].push(Candidate::from_completion(
        "```python\ndef running_balance(opening, amounts):\n    raise ValueError('no idea')\n```",
    ));
    let r = evaluate_candidates(&problems, &cands, &opts(), false).unwrap();
    let s0 = &r.problems[0].samples[0];
    assert_eq!(s0.completion.as_deref(), Some(completion(&problems[0]).as_str()));
    assert_eq!(s0.program.trim_end(), problems[0].reference_solution().trim_end());
    assert!(s0.outcome.passed() && s0.output_tail.is_none());
    let bad = &r.problems[1].samples[1];
    assert!(
        matches!(&bad.outcome, Outcome::Failed { reason } if reason.contains("ValueError: no idea")),
        "{:?}",
        bad.outcome
    );
    assert!(!r.python_env.version.is_empty() && !r.python_env.python.is_empty());
    // The samples file: one line per sample, with what a re-score needs.
    let lines: Vec<serde_json::Value> = r
        .samples_jsonl()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[2]["id"], r.problems[1].id.as_str());
    assert_eq!(
        (lines[2]["sample"].as_u64(), lines[2]["passed"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(lines[2]["outcome"]["kind"], "failed");
    assert!(lines[2]["completion"].as_str().unwrap().contains("raise ValueError"));
    assert!(lines[2]["program"].as_str().unwrap().starts_with("def running_balance"));
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["problems"][1]["samples"][1]["program"], lines[2]["program"]);
    assert_eq!(json["signature_imports"], true);
}
