//! `recode sweep --executor slurm` on a real one-node Slurm cluster (Debian's slurm-wlm, started by
//! tests/fixtures/start-slurm.sh as root): the tiny 2x2 sweep runs as one array job and its
//! summary equals the local executor's; a resume resubmits only what is not finished.
//! Where Slurm cannot start (not root, not installed), the test says so and skips; CI installs it.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn recode(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recode")).current_dir(root()).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn record(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap()
}

/// Each run's name, status, steps and final reward metrics (wall times and paths differ).
fn comparable(rec: &Value) -> Vec<(String, String, u64, Vec<(String, f64)>)> {
    rec["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let metrics = r["metrics"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with("reward/"))
                .map(|(k, m)| (k.clone(), m["final"].as_f64().unwrap()))
                .collect();
            (r["name"].as_str().unwrap().into(), r["status"].as_str().unwrap().into(), r["steps_done"].as_u64().unwrap(), metrics)
        })
        .collect()
}

fn start_slurm() -> Result<(), String> {
    let o = Command::new("bash").arg(root().join("tests/fixtures/start-slurm.sh")).output().map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)).trim().to_string())
    }
}

#[test]
fn a_slurm_array_sweep_matches_the_local_one_and_resumes() {
    if let Err(why) = start_slurm() {
        recode_test_support::skip_or_fail_in_ci(&format!("Slurm executor test: no one-node Slurm cluster here ({why})"));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (local, slurm) = (tmp.path().join("local"), tmp.path().join("slurm"));
    let o = recode(&["sweep", "ablations/tiny-rewards-lr.toml", "--jobs", "2", "--out", local.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let dry = recode(&["sweep", "ablations/tiny-rewards-lr.toml", "--executor", "slurm", "--dry-run", "--out", slurm.to_str().unwrap()]);
    let dry_text = text(&dry);
    assert!(dry.status.success() && dry_text.contains("#SBATCH --array=0-3") && dry_text.contains("--cpus-per-task=1"), "{dry_text}");
    assert!(!slurm.join("sweep.json").exists(), "--dry-run submitted or wrote something");

    let o = recode(&["sweep", "ablations/tiny-rewards-lr.toml", "--executor", "slurm", "--out", slurm.to_str().unwrap()]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("[slurm] submitted job"), "{log}");
    let (a, b) = (comparable(&record(&local)), comparable(&record(&slurm)));
    assert_eq!(a.len(), 4);
    assert!(a.iter().all(|r| r.1 == "finished" && r.2 == 4), "{a:?}");
    assert_eq!(a, b, "the Slurm sweep's summary differs from the local one's");
    for f in ["summary.md", "summary.csv"] {
        assert!(slurm.join(f).exists(), "{f} missing");
    }

    // Forget one run's result: a resume resubmits exactly that one, from its checkpoint.
    let mut rec = record(&slurm);
    rec["runs"][1]["status"] = "failed".into();
    std::fs::write(slurm.join("sweep.json"), serde_json::to_string_pretty(&rec).unwrap()).unwrap();
    let o = recode(&["sweep", "ablations/tiny-rewards-lr.toml", "--executor", "slurm", "--resume", "--out", slurm.to_str().unwrap()]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("3 of 4 runs already finished") && log.contains("1 array tasks"), "{log}");
    let script = std::fs::read_to_string(slurm.join("slurm/array-1.sh")).unwrap();
    assert!(script.contains("'--resume'") && script.contains("similarity-lr=0.01"), "{script}");
    assert_eq!(comparable(&record(&slurm)), a);
}
