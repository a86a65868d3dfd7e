//! `recode validate FILE...`: experiments, fragments and sweeps.

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ValidateArgs {
    /// Spec files (experiments, configs fragments or ablation sweeps).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Only report problems; do not print the resolved specs.
    #[arg(long, short)]
    quiet: bool,
}

pub fn validate(a: ValidateArgs) -> Result<()> {
    let mut failed = 0;
    for file in &a.files {
        match validate_one(file, a.quiet) {
            Ok(()) => println!("ok: {}", file.display()),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} files failed validation", a.files.len());
    }
    Ok(())
}

fn validate_one(file: &std::path::Path, quiet: bool) -> Result<()> {
    if recode_core::sweep::is_sweep_file(file)? {
        let opts = recode_core::sweep::plan::ExpandOptions::default();
        let plan = recode_core::sweep::expand(file, &opts, &crate::host::Host::new().info(true))?;
        if !quiet {
            for r in &plan.runs {
                println!("# {} — run `{}`\n{}", file.display(), r.name, r.annotated);
            }
        }
        return Ok(());
    }
    let loaded = recode_core::validate::SpecChecker::load_checked(
        &crate::host::Host::new().info(!is_fragment(file)),
        file,
        &[],
    )?;
    if !quiet {
        println!("# {}\n{}", file.display(), loaded.annotated_toml()?);
    }
    Ok(())
}

/// Files in a `configs/` folder are fragments for `extends`, not runnable experiments.
fn is_fragment(file: &std::path::Path) -> bool {
    file.parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "configs")
}
