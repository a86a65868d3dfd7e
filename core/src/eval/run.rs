//! Running every candidate of every problem through a bounded pool of sandboxed workers.

use super::report::{group, Candidate, EvalReport, ProblemResult, SampleResult};
use super::sandbox::{Outcome, RunResult, Sandbox};
use super::{packages, EvalOptions, Problem};
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Evaluates `candidates[i]` (n extracted programs each) against `problems[i]`.
pub fn evaluate(problems: &[Problem], candidates: &[Vec<String>], opts: &EvalOptions, progress: bool) -> Result<EvalReport> {
    let cands: Vec<Vec<Candidate>> =
        candidates.iter().map(|c| c.iter().map(|p| Candidate::from_program(p)).collect()).collect();
    evaluate_candidates(problems, &cands, opts, progress)
}

/// Evaluates `candidates[i]` (n samples each) against `problems[i]`; the report keeps every
/// sample's completion, program and outcome.
pub fn evaluate_candidates(problems: &[Problem], candidates: &[Vec<Candidate>], opts: &EvalOptions, progress: bool) -> Result<EvalReport> {
    if problems.len() != candidates.len() {
        bail!("{} problems but {} candidate lists", problems.len(), candidates.len());
    }
    let start = Instant::now();
    let sb = Sandbox::new(opts.sandbox.clone())?;
    let python = sb.config().python.clone();
    let mut all_modules: Vec<String> = problems.iter().flat_map(|p| p.required_modules()).collect();
    all_modules.sort();
    all_modules.dedup();
    let python_env = packages::python_env(&python, &all_modules);
    // Problems whose own code needs a package that is not installed are not run.
    let env: Vec<Option<String>> = problems
        .iter()
        .map(|p| {
            let missing = packages::missing(&python, &p.required_modules());
            (!missing.is_empty()).then(|| format!("missing python packages: {}", missing.join(", ")))
        })
        .collect();
    // Work items: (problem, sample, with_update).
    let mut work = Vec::new();
    for (pi, p) in problems.iter().enumerate() {
        if env[pi].is_some() {
            continue;
        }
        for si in 0..candidates[pi].len() {
            work.push((pi, si, true));
            if opts.without_update && p.has_update() {
                work.push((pi, si, false));
            }
        }
    }
    let remaining: Vec<AtomicUsize> =
        problems.iter().enumerate().map(|(pi, _)| AtomicUsize::new(work.iter().filter(|w| w.0 == pi).count())).collect();
    let bar = if progress { ProgressBar::new(problems.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("eval {bar:30} {pos}/{len} problems [{elapsed_precise}<{eta_precise}]").unwrap());
    // Problems with nothing to run (skipped, or no candidates) are done already.
    bar.inc(remaining.iter().filter(|r| r.load(Ordering::Relaxed) == 0).count() as u64);
    let results: Mutex<BTreeMap<(usize, usize, bool), RunResult>> = Mutex::new(BTreeMap::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..opts.workers.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(pi, si, with_update)) = work.get(i) else { break };
                let r = match problems[pi].job(&candidates[pi][si].program, with_update, opts.signature_imports) {
                    Ok(job) => sb.run(&job),
                    Err(e) => RunResult {
                        outcome: Outcome::SandboxError { message: format!("{e:#}") },
                        tests: vec![],
                        stderr: String::new(),
                        wall_s: 0.0,
                    },
                };
                results.lock().unwrap().insert((pi, si, with_update), r);
                if remaining[pi].fetch_sub(1, Ordering::AcqRel) == 1 {
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut results = results.into_inner().unwrap();
    let mut per_problem = Vec::with_capacity(problems.len());
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (pi, p) in problems.iter().enumerate() {
        let samples: Vec<SampleResult> = (0..candidates[pi].len())
            .map(|si| {
                let cand = &candidates[pi][si];
                match &env[pi] {
                    Some(detail) => SampleResult {
                        completion: cand.completion.clone(),
                        program: cand.program.clone(),
                        outcome: Outcome::Environment { detail: detail.clone() },
                        output_tail: None,
                        without_update: None,
                        tests_passed: 0,
                        tests_total: 0,
                        wall_s: 0.0,
                    },
                    None => {
                        let r = results.remove(&(pi, si, true)).expect("every work item ran");
                        let wo = results.remove(&(pi, si, false)).map(|r| r.outcome);
                        SampleResult {
                            completion: cand.completion.clone(),
                            program: cand.program.clone(),
                            output_tail: (!r.outcome.passed()).then(|| tail(&r.stderr, OUTPUT_TAIL)).flatten(),
                            tests_passed: r.tests.iter().filter(|t| t.ok).count(),
                            tests_total: p.job("", true, opts.signature_imports).map(|j| j.tests.len()).unwrap_or(0),
                            outcome: r.outcome,
                            without_update: wo,
                            wall_s: r.wall_s,
                        }
                    }
                }
            })
            .collect();
        for s in &samples {
            *outcomes.entry(s.outcome.label().to_string()).or_default() += 1;
        }
        per_problem.push(ProblemResult::new(p.id().into(), p.package().into(), p.update_type().into(), samples, &opts.k));
    }
    let by = |f: fn(&ProblemResult) -> &str| {
        let mut keys: Vec<&str> = per_problem.iter().map(f).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|k| (k.to_string(), group(per_problem.iter().filter(|p| f(p) == k), &opts.k)))
            .collect::<BTreeMap<_, _>>()
    };
    Ok(EvalReport {
        benchmark: opts.benchmark.clone(),
        k: opts.k.clone(),
        isolation: sb.isolation().clone(),
        python_env,
        signature_imports: opts.signature_imports,
        overall: group(per_problem.iter(), &opts.k),
        by_package: by(|p| &p.package),
        by_update_type: by(|p| &p.update_type),
        outcomes,
        problems: per_problem,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// Self-check: each problem's own reference solution as its single candidate.
pub fn evaluate_reference(problems: &[Problem], opts: &EvalOptions, progress: bool) -> Result<EvalReport> {
    let candidates: Vec<Vec<Candidate>> =
        problems.iter().map(|p| vec![Candidate::from_program(&p.reference_solution())]).collect();
    evaluate_candidates(problems, &candidates, opts, progress)
}

/// Characters of program output kept for a sample that did not pass.
const OUTPUT_TAIL: usize = 2000;

/// The last `max` characters of `text` (None when it is blank).
fn tail(text: &str, max: usize) -> Option<String> {
    let t = text.trim_end();
    if t.trim().is_empty() {
        return None;
    }
    let start = t.char_indices().rev().nth(max.saturating_sub(1)).map_or(0, |(i, _)| i);
    Some(t[start..].to_string())
}
