//! Running a planned sweep: every run is its own `recode run` child process on its resolved spec
//! (isolation: a crash, a precision or a leak stays in one run), at most `jobs` at once, one GPU
//! each when GPUs are named. A failing run is recorded with the end of its log and the others go
//! on. Ctrl-C (SIGINT) or SIGTERM stops the children (SIGTERM to each child's process group, then
//! SIGKILL after a grace period) and records them as interrupted; `resume` skips finished runs and
//! continues the others from their newest checkpoint (`recode run --resume RUN_DIR`).

use super::plan::Plan;
use super::record::{read_series, RunRecord, Status, SweepRecord};
use super::report;
use super::runner::{
    prepare, record_end, resumable_dir, run_dir_file, run_dir_from, Attempt, ExecOptions, Outcome, SignalGuard, STOP,
};
use crate::progress::duration;
use crate::rundir::latest_checkpoint;
use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

struct Running {
    index: usize,
    child: Child,
    started: Instant,
    gpu: Option<String>,
    /// Where this attempt's output starts in the log.
    log_offset: u64,
    timed_out: bool,
}

/// Run (or continue) the sweep; `report` gets one line per event (start, end, progress).
pub fn run(plan: &Plan, opts: &ExecOptions, report: &dyn Fn(&str)) -> Result<Outcome> {
    let dir = &plan.dir;
    let (mut rec, mut pending) = prepare(plan, opts, report)?;
    let jobs = if opts.gpus.is_empty() {
        opts.jobs.max(1)
    } else {
        opts.jobs.max(1).min(opts.gpus.len())
    };
    let total = pending.len();
    let t0 = Instant::now();
    let _signals = SignalGuard::install();
    let mut running: Vec<Running> = Vec::new();
    let mut done = 0usize;
    let mut last_progress = Instant::now();
    let mut interrupted = false;
    loop {
        if STOP.load(Ordering::SeqCst) {
            interrupted = true;
            report(&format!("[sweep] interrupted: stopping {} running runs", running.len()));
            for r in &mut running {
                stop(&mut r.child);
                let i = r.index;
                finish(dir, &mut rec.runs[i], r, None, opts.tail_lines);
                rec.runs[i].status = Status::Interrupted;
            }
            running.clear();
            break;
        }
        while running.len() < jobs && !pending.is_empty() {
            let i = pending.remove(0);
            let used: Vec<&String> = running.iter().filter_map(|r| r.gpu.as_ref()).collect();
            let gpu = opts.gpus.iter().find(|g| !used.contains(g)).cloned();
            match spawn(dir, &opts.program, &mut rec.runs[i], gpu.clone()) {
                Ok((child, log_offset, how)) => {
                    let on = gpu.as_ref().map(|g| format!(" on GPU {g}")).unwrap_or_default();
                    report(&format!(
                        "[start] {} ({how}{on}); log {}",
                        rec.runs[i].name,
                        dir.join(&rec.runs[i].log_file).display()
                    ));
                    running.push(Running {
                        index: i,
                        child,
                        started: Instant::now(),
                        gpu,
                        log_offset,
                        timed_out: false,
                    });
                }
                Err(e) => {
                    rec.runs[i].status = Status::Failed;
                    rec.runs[i].log_tail = vec![format!("could not start: {e:#}")];
                    done += 1;
                    report(&format!("[FAILED] {}: could not start: {e:#}", rec.runs[i].name));
                }
            }
            rec.save(dir)?;
        }
        if running.is_empty() && pending.is_empty() {
            break;
        }
        let mut k = 0;
        while k < running.len() {
            let r = &mut running[k];
            if let Some(limit) = opts.run_timeout.filter(|l| r.started.elapsed() > *l && !r.timed_out) {
                report(&format!(
                    "[timeout] {} ran over {}; stopping it",
                    rec.runs[r.index].name,
                    duration(limit.as_secs_f64())
                ));
                r.timed_out = true;
                stop(&mut r.child);
            }
            match r.child.try_wait()? {
                None => k += 1,
                Some(status) => {
                    let r = running.remove(k);
                    let i = r.index;
                    finish(dir, &mut rec.runs[i], &r, Some(status), opts.tail_lines);
                    done += 1;
                    report::refresh(dir, &mut rec)?;
                    report(&end_line(&rec, i, &r));
                    report(&sweep_line(&rec, done, total, running.len(), pending.len(), t0, jobs));
                }
            }
        }
        if !opts.progress_every.is_zero() && last_progress.elapsed() >= opts.progress_every && !running.is_empty() {
            last_progress = Instant::now();
            for r in &running {
                report(&progress_line(dir, &rec.runs[r.index], r));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    report::refresh(dir, &mut rec)?;
    let failed = rec.count(Status::Failed);
    Ok(Outcome {
        record: rec,
        failed,
        interrupted,
    })
}

/// Start a run: fresh, or from the newest checkpoint of its run directory.
fn spawn(dir: &Path, program: &Path, run: &mut RunRecord, gpu: Option<String>) -> Result<(Child, u64, String)> {
    let log_path = dir.join(&run.log_file);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let resume_from = resumable_dir(dir, run);
    // A stale file from an earlier attempt must not name this attempt's directory.
    let _ = std::fs::remove_file(dir.join(run_dir_file(run)));
    let mut cmd = Command::new(program);
    cmd.arg("run")
        .arg(dir.join(&run.spec_file))
        .arg("--run-dir-file")
        .arg(dir.join(run_dir_file(run)));
    let how = match &resume_from {
        Some(d) => {
            cmd.arg("--resume").arg(d);
            let step = latest_checkpoint(d)?.map(|c| c.0).unwrap_or(0);
            format!("attempt {}, resuming from step {step}", run.attempts + 1)
        }
        None => format!("attempt {}", run.attempts + 1),
    };
    if let Some(g) = &gpu {
        // The one visible GPU is device 0 for the child.
        cmd.env("CUDA_VISIBLE_DEVICES", g).env("RECODE_BACKEND__DEVICE", "0");
    }
    writeln!(
        log,
        "=== {} {how}: {:?}",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        cmd
    )?;
    log.flush()?;
    let offset = log.metadata()?.len();
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // Own process group: a terminal's Ctrl-C reaches only the sweep, which stops each run (and its
    // sandboxed programs) itself. If the sweep dies, the kernel sends the run SIGTERM.
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of this process.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    run.attempts += 1;
    run.status = Status::Running;
    run.log_tail.clear();
    run.exit_code = None;
    Ok((child, offset, how))
}

/// SIGTERM to the child's process group, SIGKILL if it has not exited after a grace period.
fn stop(child: &mut Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: signals a process group this sweep created.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
}

fn finish(dir: &Path, run: &mut RunRecord, r: &Running, status: Option<std::process::ExitStatus>, tail: usize) {
    let attempt = Attempt {
        log_offset: r.log_offset,
        wall_s: r.started.elapsed().as_secs_f64(),
        timed_out: r.timed_out,
    };
    record_end(dir, run, &attempt, status, tail);
}

fn end_line(rec: &SweepRecord, i: usize, r: &Running) -> String {
    let run = &rec.runs[i];
    let took = duration(r.started.elapsed().as_secs_f64());
    match run.status {
        Status::Finished => {
            let shown: Vec<String> = rec
                .metrics
                .iter()
                .take(3)
                .filter_map(|k| run.metrics.get(k).map(|m| format!("{k} {:.4}", m.last)))
                .collect();
            format!(
                "[done] {} in {took}, {} steps: {}",
                run.name,
                run.steps_done,
                shown.join(", ")
            )
        }
        _ => {
            let code = run
                .exit_code
                .map(|c| format!("exit code {c}"))
                .unwrap_or_else(|| "no exit code".into());
            let last = run
                .log_tail
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .cloned()
                .unwrap_or_default();
            format!("[FAILED] {} after {took} ({code}): {last}", run.name)
        }
    }
}

fn sweep_line(
    rec: &SweepRecord,
    done: usize,
    total: usize,
    running: usize,
    pending: usize,
    t0: Instant,
    jobs: usize,
) -> String {
    let elapsed = t0.elapsed().as_secs_f64();
    let left = running + pending;
    let eta = if done > 0 && left > 0 {
        // Runs go `jobs` at a time; the mean time per finished run so far.
        let per = elapsed * jobs.min(total.max(1)) as f64 / done as f64;
        format!(", about {} left", duration(per * left as f64 / jobs as f64))
    } else {
        String::new()
    };
    format!(
        "[sweep] {done}/{total} done ({} finished, {} failed in all), {running} running, {pending} waiting, {}{eta}",
        rec.count(Status::Finished),
        rec.count(Status::Failed),
        duration(elapsed)
    )
}

fn progress_line(dir: &Path, run: &RunRecord, r: &Running) -> String {
    let step = run_dir_from(dir, run)
        .map(|d| read_series(&dir.join(d)))
        .and_then(|s| s.get("reward/total/mean").and_then(|v| v.last().copied()))
        .map(|(step, reward)| format!("step {step}/{}, reward {reward:.3}", run.steps_total))
        .unwrap_or_else(|| "starting".into());
    format!(
        "  [{}] {step}, {}",
        run.name,
        duration(r.started.elapsed().as_secs_f64())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, LoadOptions};
    use crate::sweep::plan::{expand, ExpandOptions};
    use std::os::unix::fs::PermissionsExt;

    /// Loads without checks (no registry in these tests).
    struct PlainLoad;
    impl crate::validate::SpecChecker for PlainLoad {
        fn load_checked(&self, b: &Path, s: &[String]) -> anyhow::Result<crate::config::LoadedSpec> {
            load(
                b,
                &LoadOptions {
                    sets: s.to_vec(),
                    env: false,
                },
            )
        }
    }

    /// A sweep of `n` runs in `dir`, run by `script` instead of `recode` (it gets `run SPEC`).
    fn setup(dir: &Path, n: usize, script: &str) -> (Plan, ExecOptions) {
        std::fs::write(dir.join("base.toml"), "[[reward]]\nname = \"format\"\n").unwrap();
        let lrs: Vec<String> = (1..=n).map(|i| format!("0.{i}")).collect();
        std::fs::write(
            dir.join("s.toml"),
            format!("base = \"base.toml\"\n[grid]\n\"training.lr\" = [{}]\n", lrs.join(", ")),
        )
        .unwrap();
        let prog = dir.join("fake-recode");
        std::fs::write(&prog, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let opts = ExpandOptions {
            sets: vec![],
            dir: Some(dir.join("sw")),
        };
        let plan = expand(&dir.join("s.toml"), &opts, &PlainLoad).unwrap();
        (plan, ExecOptions::new(prog))
    }

    fn log(plan: &Plan, run: usize) -> String {
        std::fs::read_to_string(plan.dir.join(format!("logs/{}.log", plan.runs[run].name))).unwrap()
    }

    #[test]
    fn each_running_run_gets_a_gpu_of_its_own() {
        let d = tempfile::tempdir().unwrap();
        let (plan, mut opts) = setup(
            d.path(),
            3,
            "echo \"gpu=$CUDA_VISIBLE_DEVICES device=$RECODE_BACKEND__DEVICE\"; sleep 0.5",
        );
        opts.jobs = 4;
        opts.gpus = vec!["3".into(), "5".into()];
        let out = run(&plan, &opts, &|_| {}).unwrap();
        assert_eq!((out.failed, out.record.count(Status::Finished)), (0, 3));
        let gpu = |i: usize| {
            log(&plan, i)
                .lines()
                .find_map(|l| l.strip_prefix("gpu=").map(str::to_string))
                .unwrap()
        };
        // The first two start together (two GPUs, so two at a time despite jobs = 4).
        assert_eq!((gpu(0), gpu(1)), ("3 device=0".to_string(), "5 device=0".to_string()));
        assert!(["3 device=0", "5 device=0"].contains(&gpu(2).as_str()));
    }

    #[test]
    fn a_run_over_its_time_limit_is_stopped_and_recorded_as_failed() {
        let d = tempfile::tempdir().unwrap();
        let (plan, mut opts) = setup(d.path(), 2, "case \"$2\" in *0.1.toml) sleep 60;; *) echo fine;; esac");
        opts.jobs = 2;
        opts.run_timeout = Some(Duration::from_millis(500));
        let t = Instant::now();
        let out = run(&plan, &opts, &|_| {}).unwrap();
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        let slow = &out.record.runs[0];
        assert_eq!((slow.status, out.failed), (Status::Failed, 1));
        assert!(
            slow.log_tail.iter().any(|l| l.contains("run timeout")),
            "{:?}",
            slow.log_tail
        );
        assert_eq!(out.record.runs[1].status, Status::Finished);
        assert!(log(&plan, 1).contains("fine"));
    }
}
