//! What both executors (local child processes, Slurm array tasks) share: the options, the sweep
//! record prepared for a (continued) sweep, the stop flag set by SIGINT/SIGTERM, where a run
//! writes its directory, and how one finished attempt is recorded.

use super::plan::glob;
use super::plan::{Plan, PlannedRun};
use super::record::{read_series, RunRecord, Status, SweepRecord, SWEEP_FILE};
use crate::resume::{differences, flatten_spec};
use crate::rundir::{latest_checkpoint, write_atomic};
use crate::spec::Spec;
use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
        Self {
            program,
            jobs: 1,
            resume: false,
            gpus: vec![],
            run_timeout: None,
            progress_every: Duration::from_secs(30),
            tail_lines: 20,
            only: vec![],
        }
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
        let old = unsafe {
            [
                libc::signal(libc::SIGINT, handler),
                libc::signal(libc::SIGTERM, handler),
            ]
        };
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

/// How the spec a run was started with (its `specs/<run>.toml`) differs from the one planned now,
/// both read by this binary: the strict run resume's comparison, one line per changed key. By value,
/// not as text: the origin comments name absolute paths, which change when the checkout moves.
fn spec_changes(stored: &str, planned: &Spec) -> Result<Vec<String>> {
    let mut then = toml::from_str::<Spec>(stored).context("this binary cannot read it")?;
    // Recorded as a comment only: the stored file has the fragments merged in.
    then.extends = planned.extends.clone();
    Ok(differences(&flatten_spec(&then)?, &flatten_spec(planned)?))
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
            let path = dir.join(&o.spec_file);
            let changes = std::fs::read_to_string(&path)
                .context("cannot read it")
                .and_then(|stored| spec_changes(&stored, &r.spec))
                .unwrap_or_else(|e| vec![format!("{e:#}")]);
            if !changes.is_empty() {
                bail!(
                    "run `{}` was started with another spec ({}): {}; the sweep file, its base, an override or this \
                     binary's defaults changed since. Put the changed sweep in another folder (--out)",
                    r.name,
                    path.display(),
                    changes.join("; ")
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
            rec.status = if o.status == Status::Finished {
                Status::Finished
            } else {
                Status::Pending
            };
        }
        runs.push(rec);
    }
    if let Some(p) = &previous {
        runs.extend(
            p.runs
                .iter()
                .filter(|o| !plan.runs.iter().any(|r| r.name == o.name))
                .cloned(),
        );
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
    let planned: Vec<(usize, &PlannedRun)> = plan
        .runs
        .iter()
        .map(|p| {
            (
                rec.runs
                    .iter()
                    .position(|r| r.name == p.name)
                    .expect("record has every planned run"),
                p,
            )
        })
        .collect();
    let mut pending: Vec<usize> = planned
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| rec.runs[*i].status != Status::Finished)
        .collect();
    let skipped = planned.len() - pending.len();
    if skipped > 0 {
        report(&format!(
            "[sweep] {skipped} of {} runs already finished; skipping them",
            planned.len()
        ));
    }
    if !opts.only.is_empty() {
        let before = pending.len();
        pending.retain(|&i| opts.only.iter().any(|p| glob(p, &rec.runs[i].name)));
        if pending.is_empty() && before > 0 {
            bail!(
                "--only {}: matches none of the {before} unfinished runs",
                opts.only.join(", ")
            );
        }
        report(&format!(
            "[sweep] --only: {} of {before} unfinished runs selected; the others stay pending",
            pending.len()
        ));
    }
    Ok((rec, pending))
}

/// The run's directory when it has a checkpoint to resume from.
pub(super) fn resumable_dir(dir: &Path, run: &RunRecord) -> Option<PathBuf> {
    run.run_dir
        .as_ref()
        .map(|d| dir.join(d))
        .filter(|d| latest_checkpoint(d).ok().flatten().is_some())
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
pub(super) fn run_dir_from(dir: &Path, run: &RunRecord) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(run_dir_file(run))).ok()?;
    let p = PathBuf::from(text.trim());
    Some(
        p.strip_prefix(dir)
            .map(Path::to_path_buf)
            .unwrap_or(p)
            .display()
            .to_string(),
    )
}

/// What the record needs of one finished attempt, however it ran (child process or Slurm task).
pub(super) struct Attempt {
    /// Where this attempt's output starts in the run's log.
    pub log_offset: u64,
    pub wall_s: f64,
    pub timed_out: bool,
}

pub(super) fn record_end(
    dir: &Path,
    run: &mut RunRecord,
    a: &Attempt,
    status: Option<std::process::ExitStatus>,
    tail: usize,
) {
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
        run.log_tail = lines[lines.len().saturating_sub(tail)..]
            .iter()
            .map(|s| s.to_string())
            .collect();
        use std::os::unix::process::ExitStatusExt;
        if a.timed_out {
            run.log_tail.push("(stopped by the sweep: run timeout)".into());
        } else if let Some(sig) = status.and_then(|s| s.signal()) {
            run.log_tail.push(format!("(killed by signal {sig})"));
        }
    }
    if let Some(d) = &run.run_dir {
        run.steps_done = read_series(&dir.join(d))
            .values()
            .filter_map(|v| v.last().map(|x| x.0))
            .max()
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep started before a key existed resumes when the planned spec has the key at its
    /// default (the stored file is read through `Spec`'s defaults), and names it otherwise.
    #[test]
    fn a_stored_spec_without_a_new_key_resumes_at_its_default() {
        let planned = Spec::default();
        let stored = toml::to_string(&planned).unwrap();
        let without: String = stored
            .lines()
            .filter(|l| !l.starts_with("split_by ="))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(stored, without, "the stored text should have had data.split_by");
        assert_eq!(spec_changes(&without, &planned).unwrap(), Vec::<String>::new());
        let mut changed = planned.clone();
        changed.data.split_by = "row".into();
        assert_eq!(
            spec_changes(&without, &changed).unwrap(),
            vec!["data.split_by: \"update\" -> \"row\"".to_string()]
        );
    }
}
