//! `recode bench eval`: what an evaluation costs, to plan `[eval]` in a sweep. For each batch
//! size, the same problems through `recode eval`'s path (generation with the sandbox overlapping
//! it): generation tokens/s and problems per minute; then the candidates of the first batch size
//! once more through the sandbox alone, for its programs/s.

use anyhow::{bail, Result};
use clap::Args;
use recode_core::eval::{self, Candidate, EvalReport};
use recode_core::spec::EvalSpec;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct BenchEvalArgs {
    /// A .gguf, an HF folder or a known model id.
    #[arg(long, default_value = "qwen2.5-coder-0.5b-instruct")]
    model: String,
    /// "cua" or "humaneval".
    #[arg(long, default_value = "cua")]
    bench: String,
    #[arg(long, default_value = "../shared/data/codeupdatearena-prerelease.jsonl")]
    data: PathBuf,
    /// First N problems.
    #[arg(long, default_value_t = 8)]
    limit: usize,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Samples per problem.
    #[arg(long, default_value_t = 1)]
    n: usize,
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Batch sizes to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    /// Programs run in parallel.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// As for `recode eval`: run without isolation where none works, instead of refusing.
    #[arg(long)]
    unsafe_no_sandbox: bool,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    backend: String,
}

/// Programs the sandbox ran for a report (a sample, and its run without the update if any).
fn programs(r: &EvalReport) -> usize {
    r.problems
        .iter()
        .filter(|p| p.environment.is_none())
        .flat_map(|p| &p.samples)
        .map(|s| 1 + usize::from(s.without_update.is_some()))
        .sum()
}

fn completions(r: &EvalReport) -> Vec<Option<String>> {
    r.problems
        .iter()
        .flat_map(|p| p.samples.iter().map(|s| s.completion.clone()))
        .collect()
}

pub fn bench_eval(a: BenchEvalArgs) -> Result<()> {
    if a.batch.is_empty() || a.batch.contains(&0) {
        bail!("--batch: batch sizes of at least 1");
    }
    let base = EvalSpec {
        benchmark: a.bench.clone(),
        data: a.data.display().to_string(),
        n_samples: a.n,
        temperature: a.temperature,
        max_new_tokens: a.max_new_tokens,
        limit: a.limit,
        workers: a.workers,
        unsafe_no_sandbox: a.unsafe_no_sandbox,
        ..EvalSpec::default()
    };
    let (problems, mut opts) = super::eval::problems_and_options(&base)?;
    opts.sandbox.python = eval::evalenv::sandbox_python(None, true)?;
    let mut m = super::model::ModelArgs::new(&a.model);
    m.backend = a.backend.clone();
    let mut policy = super::model::load_policy(&m)?;
    println!(
        "{} problems x {} sample(s) from {}, max {} new tokens, temperature {}, {} sandbox workers",
        problems.len(),
        a.n,
        a.data.display(),
        a.max_new_tokens,
        a.temperature,
        a.workers
    );
    println!(
        "{:>5} {:>9} {:>10} {:>12} {:>9} {:>13} {:>10}",
        "batch", "tokens", "gen s", "gen tok/s", "total s", "problems/min", "same text"
    );
    let mut first: Option<(usize, EvalReport)> = None;
    for &b in &a.batch {
        let spec = EvalSpec {
            batch_size: b,
            ..base.clone()
        };
        let t = Instant::now();
        let (report, g) = eval::evaluate_policy(policy.as_mut(), &problems, &spec, &opts, 0, None, true)?;
        let total = t.elapsed().as_secs_f64();
        let same = match &first {
            None => "-".to_string(),
            Some((_, r0)) => {
                let (x, y) = (completions(r0), completions(&report));
                let differ = x.iter().zip(&y).filter(|(p, q)| p != q).count();
                if differ == 0 {
                    "yes".into()
                } else {
                    format!("{differ}/{} differ", x.len())
                }
            }
        };
        println!(
            "{:>5} {:>9} {:>10.1} {:>12.1} {:>9.1} {:>13.2} {:>10}",
            b,
            g.tokens,
            g.seconds,
            g.tokens_per_s(),
            total,
            problems.len() as f64 * 60.0 / total,
            same
        );
        if first.is_none() {
            first = Some((b, report));
        }
    }
    // The sandbox alone, on the first batch size's candidates.
    let (b, r0) = first.expect("at least one batch size");
    let cands: Vec<Vec<Candidate>> = r0
        .problems
        .iter()
        .map(|p| {
            p.samples
                .iter()
                .map(|s| Candidate {
                    completion: s.completion.clone(),
                    program: s.program.clone(),
                })
                .collect()
        })
        .collect();
    let t = Instant::now();
    let again = eval::evaluate_candidates(&problems, &cands, &opts, true)?;
    let secs = t.elapsed().as_secs_f64();
    let n = programs(&again);
    println!(
        "sandbox alone (candidates of batch {b}): {n} programs in {secs:.1}s = {:.2} programs/s with {} workers; pass@1 {:.3}",
        n as f64 / secs.max(1e-9),
        a.workers,
        again.overall.pass_at_k.get("pass@1").copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
