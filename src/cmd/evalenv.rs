//! `recode eval-env`: the pinned Python environment the evaluation sandbox runs programs in.

use anyhow::Result;
use clap::Subcommand;
use recode_core::eval::evalenv;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum EvalEnvCommand {
    /// Build the environment from the pinned requirements (eval-env/requirements.txt) with
    /// `python -m venv` and pip; reused when already built.
    Create {
        /// Interpreter the venv is made from.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// Leave torch out (the CUDA build is the only one on the default index: ~2.5 GB).
        #[arg(long)]
        no_torch: bool,
        /// Rebuild even if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Where the environment is (or would be) and what it holds.
    Show,
    /// Print the pinned requirements.
    Requirements,
}

pub fn eval_env(c: EvalEnvCommand) -> Result<()> {
    let root = evalenv::cache_root()?;
    match c {
        EvalEnvCommand::Create {
            python,
            no_torch,
            force,
        } => {
            let reqs = evalenv::requirements(!no_torch);
            eprintln!(
                "building the evaluation environment in {}",
                evalenv::env_dir(&root, &reqs).display()
            );
            let t = std::time::Instant::now();
            let (py, m) = evalenv::create(&root, &reqs, &python, force)?;
            println!(
                "{} (Python {}), ready in {:.0}s",
                py.display(),
                m.python_version,
                t.elapsed().as_secs_f64()
            );
            print_packages(&m);
        }
        EvalEnvCommand::Show => match evalenv::find(&root) {
            Some(py) => {
                println!("{}", py.display());
                if let Some(m) = py.parent().and_then(|b| b.parent()).and_then(evalenv::read_manifest) {
                    println!("Python {}, built from {}", m.python_version, m.base_python);
                    print_packages(&m);
                }
            }
            None => println!(
                "no evaluation environment under {} (run `recode eval-env create`)",
                root.display()
            ),
        },
        EvalEnvCommand::Requirements => print!("{}", evalenv::REQUIREMENTS),
    }
    for old in evalenv::stale(&root) {
        eprintln!(
            "note: {} was built from other requirements; it is not used (remove it to free space)",
            old.display()
        );
    }
    Ok(())
}

fn print_packages(m: &evalenv::Manifest) {
    let pinned: Vec<&str> = m
        .requirements
        .lines()
        .filter_map(|l| l.split("==").next())
        .filter(|n| !n.trim().is_empty() && !n.starts_with('#'))
        .collect();
    for (name, version) in &m.packages {
        if pinned.iter().any(|p| p.eq_ignore_ascii_case(name)) {
            println!("  {name} {version}");
        }
    }
    println!("  ({} distributions in all)", m.packages.len());
}
