//! Evaluation during training: the evaluator `train::run` calls every `eval.every` steps.

use super::evalenv;
use super::generate::evaluate_policy;
use super::problem::{load_problems, EvalOptions, Problem};
use crate::api::Policy;
use crate::spec::EvalSpec;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The spec's problems (at most `limit`) and the harness options.
pub fn problems_and_options(spec: &EvalSpec) -> Result<(Vec<Problem>, EvalOptions)> {
    let mut problems = load_problems(&spec.benchmark, Path::new(&spec.data))?;
    if spec.limit > 0 {
        problems.truncate(spec.limit);
    }
    let mut opts = EvalOptions::from_spec(spec);
    opts.benchmark = spec.benchmark.clone();
    Ok((problems, opts))
}

/// The evaluator `recode run` calls every `eval.every` steps: generate, execute, report pass@k
/// (with and without the update) as scalars; the full report goes to `eval-step-N.json`.
pub fn training_evaluator<'a>(
    spec: &'a EvalSpec,
    chat_template: Option<String>,
    run_dir: PathBuf,
    seed: u64,
) -> Result<crate::trainer::Evaluator<'a>> {
    let (problems, mut opts) = problems_and_options(spec)?;
    opts.sandbox.python = evalenv::sandbox_python(None, true)?;
    Ok(Box::new(move |policy: &mut dyn Policy, step: usize| {
        let (report, _) = evaluate_policy(policy, &problems, spec, &opts, seed, chat_template.as_deref(), false)?;
        warn_sandbox(&report);
        crate::rundir::write_atomic(
            &run_dir.join(format!("eval-step-{step:06}.json")),
            report.to_json().as_bytes(),
        )?;
        let mut m = crate::trainer::Metrics::new();
        for (k, v) in &report.overall.pass_at_k {
            m.insert(k.clone(), *v);
        }
        for (k, v) in &report.overall.pass_at_k_without_update {
            m.insert(format!("{k}_without_update"), *v);
        }
        Ok(m)
    }))
}

/// Sandbox errors and the unsafe mode, on stderr where they cannot be missed.
pub fn warn_sandbox(report: &super::report::EvalReport) {
    if report.sandbox_errors > 0 {
        eprintln!(
            "warning: {} program(s) ended in a sandbox error and are left out of n (first: {})",
            report.sandbox_errors,
            report.first_sandbox_error.as_deref().unwrap_or("-")
        );
    }
    if report.isolation.mode == "unsafe_no_sandbox" {
        eprintln!("warning: --unsafe-no-sandbox: the programs ran without isolation");
    }
}
