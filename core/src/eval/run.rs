//! Running every candidate of every problem through a bounded pool of sandboxed workers, as
//! candidates arrive (so execution overlaps generation).

use super::packages;
use super::problem::{EvalOptions, Problem};
use super::report::{group, Candidate, EvalReport, ProblemResult, SampleResult};
use crate::progress::{Mode, Progress};
use anyhow::{anyhow, bail, Result};
use recode_sandbox::{Outcome, RunResult, Sandbox};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

/// Evaluates `candidates[i]` (n extracted programs each) against `problems[i]`.
pub fn evaluate(
    problems: &[Problem],
    candidates: &[Vec<String>],
    opts: &EvalOptions,
    progress: bool,
) -> Result<EvalReport> {
    let cands: Vec<Vec<Candidate>> = candidates
        .iter()
        .map(|c| c.iter().map(|p| Candidate::from_program(p)).collect())
        .collect();
    evaluate_candidates(problems, &cands, opts, progress)
}

/// Evaluates `candidates[i]` (n samples each) against `problems[i]`; the report keeps every
/// sample's completion, program and outcome.
pub fn evaluate_candidates(
    problems: &[Problem],
    candidates: &[Vec<Candidate>],
    opts: &EvalOptions,
    progress: bool,
) -> Result<EvalReport> {
    if problems.len() != candidates.len() {
        bail!("{} problems but {} candidate lists", problems.len(), candidates.len());
    }
    let bar = Progress::new("execute", "problems", problems.len() as u64, 0, Mode::auto(progress));
    let (report, ()) = evaluate_streaming(problems, opts, &|done| bar.set_position(done as u64), |submit| {
        for (pi, c) in candidates.iter().enumerate() {
            submit(pi, c.clone())?;
        }
        Ok(())
    })?;
    bar.finish();
    Ok(report)
}

/// Evaluates candidates while they are still being made: `produce` runs on the calling thread (a
/// model need not be `Send`) and hands each problem's samples to `submit` once; sandbox workers
/// run what was submitted meanwhile. `executed(n)` reports n problems fully executed.
pub fn evaluate_streaming<T>(
    problems: &[Problem],
    opts: &EvalOptions,
    executed: &(dyn Fn(usize) + Sync),
    produce: impl FnOnce(&mut dyn FnMut(usize, Vec<Candidate>) -> Result<()>) -> Result<T>,
) -> Result<(EvalReport, T)> {
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
    // Work items: (problem, sample, with_update, program).
    let (tx, rx) = mpsc::channel::<(usize, usize, bool, String)>();
    let rx = Mutex::new(rx);
    let remaining: Vec<AtomicUsize> = problems.iter().map(|_| AtomicUsize::new(0)).collect();
    let finished = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    let results: Mutex<BTreeMap<(usize, usize, bool), RunResult>> = Mutex::new(BTreeMap::new());
    let mut candidates: Vec<Option<Vec<Candidate>>> = vec![None; problems.len()];
    let problem_done = || executed(finished.fetch_add(1, Ordering::AcqRel) + 1);
    let produced = std::thread::scope(|s| {
        for _ in 0..opts.workers.max(1) {
            s.spawn(|| loop {
                let item = rx.lock().unwrap().recv();
                let Ok((pi, si, with_update, program)) = item else {
                    break;
                };
                if cancel.load(Ordering::Relaxed) {
                    continue;
                }
                let r = match problems[pi].job(&program, with_update, opts.signature_imports) {
                    Ok(job) => sb.run(&job),
                    Err(e) => RunResult {
                        outcome: Outcome::SandboxError {
                            message: format!("{e:#}"),
                        },
                        tests: vec![],
                        stderr: String::new(),
                        wall_s: 0.0,
                    },
                };
                results.lock().unwrap().insert((pi, si, with_update), r);
                if remaining[pi].fetch_sub(1, Ordering::AcqRel) == 1 {
                    problem_done();
                }
            });
        }
        let mut submit = |pi: usize, cands: Vec<Candidate>| -> Result<()> {
            let p = problems
                .get(pi)
                .ok_or_else(|| anyhow!("candidates for problem {pi} of {}", problems.len()))?;
            if candidates[pi].is_some() {
                bail!("candidates of problem {} submitted twice", p.id());
            }
            let mut items = vec![];
            if env[pi].is_none() {
                for (si, c) in cands.iter().enumerate() {
                    items.push((pi, si, true, c.program.clone()));
                    if opts.without_update && p.has_update() {
                        items.push((pi, si, false, c.program.clone()));
                    }
                }
            }
            candidates[pi] = Some(cands);
            // Problems with nothing to run (skipped, or no candidates) are done already.
            if items.is_empty() {
                problem_done();
            }
            remaining[pi].store(items.len(), Ordering::Release);
            for it in items {
                tx.send(it).map_err(|_| anyhow!("the sandbox workers stopped"))?;
            }
            Ok(())
        };
        let produced = produce(&mut submit);
        // No more work: the workers finish what is queued and stop.
        drop(tx);
        if produced.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        produced
    })?;
    let mut results = results.into_inner().unwrap();
    let errors: Vec<&str> = results
        .values()
        .filter_map(|r| match &r.outcome {
            Outcome::SandboxError { message } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    let (sandbox_errors, first_sandbox_error) = (errors.len(), errors.first().map(|m| m.to_string()));
    let mut per_problem = Vec::with_capacity(problems.len());
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (pi, p) in problems.iter().enumerate() {
        let cands = candidates[pi]
            .take()
            .ok_or_else(|| anyhow!("problem {} was never given candidates", p.id()))?;
        let samples: Vec<SampleResult> = (0..cands.len())
            .map(|si| {
                let cand = &cands[si];
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
                            tests_total: p
                                .job("", true, opts.signature_imports)
                                .map(|j| j.tests.len())
                                .unwrap_or(0),
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
        per_problem.push(ProblemResult::new(
            p.id().into(),
            p.package().into(),
            p.update_type().into(),
            samples,
            &opts.k,
        ));
    }
    let by = |f: fn(&ProblemResult) -> &str| {
        let mut keys: Vec<&str> = per_problem.iter().map(f).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|k| (k.to_string(), group(per_problem.iter().filter(|p| f(p) == k), &opts.k)))
            .collect::<BTreeMap<_, _>>()
    };
    let report = EvalReport {
        benchmark: opts.benchmark.clone(),
        k: opts.k.clone(),
        isolation: sb.isolation().clone(),
        python_env,
        signature_imports: opts.signature_imports,
        overall: group(per_problem.iter(), &opts.k),
        by_package: by(|p| &p.package),
        by_update_type: by(|p| &p.update_type),
        outcomes,
        sandbox_errors,
        first_sandbox_error,
        problems: per_problem,
        wall_s: start.elapsed().as_secs_f64(),
    };
    Ok((report, produced))
}

/// Self-check: each problem's own reference solution as its single candidate.
pub fn evaluate_reference(problems: &[Problem], opts: &EvalOptions, progress: bool) -> Result<EvalReport> {
    let candidates: Vec<Vec<Candidate>> = problems
        .iter()
        .map(|p| vec![Candidate::from_program(&p.reference_solution())])
        .collect();
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
