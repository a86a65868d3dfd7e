//! `recode bench reward`: es_star of every training target against its old code.

use crate::rewards::{es_star, par_map, Extract};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchReport {
    /// Completions scored (one per row: old_code in a python block, target new_code).
    pub items: usize,
    /// Wall time of scoring only (reading the file excluded).
    pub seconds: f64,
    /// Mean es_star, to check both implementations computed the same thing.
    pub mean_reward: f64,
    /// Threads used (1 for the Python reference).
    #[serde(default = "one")]
    pub threads: usize,
}

fn one() -> usize {
    1
}

/// Read (old_code, new_code) pairs; a null old_code scores an empty block, a null new_code an empty target.
pub fn read_pairs(path: &Path) -> Result<Vec<(String, String)>> {
    #[derive(Deserialize)]
    struct Pair {
        old_code: Option<String>,
        new_code: Option<String>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let p: Pair = serde_json::from_str(l)
                .with_context(|| format!("{}:{}: expected a ReCode row", path.display(), i + 1))?;
            Ok((p.old_code.unwrap_or_default(), p.new_code.unwrap_or_default()))
        })
        .collect()
}

/// Score es_star for every row of a ReCode JSON-lines file on all cores; times the scoring.
pub fn bench_es_star(path: &Path) -> Result<BenchReport> {
    bench_es_star_threads(path, 0)
}

/// As [`bench_es_star`] with `threads` threads (0: all cores, 1: sequential).
pub fn bench_es_star_threads(path: &Path, threads: usize) -> Result<BenchReport> {
    let pairs = read_pairs(path)?;
    let items: Vec<(String, &str)> = pairs
        .iter()
        .map(|(old, new)| (format!("```python\n{old}\n```"), new.as_str()))
        .collect();
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let start = Instant::now();
    let scores = par_map(&items, |(c, target)| es_star(c, target, Extract::First), threads);
    let seconds = start.elapsed().as_secs_f64();
    let mean_reward = scores.iter().sum::<f64>() / pairs.len().max(1) as f64;
    Ok(BenchReport {
        items: pairs.len(),
        seconds,
        mean_reward,
        threads,
    })
}

/// Run `tests/reference/es_star_py_bench.py` on `data`; it prints one JSON `BenchReport` line.
pub fn bench_es_star_python(script: &Path, data: &Path) -> Result<BenchReport> {
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(data)
        .output()
        .with_context(|| format!("running python3 {}", script.display()))?;
    if !out.status.success() {
        anyhow::bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| {
        format!(
            "{}: expected a JSON line with items, seconds, mean_reward; got {line:?}",
            script.display()
        )
    })
}
