//! `recode run` (sweeps: `recode sweep`, src/cmd/sweep.rs): arguments and printing; training is
//! `recode_core::train::run`.

use anyhow::Result;
use clap::Args;
use recode_core::train;
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    /// Experiment spec (TOML).
    spec: PathBuf,
    /// Override a key: `--set training.lr=1e-5` (repeatable; applied after the environment).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue from the newest checkpoint of the newest run with this name, or of RUN_DIR.
    #[arg(long, value_name = "RUN_DIR", num_args = 0..=1, default_missing_value = "")]
    resume: Option<String>,
    /// Stop after this many steps of this invocation (the run keeps its planned length; use with --resume).
    #[arg(long)]
    max_steps: Option<usize>,
    /// With --resume: continue even if the resolved spec differs from the checkpoint's (the
    /// differing keys are printed and logged); without it such a resume is refused.
    #[arg(long, requires = "resume")]
    allow_spec_change: bool,
    /// Write the run directory's path to this file once it exists (what `recode sweep` reads).
    #[arg(long, value_name = "FILE")]
    run_dir_file: Option<PathBuf>,
}

pub fn run(a: RunArgs) -> Result<()> {
    let host = crate::host::Host::new();
    let (loaded, plugins) = host.info(true).load_for_run(&a.spec, &a.sets)?;
    let resume = train::Resume {
        from: a.resume.as_deref(),
        allow_spec_change: a.allow_spec_change,
        run_dir_file: a.run_dir_file.as_deref(),
    };
    let summary = train::run(
        &host.registry,
        &loaded.spec,
        &loaded.annotated_toml()?,
        plugins,
        resume,
        a.max_steps,
        &|l| eprintln!("{l}"),
    )?;
    println!("{}", summary);
    Ok(())
}
