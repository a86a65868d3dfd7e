//! `recode bench`: measured speed, never asserted in tests.

use anyhow::{bail, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// es_star over a ReCode file (every target against its old code), Rust vs a pure-Python reference.
    Reward {
        /// ReCode JSON lines (default: ../shared/data/recode-train.jsonl, else the shipped sample).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Repeat the Rust measurement this many times and report the best.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
}

fn default_data() -> PathBuf {
    let shared = PathBuf::from("../shared/data/recode-train.jsonl");
    if shared.exists() {
        shared
    } else {
        PathBuf::from("data/sample-migrations.jsonl")
    }
}

pub fn bench(c: BenchCommand) -> Result<()> {
    match c {
        BenchCommand::Reward { data, repeats } => {
            let data = data.unwrap_or_else(default_data);
            let mut best: Option<recode_reward::bench::BenchReport> = None;
            for _ in 0..repeats.max(1) {
                let r = recode_reward::bench::bench_es_star(&data)?;
                if best.as_ref().is_none_or(|b| r.seconds < b.seconds) {
                    best = Some(r);
                }
            }
            let rust = best.expect("at least one repeat");
            println!("rust   : {} items in {:.4}s (mean es_star {:.6})", rust.items, rust.seconds, rust.mean_reward);
            let script = PathBuf::from("tests/reference/es_star_py_bench.py");
            let py = recode_reward::bench::bench_es_star_python(&script, &data)?;
            println!("python : {} items in {:.4}s (mean es_star {:.6})", py.items, py.seconds, py.mean_reward);
            if (py.mean_reward - rust.mean_reward).abs() > 1e-9 {
                bail!("the two implementations disagree: mean {} vs {}", rust.mean_reward, py.mean_reward);
            }
            println!("speed-up: {:.0}x", py.seconds / rust.seconds.max(1e-12));
        }
    }
    Ok(())
}
