//! Run directories: `<output_dir>/<name>/<timestamp>/` with the resolved spec, a log, TensorBoard
//! events, checkpoints and `summary.json`. Everything that must survive a crash is written
//! atomically (temp file or folder, then rename).

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct RunDir {
    pub root: PathBuf,
    log: fs::File,
}

/// Write `bytes` to `path` atomically: a temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    {
        let mut f = fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", path.display()))?;
    Ok(())
}

impl RunDir {
    /// A fresh run directory named by the current UTC time (a suffix avoids collisions).
    pub fn create(output_dir: &Path, name: &str) -> Result<Self> {
        let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
        let base = output_dir.join(name);
        let mut root = base.join(&stamp);
        let mut n = 1;
        while root.exists() {
            root = base.join(format!("{stamp}-{n}"));
            n += 1;
        }
        fs::create_dir_all(root.join("checkpoints"))
            .with_context(|| format!("cannot create run directory {}", root.display()))?;
        Self::open(root)
    }

    /// Reopen an existing run directory (for --resume); the log is appended to.
    pub fn open(root: PathBuf) -> Result<Self> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("log.txt"))
            .with_context(|| format!("cannot open the log in {}", root.display()))?;
        Ok(Self { root, log })
    }

    /// The newest run of `name` that has a checkpoint.
    pub fn latest_resumable(output_dir: &Path, name: &str) -> Result<PathBuf> {
        let base = output_dir.join(name);
        let mut runs: Vec<PathBuf> = fs::read_dir(&base)
            .with_context(|| format!("no runs named `{name}` under {}", output_dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| latest_checkpoint(p).ok().flatten().is_some())
            .collect();
        runs.sort();
        match runs.pop() {
            Some(p) => Ok(p),
            None => bail!(
                "no run of `{name}` under {} has a checkpoint to resume from",
                base.display()
            ),
        }
    }

    pub fn tb_dir(&self) -> PathBuf {
        self.root.join("tb")
    }

    pub fn log(&mut self, line: &str) {
        let stamp = chrono::Utc::now().format("%H:%M:%S");
        let _ = writeln!(self.log, "[{stamp}] {line}");
        let _ = self.log.flush();
    }

    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.root.join(name), bytes)
    }

    /// Write checkpoint `step` atomically: `fill` writes into a temp folder that is renamed to
    /// `checkpoints/step-NNNNNN` only once complete. Keeps the newest `keep` (0 = all).
    pub fn checkpoint(&self, step: usize, keep: usize, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        let dir = self.root.join("checkpoints");
        fs::create_dir_all(&dir)?;
        let final_path = dir.join(format!("step-{step:06}"));
        let tmp = dir.join(format!(".tmp-step-{step:06}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        fill(&tmp).with_context(|| format!("writing checkpoint {}", final_path.display()))?;
        if final_path.exists() {
            fs::remove_dir_all(&final_path)?;
        }
        fs::rename(&tmp, &final_path)?;
        if keep > 0 {
            let mut all = list_checkpoints(&self.root)?;
            while all.len() > keep {
                let old = all.remove(0);
                let _ = fs::remove_dir_all(old.1);
            }
        }
        Ok(final_path)
    }
}

/// Complete checkpoints of a run, oldest first, as (step, path).
pub fn list_checkpoints(run_root: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let dir = run_root.join("checkpoints");
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(n) = name.strip_prefix("step-").and_then(|s| s.parse::<usize>().ok()) {
                out.push((n, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn latest_checkpoint(run_root: &Path) -> Result<Option<(usize, PathBuf)>> {
    Ok(list_checkpoints(run_root)?.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_atomic_and_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(tmp.path(), "x").unwrap();
        for step in [1, 2, 3] {
            run.checkpoint(step, 2, |d| write_atomic(&d.join("a.txt"), b"ok"))
                .unwrap();
        }
        let all = list_checkpoints(&run.root).unwrap();
        assert_eq!(all.iter().map(|c| c.0).collect::<Vec<_>>(), vec![2, 3]);
        // A failing writer leaves no visible checkpoint behind.
        let err = run.checkpoint(4, 0, |_| anyhow::bail!("disk full"));
        assert!(err.is_err());
        assert_eq!(latest_checkpoint(&run.root).unwrap().unwrap().0, 3);
        assert_eq!(RunDir::latest_resumable(tmp.path(), "x").unwrap(), run.root);
    }
}
