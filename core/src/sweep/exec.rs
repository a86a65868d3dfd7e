//! Running a planned sweep: every run is its own `recode run` child process on its resolved spec
//! (isolation: a crash, a precision or a leak stays in one run), at most `jobs` at once, one GPU
//! each when GPUs are named. A failing run is recorded with the end of its log and the others go
//! on. Ctrl-C (SIGINT) or SIGTERM stops the children (SIGTERM to each child's process group, then
//! SIGKILL after a grace period) and records them as interrupted; `resume` skips finished runs and
//! continues the others from their newest checkpoint (`recode run --resume RUN_DIR`).

use super::plan::{Plan, PlannedRun};
use super::summary::{self, read_series, RunRecord, Status, SweepRecord};
use super::SWEEP_FILE;
use crate::progress::duration;
use crate::rundir::{latest_checkpoint, write_atomic};
use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct ExecOptions {
    /// The `recode` binary the runs are started with.
    pub program: PathBuf,
    /// Runs at once (with GPUs: at most one per GPU).
    pub jobs: usize,
    /// Continue the sweep already in the folder.
    pub resume: bool,
    /// GPU ids; each run gets one as CUDA_VISIBLE_DEVICES (and backend.device = 0).
    pub gpus: Vec<String>,
    /// A run still going after this long is stopped and recorded as failed.
    pub run_timeout: Option<Duration>,
    /// How often a line per running run reports its step (zero: never).
    pub progress_every: Duration,
    /// Lines of a failed run's log kept in the record.
    pub tail_lines: usize,
    /// Run only the runs whose names match one of these patterns (`*` matches anything); the
    /// others stay pending for a later `--resume`. Empty: every run.
    pub only: Vec<String>,
}

impl ExecOptions {
    pub fn new(program: PathBuf) -> Self {
        Self { program, jobs: 1, resume: false, gpus: vec![], run_timeout: None, progress_every: Duration::from_secs(30), tail_lines: 20, only: vec![] }
    }
}

pub struct Outcome {
    pub record: SweepRecord,
    pub failed: usize,
    pub interrupted: bool,
}

pub(super) static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set [`STOP`] while this lives; the previous handlers come back on drop.
pub(super) struct SignalGuard {
    old: [libc::sighandler_t; 2],
}

impl SignalGuard {
    pub(super) fn install() -> Self {
        STOP.store(false, Ordering::SeqCst);
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let old = unsafe { [libc::signal(libc::SIGINT, handler), libc::signal(libc::SIGTERM, handler)] };
        Self { old }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: restores the handlers that were installed before.
        unsafe {
            libc::signal(libc::SIGINT, self.old[0]);
            libc::signal(libc::SIGTERM, self.old[1]);
        }
    }
}

struct Running {
    index: usize,
    child: Child,
    started: Instant,
    gpu: Option<String>,
    /// Where this attempt's output starts in the log.
    log_offset: u64,
    timed_out: bool,
}

/// The record of a fresh sweep, or of the one in the folder when resuming (runs the plan no longer
/// has are kept as they are; new ones are added).
pub(super) fn initial_record(plan: &Plan, resume: bool) -> Result<SweepRecord> {
    let dir = &plan.dir;
    let previous = if dir.join(SWEEP_FILE).exists() {
        if !resume {
            bail!(
                "{} already holds a sweep ({SWEEP_FILE}); pass --resume to continue it, or choose another folder with --out",
                dir.display()
            );
        }
        Some(SweepRecord::load(dir)?)
    } else {
        None
    };
    let mut runs = Vec::new();
    for r in &plan.runs {
        let spec_file = format!("specs/{}.toml", r.name);
        let old = previous.as_ref().and_then(|p| p.runs.iter().find(|o| o.name == r.name));
        if let Some(o) = old.filter(|o| o.attempts > 0) {
            let stored = std::fs::read_to_string(dir.join(&o.spec_file)).unwrap_or_default();
            if stored != r.annotated {
                bail!(
                    "run `{}` was started with another spec ({}); the sweep file or an override changed since. \
                     Put the changed sweep in another folder (--out)",
                    r.name,
                    dir.join(&o.spec_file).display()
                );
            }
        }
        let mut rec = RunRecord {
            name: r.name.clone(),
            variant: r.variant.clone(),
            group: r.group.clone(),
            seed: r.seed,
            values: plan.varied.iter().map(|k| (k.clone(), Plan::value(r, k))).collect(),
            spec_file,
            log_file: format!("logs/{}.log", r.name),
            run_dir: None,
            status: Status::Pending,
            attempts: 0,
            exit_code: None,
            wall_s: 0.0,
            steps_total: r.spec.training.steps,
            steps_done: 0,
            log_tail: vec![],
            metrics: Default::default(),
        };
        if let Some(o) = old {
            rec.run_dir = o.run_dir.clone();
            rec.attempts = o.attempts;
            rec.wall_s = o.wall_s;
            rec.exit_code = o.exit_code;
            rec.log_tail = o.log_tail.clone();
            rec.status = if o.status == Status::Finished { Status::Finished } else { Status::Pending };
        }
        runs.push(rec);
    }
    if let Some(p) = &previous {
        runs.extend(p.runs.iter().filter(|o| !plan.runs.iter().any(|r| r.name == o.name)).cloned());
    }
    Ok(SweepRecord {
        name: plan.name.clone(),
        file: plan.file.display().to_string(),
        base: plan.base.display().to_string(),
        varied: plan.varied.clone(),
        metric_patterns: plan.metrics.clone(),
        metrics: vec![],
        runs,
        variants: vec![],
        heldout: vec![],
    })
}

/// The sweep folder ready to run: its record (fresh or continued) saved, every run's resolved
/// spec written; returns the record and the runs still to do (those `opts.only` selects).
pub(super) fn prepare(plan: &Plan, opts: &ExecOptions, report: &dyn Fn(&str)) -> Result<(SweepRecord, Vec<usize>)> {
    let resume = opts.resume;
    let dir = &plan.dir;
    for sub in ["specs", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    let rec = initial_record(plan, resume)?;
    for r in &plan.runs {
        write_atomic(&dir.join(format!("specs/{}.toml", r.name)), r.annotated.as_bytes())?;
    }
    rec.save(dir)?;
    let planned: Vec<(usize, &PlannedRun)> =
        plan.runs.iter().map(|p| (rec.runs.iter().position(|r| r.name == p.name).expect("record has every planned run"), p)).collect();
    let mut pending: Vec<usize> = planned.iter().map(|(i, _)| *i).filter(|i| rec.runs[*i].status != Status::Finished).collect();
    let skipped = planned.len() - pending.len();
    if skipped > 0 {
        report(&format!("[sweep] {skipped} of {} runs already finished; skipping them", planned.len()));
    }
    if !opts.only.is_empty() {
        let before = pending.len();
        pending.retain(|&i| opts.only.iter().any(|p| summary::glob(p, &rec.runs[i].name)));
        if pending.is_empty() && before > 0 {
            bail!("--only {}: matches none of the {before} unfinished runs", opts.only.join(", "));
        }
        report(&format!("[sweep] --only: {} of {before} unfinished runs selected; the others stay pending", pending.len()));
    }
    Ok((rec, pending))
}

/// Run (or continue) the sweep; `report` gets one line per event (start, end, progress).
pub fn run(plan: &Plan, opts: &ExecOptions, report: &dyn Fn(&str)) -> Result<Outcome> {
    let dir = &plan.dir;
    let (mut rec, mut pending) = prepare(plan, opts, report)?;
    let jobs = if opts.gpus.is_empty() { opts.jobs.max(1) } else { opts.jobs.max(1).min(opts.gpus.len()) };
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
                    report(&format!("[start] {} ({how}{on}); log {}", rec.runs[i].name, dir.join(&rec.runs[i].log_file).display()));
                    running.push(Running { index: i, child, started: Instant::now(), gpu, log_offset, timed_out: false });
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
                report(&format!("[timeout] {} ran over {}; stopping it", rec.runs[r.index].name, duration(limit.as_secs_f64())));
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
                    summary::refresh(dir, &mut rec)?;
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
    summary::refresh(dir, &mut rec)?;
    let failed = rec.count(Status::Failed);
    Ok(Outcome { record: rec, failed, interrupted })
}

/// Start a run: fresh, or from the newest checkpoint of its run directory.
fn spawn(dir: &Path, program: &Path, run: &mut RunRecord, gpu: Option<String>) -> Result<(Child, u64, String)> {
    let log_path = dir.join(&run.log_file);
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).with_context(|| format!("cannot open {}", log_path.display()))?;
    let resume_from = resumable_dir(dir, run);
    // A stale file from an earlier attempt must not name this attempt's directory.
    let _ = std::fs::remove_file(dir.join(run_dir_file(run)));
    let mut cmd = Command::new(program);
    cmd.arg("run").arg(dir.join(&run.spec_file)).arg("--run-dir-file").arg(dir.join(run_dir_file(run)));
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
    writeln!(log, "=== {} {how}: {:?}", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"), cmd)?;
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
    let child = cmd.spawn().with_context(|| format!("cannot start {}", program.display()))?;
    run.attempts += 1;
    run.status = Status::Running;
    run.log_tail.clear();
    run.exit_code = None;
    Ok((child, offset, how))
}

/// The run's directory when it has a checkpoint to resume from.
pub(super) fn resumable_dir(dir: &Path, run: &RunRecord) -> Option<PathBuf> {
    run.run_dir.as_ref().map(|d| dir.join(d)).filter(|d| latest_checkpoint(d).ok().flatten().is_some())
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

/// This attempt's output.
fn attempt_output(dir: &Path, run: &RunRecord, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(dir.join(&run.log_file)) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

/// Where `recode run --run-dir-file` writes a run's directory: beside its spec (`specs/NAME.rundir`).
pub(super) fn run_dir_file(run: &RunRecord) -> PathBuf {
    Path::new(&run.spec_file).with_extension("rundir")
}

/// The run directory the run wrote to its file, relative to the sweep folder where it lies inside it.
fn run_dir_from(dir: &Path, run: &RunRecord) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(run_dir_file(run))).ok()?;
    let p = PathBuf::from(text.trim());
    Some(p.strip_prefix(dir).map(Path::to_path_buf).unwrap_or(p).display().to_string())
}

fn finish(dir: &Path, run: &mut RunRecord, r: &Running, status: Option<std::process::ExitStatus>, tail: usize) {
    let attempt = Attempt { log_offset: r.log_offset, wall_s: r.started.elapsed().as_secs_f64(), timed_out: r.timed_out };
    record_end(dir, run, &attempt, status, tail);
}

/// What the record needs of one finished attempt, however it ran (child process or Slurm task).
pub(super) struct Attempt {
    /// Where this attempt's output starts in the run's log.
    pub log_offset: u64,
    pub wall_s: f64,
    pub timed_out: bool,
}

pub(super) fn record_end(dir: &Path, run: &mut RunRecord, a: &Attempt, status: Option<std::process::ExitStatus>, tail: usize) {
    if let Some(d) = run_dir_from(dir, run) {
        run.run_dir = Some(d);
    }
    run.wall_s += a.wall_s;
    run.exit_code = status.and_then(|s| s.code());
    let ok = status.is_some_and(|s| s.success()) && !a.timed_out;
    run.status = if ok { Status::Finished } else { Status::Failed };
    if !ok {
        // The log is read only for a failed attempt's tail.
        let output = attempt_output(dir, run, a.log_offset);
        let lines: Vec<&str> = output.lines().collect();
        run.log_tail = lines[lines.len().saturating_sub(tail)..].iter().map(|s| s.to_string()).collect();
        use std::os::unix::process::ExitStatusExt;
        if a.timed_out {
            run.log_tail.push("(stopped by the sweep: run timeout)".into());
        } else if let Some(sig) = status.and_then(|s| s.signal()) {
            run.log_tail.push(format!("(killed by signal {sig})"));
        }
    }
    if let Some(d) = &run.run_dir {
        run.steps_done = read_series(&dir.join(d)).values().filter_map(|v| v.last().map(|x| x.0)).max().unwrap_or(0);
    }
}

fn end_line(rec: &SweepRecord, i: usize, r: &Running) -> String {
    let run = &rec.runs[i];
    let took = duration(r.started.elapsed().as_secs_f64());
    match run.status {
        Status::Finished => {
            let shown: Vec<String> = rec.metrics.iter().take(3).filter_map(|k| run.metrics.get(k).map(|m| format!("{k} {:.4}", m.last))).collect();
            format!("[done] {} in {took}, {} steps: {}", run.name, run.steps_done, shown.join(", "))
        }
        _ => {
            let code = run.exit_code.map(|c| format!("exit code {c}")).unwrap_or_else(|| "no exit code".into());
            let last = run.log_tail.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default();
            format!("[FAILED] {} after {took} ({code}): {last}", run.name)
        }
    }
}

fn sweep_line(rec: &SweepRecord, done: usize, total: usize, running: usize, pending: usize, t0: Instant, jobs: usize) -> String {
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
    format!("  [{}] {step}, {}", run.name, duration(r.started.elapsed().as_secs_f64()))
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
            load(b, &LoadOptions { sets: s.to_vec(), env: false })
        }
    }

    /// A sweep of `n` runs in `dir`, run by `script` instead of `recode` (it gets `run SPEC`).
    fn setup(dir: &Path, n: usize, script: &str) -> (Plan, ExecOptions) {
        std::fs::write(dir.join("base.toml"), "[[reward]]\nname = \"format\"\n").unwrap();
        let lrs: Vec<String> = (1..=n).map(|i| format!("0.{i}")).collect();
        std::fs::write(dir.join("s.toml"), format!("base = \"base.toml\"\n[grid]\n\"training.lr\" = [{}]\n", lrs.join(", "))).unwrap();
        let prog = dir.join("fake-recode");
        std::fs::write(&prog, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let opts = ExpandOptions { sets: vec![], dir: Some(dir.join("sw")) };
        let plan = expand(&dir.join("s.toml"), &opts, &PlainLoad).unwrap();
        (plan, ExecOptions::new(prog))
    }

    fn log(plan: &Plan, run: usize) -> String {
        std::fs::read_to_string(plan.dir.join(format!("logs/{}.log", plan.runs[run].name))).unwrap()
    }

    #[test]
    fn each_running_run_gets_a_gpu_of_its_own() {
        let d = tempfile::tempdir().unwrap();
        let (plan, mut opts) = setup(d.path(), 3, "echo \"gpu=$CUDA_VISIBLE_DEVICES device=$RECODE_BACKEND__DEVICE\"; sleep 0.5");
        opts.jobs = 4;
        opts.gpus = vec!["3".into(), "5".into()];
        let out = run(&plan, &opts, &|_| {}).unwrap();
        assert_eq!((out.failed, out.record.count(Status::Finished)), (0, 3));
        let gpu = |i: usize| log(&plan, i).lines().find_map(|l| l.strip_prefix("gpu=").map(str::to_string)).unwrap();
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
        assert!(slow.log_tail.iter().any(|l| l.contains("run timeout")), "{:?}", slow.log_tail);
        assert_eq!(out.record.runs[1].status, Status::Finished);
        assert!(log(&plan, 1).contains("fine"));
    }
}
