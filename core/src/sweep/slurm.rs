//! The Slurm executor: the runs still to do become one `sbatch --array` job (one array index per
//! run, each calling `recode run` on its resolved spec, resuming from its newest checkpoint when
//! it has one), followed with `squeue` until every task has ended, then gathered into the same
//! record and summary as a local sweep. Each task writes its exit code to
//! `slurm/exit-<run>` (atomically), so nothing depends on Slurm's accounting database.
//! Resuming resubmits what is not finished; Ctrl-C cancels the job (`scancel`).

use super::plan::Plan;
use super::record::{RunRecord, Status, SweepRecord};
use super::report;
use super::runner::{
    initial_record, prepare, record_end, resumable_dir, run_dir_file, Attempt, ExecOptions, Outcome, SignalGuard, STOP,
};
use crate::rundir::write_atomic;
use anyhow::{bail, Context, Result};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// `'text'` for bash, with embedded quotes escaped.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

/// One array task: the run, and the checkpointed run directory it resumes from, if any.
struct Task<'a> {
    run: &'a RunRecord,
    resume: Option<PathBuf>,
}

/// The sbatch script for `tasks` (array index = position). Paths are absolute: a compute node
/// shares the file system, not this process's working directory.
fn script(plan: &Plan, tasks: &[Task<'_>], program: &Path, workdir: &Path) -> Result<String> {
    let dir = absolute(&plan.dir)?;
    let s = &plan.slurm;
    let mut out = String::from("#!/bin/bash\n");
    out.push_str(&format!(
        "#SBATCH --job-name={}\n",
        quote(&format!("recode-{}", plan.name))
    ));
    let limit = if s.max_parallel > 0 {
        format!("%{}", s.max_parallel)
    } else {
        String::new()
    };
    out.push_str(&format!("#SBATCH --array=0-{}{limit}\n", tasks.len().saturating_sub(1)));
    out.push_str(&format!("#SBATCH --output={}\n", dir.join("slurm/%A_%a.out").display()));
    for (flag, v) in [
        ("partition", &s.partition),
        ("time", &s.time),
        ("mem", &s.mem),
        ("gres", &s.gres),
        ("account", &s.account),
    ] {
        if !v.is_empty() {
            out.push_str(&format!("#SBATCH --{flag}={v}\n"));
        }
    }
    if s.cpus > 0 {
        out.push_str(&format!("#SBATCH --cpus-per-task={}\n", s.cpus));
    }
    for l in &s.extra {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("set -u\n");
    // Specs name data and models relative to where the sweep was started.
    out.push_str(&format!("cd {} || exit 2\n", quote(&workdir.display().to_string())));
    out.push_str("case \"$SLURM_ARRAY_TASK_ID\" in\n");
    for (i, t) in tasks.iter().enumerate() {
        let mut args = vec!["run".to_string(), dir.join(&t.run.spec_file).display().to_string()];
        args.push("--run-dir-file".into());
        args.push(dir.join(run_dir_file(t.run)).display().to_string());
        if let Some(r) = &t.resume {
            args.push("--resume".into());
            args.push(absolute(r)?.display().to_string());
        }
        let args: Vec<String> = args.iter().map(|a| quote(a)).collect();
        out.push_str(&format!(
            "  {i}) name={}; args=({});;\n",
            quote(&t.run.name),
            args.join(" ")
        ));
    }
    out.push_str("  *) echo \"no run for array index $SLURM_ARRAY_TASK_ID\" >&2; exit 2;;\nesac\n");
    out.push_str(&format!("dir={}\n", quote(&dir.display().to_string())));
    out.push_str("log=\"$dir/logs/$name.log\"\n");
    out.push_str("echo \"=== $(date -u +%Y-%m-%dT%H:%M:%SZ) slurm task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname)\" >> \"$log\"\n");
    out.push_str(&format!(
        "{} \"${{args[@]}}\" >> \"$log\" 2>&1 </dev/null\n",
        quote(&program.display().to_string())
    ));
    out.push_str("code=$?\n");
    out.push_str(
        "echo $code > \"$dir/slurm/exit-$name.tmp\" && mv \"$dir/slurm/exit-$name.tmp\" \"$dir/slurm/exit-$name\"\n",
    );
    out.push_str("exit $code\n");
    Ok(out)
}

fn tasks_of<'a>(dir: &Path, rec: &'a SweepRecord, pending: &[usize]) -> Vec<Task<'a>> {
    pending
        .iter()
        .map(|&i| Task {
            run: &rec.runs[i],
            resume: resumable_dir(dir, &rec.runs[i]),
        })
        .collect()
}

/// The script `recode sweep --executor slurm` would submit now (for `--dry-run`).
pub fn dry_run_script(plan: &Plan, opts: &ExecOptions) -> Result<String> {
    let rec = initial_record(plan, true)?;
    let pending: Vec<usize> = (0..rec.runs.len())
        .filter(|&i| rec.runs[i].status != Status::Finished)
        .collect();
    script(
        plan,
        &tasks_of(&plan.dir, &rec, &pending),
        &opts.program,
        &std::env::current_dir()?,
    )
}

const JOB_FILE: &str = "slurm/job";

/// Job ids of this sweep's job still in the queue (pending or running tasks).
fn queued(job: &str) -> Result<usize> {
    let o = Command::new("squeue")
        .args(["-h", "-j", job, "-o", "%i"])
        .output()
        .context("running squeue")?;
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        // A job that left the queue long ago is an error to squeue: nothing is queued.
        if err.contains("Invalid job id") {
            return Ok(0);
        }
        bail!("squeue -j {job} failed: {}", err.trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count())
}

/// Submit the runs still to do as one array job and follow it to the end.
pub fn run(plan: &Plan, opts: &ExecOptions, report: &dyn Fn(&str)) -> Result<Outcome> {
    let dir = &plan.dir;
    std::fs::create_dir_all(dir.join("slurm"))?;
    if let Ok(old) = std::fs::read_to_string(dir.join(JOB_FILE)) {
        let old = old.trim();
        if !old.is_empty() && queued(old)? > 0 {
            bail!(
                "Slurm job {old} of this sweep is still queued or running; wait for it or `scancel {old}`, then resume"
            );
        }
    }
    let (mut rec, pending) = prepare(plan, opts, report)?;
    if pending.is_empty() {
        report::refresh(dir, &mut rec)?;
        return Ok(Outcome {
            failed: rec.count(Status::Failed),
            record: rec,
            interrupted: false,
        });
    }
    let workdir = std::env::current_dir()?;
    let text = script(plan, &tasks_of(dir, &rec, &pending), &opts.program, &workdir)?;
    let n = std::fs::read_dir(dir.join("slurm"))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("array-"))
        .count();
    let script_path = absolute(&dir.join(format!("slurm/array-{n}.sh")))?;
    write_atomic(&script_path, text.as_bytes())?;
    let mut offsets = Vec::new();
    for &i in &pending {
        let run = &mut rec.runs[i];
        let _ = std::fs::remove_file(dir.join(format!("slurm/exit-{}", run.name)));
        offsets.push(std::fs::metadata(dir.join(&run.log_file)).map(|m| m.len()).unwrap_or(0));
        run.attempts += 1;
        run.status = Status::Running;
        run.log_tail.clear();
        run.exit_code = None;
    }
    let o = Command::new("sbatch")
        .arg("--parsable")
        .arg(&script_path)
        .output()
        .context("running sbatch (is Slurm installed here?)")?;
    if !o.status.success() {
        bail!(
            "sbatch {} failed: {}",
            script_path.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    // `--parsable` prints "jobid" or "jobid;cluster".
    let job = String::from_utf8_lossy(&o.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    write_atomic(&dir.join(JOB_FILE), job.as_bytes())?;
    rec.save(dir)?;
    report(&format!(
        "[slurm] submitted job {job}: {} array tasks ({})",
        pending.len(),
        script_path.display()
    ));
    let _signals = SignalGuard::install();
    let t0 = Instant::now();
    let mut left: Vec<(usize, u64)> = pending.iter().copied().zip(offsets).collect();
    let mut last_line = Instant::now();
    let mut interrupted = false;
    let mut gone_since: Option<Instant> = None;
    while !left.is_empty() {
        if STOP.load(Ordering::SeqCst) {
            let _ = Command::new("scancel").arg(&job).status();
            report(&format!("[slurm] interrupted: cancelled job {job}"));
            for (i, _) in left.drain(..) {
                rec.runs[i].status = Status::Interrupted;
            }
            interrupted = true;
            break;
        }
        let mut k = 0;
        while k < left.len() {
            let (i, offset) = left[k];
            let exit = dir.join(format!("slurm/exit-{}", rec.runs[i].name));
            match std::fs::read_to_string(&exit)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                Some(code) => {
                    left.remove(k);
                    let a = Attempt {
                        log_offset: offset,
                        wall_s: t0.elapsed().as_secs_f64(),
                        timed_out: false,
                    };
                    record_end(
                        dir,
                        &mut rec.runs[i],
                        &a,
                        Some(std::process::ExitStatus::from_raw(code << 8)),
                        opts.tail_lines,
                    );
                    report::refresh(dir, &mut rec)?;
                    let r = &rec.runs[i];
                    report(&format!(
                        "[{}] {} (slurm task of job {job}, exit code {code})",
                        if code == 0 { "done" } else { "FAILED" },
                        r.name
                    ));
                }
                None => k += 1,
            }
        }
        if left.is_empty() {
            break;
        }
        // Tasks that left the queue without an exit file were killed (time limit, node failure,
        // scancel); a grace period lets the file system show files written just before.
        if queued(&job)? == 0 {
            let since = *gone_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(5) {
                for (i, offset) in left.drain(..) {
                    let a = Attempt {
                        log_offset: offset,
                        wall_s: t0.elapsed().as_secs_f64(),
                        timed_out: false,
                    };
                    record_end(dir, &mut rec.runs[i], &a, None, opts.tail_lines);
                    rec.runs[i].log_tail.push(format!(
                        "(the Slurm task of job {job} ended without an exit code; see {})",
                        dir.join("slurm").display()
                    ));
                    report(&format!(
                        "[FAILED] {}: its Slurm task ended without an exit code",
                        rec.runs[i].name
                    ));
                }
                report::refresh(dir, &mut rec)?;
                break;
            }
        }
        if !opts.progress_every.is_zero() && last_line.elapsed() >= opts.progress_every {
            last_line = Instant::now();
            report(&format!(
                "[slurm] job {job}: {} of {} tasks ended, {:.0}s",
                pending.len() - left.len(),
                pending.len(),
                t0.elapsed().as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    report::refresh(dir, &mut rec)?;
    Ok(Outcome {
        failed: rec.count(Status::Failed),
        record: rec,
        interrupted,
    })
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
