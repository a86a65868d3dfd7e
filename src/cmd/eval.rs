//! `recode eval`: CodeUpdateArena / HumanEval with pass@k, on a model, on given candidates, or on
//! the dataset's own reference solutions (the harness's self-check).

use anyhow::{bail, Result};
use clap::Args;
use recode_core::eval;
use recode_core::spec::EvalSpec;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct EvalArgs {
    /// "cua" (CodeUpdateArena) or "humaneval".
    #[arg(long, default_value = "cua")]
    bench: String,
    /// Benchmark file (JSON lines).
    #[arg(long)]
    data: PathBuf,
    /// Score the dataset's own reference solutions (checks the harness).
    #[arg(long, conflicts_with_all = ["candidates", "model", "run"])]
    reference: bool,
    /// Score completions made elsewhere: JSON lines {"id": ..., "completion": ...} (several per id = n samples);
    /// a line with "program" and no "completion" is run as is. A report's samples file re-scores as it is.
    #[arg(long, conflicts_with_all = ["model", "run"])]
    candidates: Option<PathBuf>,
    /// Generate with this model (a .gguf, an HF folder or a known id).
    #[arg(long, conflicts_with = "run")]
    model: Option<String>,
    /// With --model: generate with a trained adapter on it: a PEFT folder (a run's `adapter/`, as
    /// committed under docs/results/adapters/), a checkpoint, or a run directory (its newest checkpoint).
    #[arg(long, requires = "model")]
    adapter: Option<PathBuf>,
    /// Generate with the policy of a run directory (its spec and newest checkpoint).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Samples per problem (n).
    #[arg(long, default_value_t = 1)]
    n: usize,
    /// k values of pass@k, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    k: Vec<usize>,
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 1024)]
    max_new_tokens: usize,
    /// Rows generated together, across problems and samples (each row has its own seed, so the
    /// report does not depend on it).
    #[arg(long, default_value_t = EvalSpec::default().batch_size)]
    batch_size: usize,
    /// Prompt variant: recode, no_update, update_prepended.
    #[arg(long, default_value = "recode")]
    prompt: String,
    /// Evaluate only the first N problems (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Programs run in parallel.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Wall-time limit per unit test, seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Memory per program, MiB (with the memory cgroup: the whole job tree, plus 1024 MiB for the setup).
    #[arg(long, default_value_t = 2048)]
    memory_mb: u64,
    /// Write the report as JSON here (the Markdown table is printed either way), and every
    /// sample (completion, program, outcome) as JSON lines beside it (`<out>.samples.jsonl`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Backend for --model (and, if given, instead of the run's for --run): cpu, wgpu or cuda.
    #[arg(long)]
    backend: Option<String>,
    /// Python that runs the programs (default: the pinned environment of `recode eval-env create`
    /// when built, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Do not use the pinned evaluation environment even if it was built.
    #[arg(long, conflicts_with = "python")]
    no_eval_env: bool,
    /// CodeUpdateArena: do not import the names of the solution signature (List, Tuple, ...) in
    /// the setup, as the original harness (see docs/evaluation.md).
    #[arg(long)]
    no_signature_imports: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where no isolation works here (no root, no unprivileged user namespaces), run the programs
    /// anyway, unconfined (they can read and change your files), instead of refusing.
    #[arg(long)]
    unsafe_no_sandbox: bool,
}

impl EvalArgs {
    fn spec(&self) -> EvalSpec {
        EvalSpec {
            benchmark: self.bench.clone(),
            data: self.data.display().to_string(),
            n_samples: self.n,
            k: self.k.clone(),
            temperature: self.temperature,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens,
            batch_size: self.batch_size,
            prompt: self.prompt.clone(),
            limit: self.limit,
            workers: self.workers,
            timeout_s: self.timeout,
            memory_mb: self.memory_mb,
            signature_imports: !self.no_signature_imports,
            unsafe_no_sandbox: self.unsafe_no_sandbox,
            ..EvalSpec::default()
        }
    }
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let spec = a.spec();
    if let Some(bad) = spec.k.iter().find(|&&k| k == 0 || k > spec.n_samples.max(1)) {
        bail!("--k {bad}: every k must be between 1 and --n ({})", spec.n_samples);
    }
    let (problems, mut opts) = problems_and_options(&spec)?;
    opts.sandbox.python = eval::evalenv::sandbox_python(a.python.as_deref(), !a.no_eval_env)?;
    eprintln!(
        "{} problems from {}; programs run with {}",
        problems.len(),
        a.data.display(),
        opts.sandbox.python.display()
    );
    let report = if a.reference {
        eval::evaluate_reference(&problems, &opts, true)?
    } else if let Some(path) = &a.candidates {
        let cands = eval::candidates::read_candidates(path, &problems)?;
        eval::evaluate_candidates(&problems, &cands, &opts, true)?
    } else {
        let mut policy = if let Some(run) = &a.run {
            let host = crate::host::Host::new();
            recode_core::load::policy_from_run(&host.registry, run, a.backend.as_deref(), &|l| eprintln!("{l}"))?
        } else if let (Some(model), Some(adapter)) = (&a.model, &a.adapter) {
            let host = crate::host::Host::new();
            let backend = a.backend.as_deref().unwrap_or("cpu");
            let policy = recode_core::load::policy_with_adapter(
                &host.registry,
                &host.known_model_ids,
                model,
                backend,
                adapter,
                &Default::default(),
            )?;
            eprintln!("loaded adapter {}", adapter.display());
            policy
        } else if let Some(model) = &a.model {
            let mut m = super::model::ModelArgs::new(model);
            m.backend = a.backend.clone().unwrap_or(m.backend);
            super::model::load_policy(&m)?
        } else {
            bail!("say what to evaluate: --reference, --candidates FILE, --model MODEL or --run RUN_DIR");
        };
        let (report, g) = eval::evaluate_policy(policy.as_mut(), &problems, &spec, &opts, a.seed, None, true)?;
        eprintln!(
            "generated {} tokens for {} rows in {:.1}s ({:.1} tokens/s, batch {}); generation and execution {:.1}s",
            g.tokens,
            g.rows,
            g.seconds,
            g.tokens_per_s(),
            spec.batch_size,
            report.wall_s
        );
        report
    };
    println!("{}", report.to_markdown());
    eval::training::warn_sandbox(&report);
    if let Some(out) = &a.out {
        recode_core::rundir::write_atomic(out, report.to_json().as_bytes())?;
        let samples = samples_path(out);
        recode_core::rundir::write_atomic(&samples, report.samples_jsonl().as_bytes())?;
        eprintln!("report written to {} (samples: {})", out.display(), samples.display());
    }
    Ok(())
}

pub use recode_core::eval::training::problems_and_options;

/// `report.json` -> `report.samples.jsonl`.
fn samples_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    out.with_file_name(format!("{stem}.samples.jsonl"))
}
