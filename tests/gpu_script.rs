//! bench/gpu.sh in its tiny CPU mode, so the script a lent GPU machine runs cannot rot: random
//! weights are written, decode is measured at three batch sizes and a GRPO step runs, and the
//! table has one row of each with a number in it.

use std::process::Command;

#[test]
fn the_gpu_benchmark_script_runs_in_its_tiny_cpu_mode() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .args(["bench/gpu.sh", "--tiny"])
        .current_dir(root)
        .env("RECODE", env!("CARGO_BIN_EXE_recode"))
        .env("RECODE_PROGRESS_SECS", "0")
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "bench/gpu.sh --tiny failed:\n{text}");
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| measurement"))
        .collect();
    assert_eq!(rows.len(), 4, "three decode rows and one GRPO step row:\n{text}");
    for (row, batch) in rows.iter().zip(["1", "8", "64"]) {
        assert!(
            row.starts_with(&format!("| decode, batch {batch} | tiny | cpu")),
            "{row}"
        );
    }
    assert!(
        rows[3].starts_with("| GRPO step (experiments/recode-grpo-0.5b.toml) | tiny | cpu f32"),
        "{}",
        rows[3]
    );
    for row in &rows {
        let cells: Vec<&str> = row.split(" | ").collect();
        let value: f64 = cells[3]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("no number in {row}"));
        assert!(value > 0.0, "{row}");
        assert!(cells[4].contains("GiB (resident)"), "{row}");
    }
}
