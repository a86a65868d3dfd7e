//! `recode sweep` end to end on the tiny model: parallel runs and their summaries, Ctrl-C and
//! --resume, a failing run among finishing ones, spread over seeds, the paper's reward
//! ablation listed by --dry-run, and `--executor slurm` on a real one-node Slurm cluster
//! (Debian's slurm-wlm, started by tests/fixtures/start-slurm.sh as root; where Slurm cannot start,
//! the test says so and skips; CI installs it).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn recode(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recode"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn record(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap()
}

fn runs(rec: &Value) -> Vec<Value> {
    rec["runs"].as_array().unwrap().clone()
}

fn run<'a>(rec: &'a Value, name: &str) -> &'a Value {
    rec["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no run {name}"))
}

fn steps_logged(run_dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect()
}

#[test]
fn four_runs_two_at_a_time_write_the_tables_csv_plots_and_tensorboard_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sw");
    let o = recode(&[
        "sweep",
        "ablations/tiny-rewards-lr.toml",
        "--jobs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    // Two runs start before the first one ends.
    let events: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("[start]") || l.starts_with("[done]"))
        .collect();
    assert!(
        events.len() == 8 && events[0].starts_with("[start]") && events[1].starts_with("[start]"),
        "{events:#?}"
    );

    let rec = record(&out);
    let names: Vec<&str> = rec["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["similarity-lr=0.003", "similarity-lr=0.01", "es-lr=0.003", "es-lr=0.01"]
    );
    assert_eq!(rec["varied"], serde_json::json!(["reward", "training.lr"]));
    for r in runs(&rec) {
        assert_eq!(r["status"], "finished", "{r}");
        assert_eq!(
            (r["steps_done"].as_u64(), r["steps_total"].as_u64()),
            (Some(4), Some(4))
        );
        let dir = out.join(r["run_dir"].as_str().unwrap());
        // <sweep>/<run>/<timestamp>/tb: `tensorboard --logdir <sweep>` shows every run by name.
        assert!(
            dir.starts_with(out.join(r["name"].as_str().unwrap())) && dir.join("tb").is_dir(),
            "{}",
            dir.display()
        );
        // The final value in the record is the last logged one.
        let last: Value = serde_json::from_str(
            std::fs::read_to_string(dir.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .last()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(r["metrics"]["reward/total/mean"]["final"], last["reward/total/mean"]);
    }
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5, "{csv}");
    assert!(
        lines[0].starts_with("run,status,steps_done,steps_total,wall_s,reward,training.lr,reward/total/mean final"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("similarity-lr=0.003,finished,4,4,") && lines[1].contains(",similarity,0.003,"),
        "{}",
        lines[1]
    );
    assert!(lines[3].contains(",es,0.003,"), "{}", lines[3]);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("| similarity-lr=0.01 | finished | 4/4 |") && md.contains("plots/reward_total_mean.png"),
        "{md}"
    );
    let png = std::fs::read(out.join("plots/reward_total_mean.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // `summarise` rebuilds the same tables from the runs alone.
    std::fs::remove_file(out.join("summary.csv")).unwrap();
    std::fs::remove_file(out.join("summary.md")).unwrap();
    let o = recode(&["sweep", "summarise", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(out.join("summary.csv")).unwrap(), csv);
    assert_eq!(std::fs::read_to_string(out.join("summary.md")).unwrap(), md);

    // The same folder again without --resume is refused rather than mixed up.
    let o = recode(&[
        "sweep",
        "ablations/tiny-rewards-lr.toml",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success() && text(&o).contains("--resume"), "{}", text(&o));
}

#[test]
fn an_interrupted_sweep_resumes_only_what_was_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sw");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "sweep",
            "ablations/tiny-rewards-lr.toml",
            "--jobs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Long enough to interrupt the second run between checkpoints (~20 ms a step here).
        a.extend(
            ["--set", "training.steps=300", "--set", "training.checkpoint_every=10"]
                .iter()
                .map(|s| s.to_string()),
        );
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_recode"))
        .current_dir(root())
        .args(args(&[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first run has finished and the second has a checkpoint, then Ctrl-C.
    let t = Instant::now();
    loop {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the sweep did not get to its second run"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before it was interrupted"
        );
        let first_done = std::fs::read_to_string(out.join("sweep.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .is_some_and(|r| r["runs"][0]["status"] == "finished");
        let second_ckpt = std::fs::read_dir(out.join("similarity-lr=0.01"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_dir(e.path().join("checkpoints"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|c| c.file_name().to_string_lossy().starts_with("step-"))
            });
        if first_done && second_ckpt {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let rec = record(&out);
    assert_eq!(run(&rec, "similarity-lr=0.003")["status"], "finished");
    assert_eq!(run(&rec, "similarity-lr=0.01")["status"], "interrupted");
    assert_eq!(run(&rec, "es-lr=0.003")["status"], "pending");
    assert_eq!(run(&rec, "es-lr=0.01")["status"], "pending");
    let first_dir = run(&rec, "similarity-lr=0.003")["run_dir"].clone();
    let second_dir = run(&rec, "similarity-lr=0.01")["run_dir"].clone();
    assert!(second_dir.is_string(), "{rec}");
    // The interrupted child is gone: its metrics stop growing (it logged ~50 steps a second).
    let logged = steps_logged(&out.join(second_dir.as_str().unwrap())).len();
    assert!(logged < 300, "the second run finished before the interrupt reached it");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        steps_logged(&out.join(second_dir.as_str().unwrap())).len(),
        logged,
        "the interrupted run is still running"
    );

    let a = args(&["--resume"]);
    let o = recode(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("1 of 4 runs already finished; skipping them"), "{log}");
    assert!(
        log.contains("[start] similarity-lr=0.01 (attempt 2, resuming from step "),
        "{log}"
    );
    assert!(!log.contains("[start] similarity-lr=0.003"), "{log}");
    let rec = record(&out);
    for r in runs(&rec) {
        assert_eq!(r["status"], "finished", "{r}");
        assert_eq!(r["steps_done"], 300);
    }
    // The finished run was left alone; the interrupted one continued in its own run directory.
    assert_eq!(run(&rec, "similarity-lr=0.003")["run_dir"], first_dir);
    assert_eq!(run(&rec, "similarity-lr=0.003")["attempts"], 1);
    assert_eq!(run(&rec, "similarity-lr=0.01")["run_dir"], second_dir);
    assert_eq!(run(&rec, "similarity-lr=0.01")["attempts"], 2);
    assert_eq!(run(&rec, "es-lr=0.01")["attempts"], 1);
    let steps = steps_logged(&out.join(second_dir.as_str().unwrap()));
    assert_eq!(steps, (1..=300).collect::<Vec<u64>>());
}

#[test]
fn a_failing_run_is_recorded_with_its_log_tail_and_the_others_finish() {
    let tmp = tempfile::tempdir().unwrap();
    // Exists (so validation passes) but holds no data rows: the run fails when it loads its data.
    let junk = tmp.path().join("not-data.jsonl");
    std::fs::write(&junk, "this is not JSON\n").unwrap();
    let sweep = tmp.path().join("with-failure.toml");
    std::fs::write(
        &sweep,
        format!(
            "base = {:?}\nset = {{ \"training.steps\" = 2, \"training.checkpoint_every\" = 0 }}\n\n\
             [[variant]]\nname = \"ok\"\n\n[[variant]]\nname = \"broken\"\nset = {{ \"data.path\" = {:?} }}\n\n\
             [[variant]]\nname = \"also-ok\"\nset = {{ \"training.lr\" = 0.003 }}\n",
            root().join("experiments/tiny-grpo.toml").display().to_string(),
            junk.display().to_string()
        ),
    )
    .unwrap();
    let out = tmp.path().join("sw");
    let o = recode(&[
        "sweep",
        sweep.to_str().unwrap(),
        "--jobs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = text(&o);
    // The exit code is the number of failed runs.
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("[FAILED] broken"), "{log}");
    let rec = record(&out);
    assert_eq!(run(&rec, "ok")["status"], "finished");
    assert_eq!(run(&rec, "also-ok")["status"], "finished");
    let broken = run(&rec, "broken");
    assert_eq!(broken["status"], "failed");
    assert_eq!(broken["exit_code"], 1);
    let tail = broken["log_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(tail.contains("not-data.jsonl"), "{tail}");
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("## Failed runs") && md.contains("### `broken` (exit code 1"),
        "{md}"
    );
}

#[test]
fn a_seeds_axis_gives_mean_std_and_a_t_interval_per_variant() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sw");
    let o = recode(&[
        "sweep",
        "ablations/tiny-seeds.toml",
        "--jobs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let rec = record(&out);
    assert_eq!(runs(&rec).len(), 4);
    let csv = std::fs::read_to_string(out.join("summary-variants.csv")).unwrap();
    let rows: Vec<Vec<String>> = csv
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert_eq!(&rows[0][..3], ["variant", "finished", "training.lr"]);
    let col = |name: &str| {
        rows[0]
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {csv}"))
    };
    for (row, group) in rows[1..].iter().zip(["lr=0.003", "lr=0.01"]) {
        assert_eq!(row[0], group);
        assert_eq!(row[1], "2/2");
        for metric in ["reward/total/mean", "loss"] {
            // Recomputed here from the two runs' final values: t(0.975, 1) = 12.7062.
            let xs: Vec<f64> = [1, 2]
                .iter()
                .map(|s| {
                    run(&rec, &format!("{group}-seed={s}"))["metrics"][metric]["final"]
                        .as_f64()
                        .unwrap()
                })
                .collect();
            let mean = (xs[0] + xs[1]) / 2.0;
            let std = ((xs[0] - mean).powi(2) + (xs[1] - mean).powi(2)).sqrt();
            let ci = 12.7062 * std / 2f64.sqrt();
            let got = |s: &str| row[col(&format!("{metric} {s}"))].parse::<f64>().unwrap();
            assert!(
                (got("mean") - mean).abs() < 1e-5,
                "{metric} mean {} vs {mean}",
                got("mean")
            );
            assert!((got("std") - std).abs() < 1e-5, "{metric} std {} vs {std}", got("std"));
            assert!((got("ci95") - ci).abs() < 1e-4, "{metric} ci95 {} vs {ci}", got("ci95"));
        }
    }
    // The seeds differ, so the spread is real (a copy of one run would give std 0).
    assert_ne!(
        run(&rec, "lr=0.01-seed=1")["metrics"]["loss"]["final"],
        run(&rec, "lr=0.01-seed=2")["metrics"]["loss"]["final"]
    );
    assert!(std::fs::read_to_string(out.join("summary.md"))
        .unwrap()
        .contains("## Over seeds"));
}

#[test]
fn dry_run_lists_the_paper_reward_variants_and_runs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sw");
    let o = recode(&[
        "sweep",
        "ablations/reward-variants.toml",
        "--dry-run",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", text(&o));
    let rows: Vec<Vec<&str>> = stdout.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["run", "reward"], "{stdout}");
    let expected = [
        ("format", "format"),
        ("format+em", "format+em"),
        ("format+es", "format+es"),
        ("format+em_star", "format+em_star"),
        ("format+es_star", "format+es_star"),
    ];
    assert_eq!(
        rows[1..].iter().map(|r| (r[0], r[1])).collect::<Vec<_>>(),
        expected,
        "{stdout}"
    );
    assert!(!out.exists(), "a dry run created {}", out.display());
}

#[test]
fn an_invalid_variant_stops_the_sweep_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("typo.toml");
    std::fs::write(
        &sweep,
        format!(
            "base = {:?}\n[[variant]]\nname = \"fine\"\n[[variant]]\nname = \"typo\"\nset = {{ \"training.lrr\" = 0.1 }}\n",
            root().join("experiments/tiny-grpo.toml").display().to_string()
        ),
    )
    .unwrap();
    let out = tmp.path().join("sw");
    let o = recode(&["sweep", sweep.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let log = text(&o);
    assert!(!o.status.success());
    assert!(
        log.contains("run `typo` (variant `typo`)") && log.contains("lrr"),
        "{log}"
    );
    assert!(!out.exists(), "the sweep started: {}", out.display());
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
            (
                r["name"].as_str().unwrap().into(),
                r["status"].as_str().unwrap().into(),
                r["steps_done"].as_u64().unwrap(),
                metrics,
            )
        })
        .collect()
}

fn start_slurm() -> Result<(), String> {
    let o = Command::new("bash")
        .arg(root().join("tests/fixtures/start-slurm.sh"))
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
        .trim()
        .to_string())
    }
}

#[test]
fn a_slurm_array_sweep_matches_the_local_one_and_resumes() {
    if let Err(why) = start_slurm() {
        recode_test_support::skip_or_fail_in_ci(&format!(
            "Slurm executor test: no one-node Slurm cluster here ({why})"
        ));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (local, slurm) = (tmp.path().join("local"), tmp.path().join("slurm"));
    let o = recode(&[
        "sweep",
        "ablations/tiny-rewards-lr.toml",
        "--jobs",
        "2",
        "--out",
        local.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    let dry = recode(&[
        "sweep",
        "ablations/tiny-rewards-lr.toml",
        "--executor",
        "slurm",
        "--dry-run",
        "--out",
        slurm.to_str().unwrap(),
    ]);
    let dry_text = text(&dry);
    assert!(
        dry.status.success() && dry_text.contains("#SBATCH --array=0-3") && dry_text.contains("--cpus-per-task=1"),
        "{dry_text}"
    );
    assert!(
        !slurm.join("sweep.json").exists(),
        "--dry-run submitted or wrote something"
    );

    let o = recode(&[
        "sweep",
        "ablations/tiny-rewards-lr.toml",
        "--executor",
        "slurm",
        "--out",
        slurm.to_str().unwrap(),
    ]);
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
    let o = recode(&[
        "sweep",
        "ablations/tiny-rewards-lr.toml",
        "--executor",
        "slurm",
        "--resume",
        "--out",
        slurm.to_str().unwrap(),
    ]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("3 of 4 runs already finished") && log.contains("1 array tasks"),
        "{log}"
    );
    let script = std::fs::read_to_string(slurm.join("slurm/array-1.sh")).unwrap();
    assert!(
        script.contains("'--resume'") && script.contains("similarity-lr=0.01"),
        "{script}"
    );
    assert_eq!(comparable(&record(&slurm)), a);
}

#[test]
fn only_runs_a_subset_resume_finishes_it_and_the_heldout_change_pairs_items_across_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sw");
    // 8 rows, a quarter held out with a fixed split seed: every run scores the same 2 items.
    let sets = [
        "--set",
        "data.heldout_fraction=0.25",
        "--set",
        "data.split_seed=7",
        "--set",
        "heldout.every=2",
        "--set",
        "heldout.rewards=[\"similarity\", \"em\"]",
    ];
    let mut args = vec![
        "sweep",
        "ablations/tiny-seeds.toml",
        "--out",
        out.to_str().unwrap(),
        "--only",
        "*seed=1",
    ];
    args.extend(sets);
    let o = recode(&args);
    assert!(o.status.success(), "{}", text(&o));
    let rec = record(&out);
    for r in runs(&rec) {
        let want = if r["name"].as_str().unwrap().ends_with("seed=1") {
            "finished"
        } else {
            "pending"
        };
        assert_eq!(r["status"], want, "{r}");
    }
    let mut args = vec![
        "sweep",
        "ablations/tiny-seeds.toml",
        "--out",
        out.to_str().unwrap(),
        "--resume",
    ];
    args.extend(sets);
    let o = recode(&args);
    let log = text(&o);
    assert!(
        o.status.success() && log.contains("2 of 4 runs already finished"),
        "{log}"
    );
    let rec = record(&out);
    assert!(runs(&rec).iter().all(|r| r["status"] == "finished"));

    // The held-out change of each variant, recomputed here from the runs' own heldout.jsonl.
    let items = |name: &str| -> std::collections::BTreeMap<(u64, String), f64> {
        let dir = out.join(run(&rec, name)["run_dir"].as_str().unwrap());
        std::fs::read_to_string(dir.join("heldout.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|v| {
                (
                    (v["step"].as_u64().unwrap(), v["id"].as_str().unwrap().to_string()),
                    v["scores"]["similarity"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let csv = std::fs::read_to_string(out.join("summary-heldout.csv")).unwrap();
    for group in ["lr=0.003", "lr=0.01"] {
        let (a, b) = (items(&format!("{group}-seed=1")), items(&format!("{group}-seed=2")));
        let ids: Vec<String> = a.keys().filter(|k| k.0 == 0).map(|k| k.1.clone()).collect();
        assert_eq!(ids.len(), 2, "{a:?}");
        let ids_b: Vec<String> = b.keys().filter(|k| k.0 == 0).map(|k| k.1.clone()).collect();
        assert_eq!(ids, ids_b, "split_seed fixes the held-out items across seeds");
        let change: f64 = ids
            .iter()
            .map(|id| {
                (a[&(2, id.clone())] + b[&(2, id.clone())]) / 2.0 - (a[&(0, id.clone())] + b[&(0, id.clone())]) / 2.0
            })
            .sum::<f64>()
            / 2.0;
        let row: Vec<&str> = csv
            .lines()
            .find(|l| l.starts_with(&format!("{group},similarity,")))
            .unwrap_or_else(|| panic!("{csv}"))
            .split(',')
            .collect();
        assert_eq!(&row[2..4], ["2", "2"], "{csv}");
        assert!(
            (row[6].parse::<f64>().unwrap() - change).abs() < 1e-6,
            "{group}: {} vs {change}\n{csv}",
            row[6]
        );
        let (lo, hi) = (row[7].parse::<f64>().unwrap(), row[8].parse::<f64>().unwrap());
        assert!(lo <= change + 1e-9 && change <= hi + 1e-9, "{lo} {change} {hi}");
        // The copy baseline (the old code as the answer), scored at step 0 on the same items.
        let dir = out.join(run(&rec, &format!("{group}-seed=1"))["run_dir"].as_str().unwrap());
        let copy: Vec<Value> = std::fs::read_to_string(dir.join("heldout-copy.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut copy_ids: Vec<&str> = copy.iter().map(|v| v["id"].as_str().unwrap()).collect();
        copy_ids.sort();
        assert_eq!(copy_ids, ids, "the copy baseline scores the held-out items");
        let copy_mean = copy
            .iter()
            .map(|v| v["scores"]["similarity"].as_f64().unwrap())
            .sum::<f64>()
            / 2.0;
        assert!(
            (row[10].parse::<f64>().unwrap() - copy_mean).abs() < 1e-6,
            "{group}: copy {} vs {copy_mean}\n{csv}",
            row[10]
        );
    }
    assert!(std::fs::read_to_string(out.join("summary.md"))
        .unwrap()
        .contains("## Held-out change over the untrained model"));
}

#[test]
fn resume_compares_the_specs_by_value_and_names_a_changed_key() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sw");
    let sweep = |extra: &[&str]| {
        let mut a = vec![
            "sweep",
            "ablations/tiny-rewards-lr.toml",
            "--out",
            out.to_str().unwrap(),
            "--set",
            "training.steps=2",
        ];
        a.extend(extra);
        recode(&a)
    };
    let o = sweep(&["--only", "es-lr=0.01"]);
    assert!(o.status.success(), "{}", text(&o));

    // A checkout in another folder writes other origin comments (they name absolute paths), not
    // another experiment: the stored spec without its comments still resumes.
    let stored = out.join("specs/es-lr=0.01.toml");
    let bare: String = std::fs::read_to_string(&stored)
        .unwrap()
        .lines()
        .map(|l| l.split("  # ").next().unwrap().to_string() + "\n")
        .collect();
    assert!(!bare.contains("  # "));
    std::fs::write(&stored, bare).unwrap();
    let o = sweep(&["--resume", "--only", "es-lr=0.003"]);
    assert!(
        o.status.success() && text(&o).contains("1 of 4 runs already finished"),
        "{}",
        text(&o)
    );

    // A changed value is refused, and the message says which key and how.
    let o = sweep(&["--resume", "--set", "training.lr=0.5"]);
    let log = text(&o);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains("run `es-lr=0.003` was started with another spec")
            || log.contains("run `es-lr=0.01` was started with another spec"),
        "{log}"
    );
    assert!(
        log.contains("training.lr: 0.003 -> 0.5") || log.contains("training.lr: 0.01 -> 0.5"),
        "{log}"
    );
}
