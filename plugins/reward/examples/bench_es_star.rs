//! Times es_star in Rust and in the pure-Python reference on a ReCode JSON-lines file.
//! Usage: cargo run -p recode-reward --example bench_es_star [DATA] [--no-python]

use recode_reward::bench::{bench_es_star, bench_es_star_python, bench_es_star_threads};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/data/recode-train.jsonl"));
    let seq = bench_es_star_threads(&data, 1)?;
    println!(
        "rust:   {} items in {:.4} s on 1 thread, mean es_star {:.6}",
        seq.items, seq.seconds, seq.mean_reward
    );
    let rust = bench_es_star(&data)?;
    println!(
        "rust:   {} items in {:.4} s on {} threads",
        rust.items, rust.seconds, rust.threads
    );
    if !args.iter().any(|a| a == "--no-python") {
        let py = bench_es_star_python(&repo.join("tests/reference/es_star_py_bench.py"), &data)?;
        println!(
            "python: {} items in {:.4} s, mean es_star {:.6}",
            py.items, py.seconds, py.mean_reward
        );
        println!(
            "speed-up: {:.0}x ({:.0}x on 1 thread)",
            py.seconds / rust.seconds,
            py.seconds / seq.seconds
        );
    }
    Ok(())
}
