//! `recode sweep FILE` and `recode sweep summarise DIR`: arguments and printing; the work is in
//! `recode_core::sweep`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use recode_core::sweep::{self, plan::ExpandOptions, ExecOptions};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    command: Option<SweepCommand>,
    /// Sweep file (TOML: `base`, and `[[variant]]`, `[grid]`, `[zip]`, `seeds`; see ablations/).
    file: Option<PathBuf>,
    /// Validate every run and print the runs and the keys in which they differ; run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Runs at once (default 1, or one per GPU with --gpus).
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Continue the sweep in its folder: skip finished runs, continue the others from their newest checkpoint.
    #[arg(long)]
    resume: bool,
    /// GPUs to spread runs over, one run per GPU at a time (CUDA_VISIBLE_DEVICES): `--gpus 0,1`.
    #[arg(long, value_delimiter = ',')]
    gpus: Vec<String>,
    /// The sweep folder (default `<base run.output_dir>/<sweep name>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override a key in every run, after the sweep's own overrides (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Stop a run that takes longer than this many seconds and record it as failed.
    #[arg(long, value_name = "SECS")]
    run_timeout: Option<f64>,
    /// Seconds between progress lines of the running runs (0: only start and end lines).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    progress_every: f64,
    /// Run only the runs whose names match (`*` is a wildcard; repeatable), e.g. `--only '*seed=1'`;
    /// the rest stay pending for a later `--resume`.
    #[arg(long, value_name = "GLOB")]
    only: Vec<String>,
    /// Where runs go: `local` (child processes here, --jobs at once) or `slurm` (one `sbatch
    /// --array` job, resources from the sweep file's `[slurm]`; with --dry-run, prints the script).
    #[arg(long, default_value = "local", value_parser = ["local", "slurm"])]
    executor: String,
}

#[derive(Subcommand)]
enum SweepCommand {
    /// Rebuild sweep.json's metrics, summary.md, summary.csv and the plots from the runs in DIR.
    Summarise { dir: PathBuf },
}

pub fn sweep(a: SweepArgs) -> Result<()> {
    if let Some(SweepCommand::Summarise { dir }) = &a.command {
        let rec = sweep::summarise(dir)?;
        print!("{}", sweep::report::runs_text(&rec));
        println!("\nsummary: {}", dir.join("summary.md").display());
        return Ok(());
    }
    let Some(file) = &a.file else {
        bail!("name a sweep file, or `recode sweep summarise DIR`")
    };
    let opts = ExpandOptions {
        sets: a.sets.clone(),
        dir: a.out.clone(),
    };
    let plan = sweep::expand(file, &opts, &crate::host::Host::new().info(true))?;
    let mut exec = ExecOptions::new(std::env::current_exe()?);
    if a.dry_run {
        print!("{}", sweep::report::describe(&plan));
        if a.executor == "slurm" {
            println!("\nsbatch script:\n{}", sweep::slurm::dry_run_script(&plan, &exec)?);
        }
        return Ok(());
    }
    exec.jobs = a.jobs.unwrap_or(if a.gpus.is_empty() { 1 } else { a.gpus.len() });
    exec.resume = a.resume;
    exec.only = a.only.clone();
    exec.gpus = a.gpus.clone();
    exec.run_timeout = a.run_timeout.map(Duration::from_secs_f64);
    exec.progress_every = Duration::from_secs_f64(a.progress_every.max(0.0));
    let out = if a.executor == "slurm" {
        eprintln!(
            "sweep `{}`: {} runs as one Slurm array job, in {}",
            plan.name,
            plan.runs.len(),
            plan.dir.display()
        );
        sweep::slurm::run(&plan, &exec, &|line| eprintln!("{line}"))?
    } else {
        eprintln!(
            "sweep `{}`: {} runs, {} at a time, in {}",
            plan.name,
            plan.runs.len(),
            exec.jobs,
            plan.dir.display()
        );
        sweep::run(&plan, &exec, &|line| eprintln!("{line}"))?
    };
    print!("\n{}", sweep::report::runs_text(&out.record));
    println!(
        "\nsummary: {} (and summary.csv, sweep.json, plots/)",
        plan.dir.join("summary.md").display()
    );
    println!("TensorBoard: tensorboard --logdir {}", plan.dir.display());
    if out.interrupted {
        eprintln!(
            "interrupted; continue with: recode sweep {} --resume{}",
            file.display(),
            a.out
                .as_ref()
                .map(|o| format!(" --out {}", o.display()))
                .unwrap_or_default()
        );
        std::process::exit(130);
    }
    if out.failed > 0 {
        eprintln!(
            "{} of {} runs failed (their log tails are in summary.md)",
            out.failed,
            out.record.runs.len()
        );
        // The exit code is the number of failed runs (at most 100).
        std::process::exit(out.failed.min(100) as i32);
    }
    Ok(())
}
