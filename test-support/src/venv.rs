//! Making the tests' virtual environment: once, under a file lock, from pinned requirements.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Written last, with the requirements it was made from: an environment without it (or with
/// other requirements) is incomplete or stale and is made again.
const STAMP: &str = "recode-requirements.txt";

/// The python of the environment at `dir` with `requirements` (pip's format) installed, made
/// first if needed. Test binaries that run at once wait for one another on `<dir>.lock`. The error
/// is one paragraph for a person: what failed, what to do, where pip's full log is.
pub fn ensure(dir: &Path, requirements: &str) -> Result<PathBuf, String> {
    let python = dir.join("bin").join("python");
    if ready(dir, &python, requirements) {
        return Ok(python);
    }
    let _lock = lock(dir)?;
    if !ready(dir, &python, requirements) {
        make(dir, &python, requirements)?;
    }
    Ok(python)
}

fn ready(dir: &Path, python: &Path, requirements: &str) -> bool {
    std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == requirements)
        && Command::new(python)
            .args(["-c", ""])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// An exclusive flock on `<dir>.lock`, released when the file is dropped (or the process dies).
fn lock(dir: &Path) -> Result<File, String> {
    let mut path = OsString::from(dir.as_os_str());
    path.push(".lock");
    let path = PathBuf::from(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "cannot lock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(file)
}

fn make(dir: &Path, python: &Path, requirements: &str) -> Result<(), String> {
    let start = Instant::now();
    crate::say(&format!(
        "making the tests' Python environment in {} (once; about 40 s)",
        dir.display()
    ));
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot remove the old {}: {e}", dir.display()))?;
    }
    let venv = Command::new("python3")
        .args(["-m", "venv"])
        .arg(dir)
        .output()
        .map_err(|e| {
            format!(
                "the tests need python3 on PATH to make their Python environment in {}, and running it failed: {e}",
                dir.display()
            )
        })?;
    if !venv.status.success() {
        return Err(format!(
            "`python3 -m venv {}` failed: {}. The tests make their own Python environment and need Python's venv module \
             (on Debian or Ubuntu: apt-get install python3-venv).",
            dir.display(),
            last_line(&String::from_utf8_lossy(&venv.stderr))
        ));
    }
    let req = dir.join("requirements.txt");
    std::fs::write(&req, requirements).map_err(|e| format!("cannot write {}: {e}", req.display()))?;
    // Wheels only: the pins have wheels for CPython 3.11+ on x86-64 and ARM Linux, and a
    // source build would need compilers and take many minutes.
    let pip = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--only-binary",
            ":all:",
            "-r",
        ])
        .arg(&req)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let log = dir.join("pip.log");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&pip.stdout),
        String::from_utf8_lossy(&pip.stderr)
    );
    let _ = std::fs::write(&log, &text);
    if !pip.status.success() {
        return Err(pip_failure(dir, &text, &log));
    }
    std::fs::write(dir.join(STAMP), requirements)
        .map_err(|e| format!("cannot write {}: {e}", dir.join(STAMP).display()))?;
    crate::say(&format!(
        "made the tests' Python environment in {:.0} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// What pip prints when it cannot get to an index (connection, DNS, proxy, TLS, timeouts).
const UNREACHABLE: [&str; 12] = [
    "NewConnectionError",
    "Failed to establish a new connection",
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Name or service not known",
    "No route to host",
    "Connection refused",
    "ConnectTimeoutError",
    "Read timed out",
    "ProxyError",
    "SSLError",
    "ConnectionResetError",
];

pub(crate) fn pip_failure(dir: &Path, pip_output: &str, log: &Path) -> String {
    let said = pip_output
        .lines()
        .rfind(|l| l.starts_with("ERROR:"))
        .map(str::trim)
        .unwrap_or_else(|| last_line(pip_output));
    // Without retries pip reports an unreachable index only as "(from versions: none)".
    let opener = if UNREACHABLE.iter().any(|s| pip_output.contains(s)) {
        "pip could not reach a package registry"
    } else if pip_output.contains("(from versions: none)") {
        "pip found no version at all of a pinned package, so it most likely could not reach a package registry"
    } else {
        ""
    };
    if !opener.is_empty() {
        format!(
            "{opener}, and the tests' Python packages (tests/requirements.txt: numpy, gguf, sympy, tensorboard and their \
             dependencies, exact versions) could not be installed into {}. Connect this machine to the network, or point \
             pip at a reachable index or a folder of wheels (PIP_INDEX_URL, PIP_FIND_LINKS), and run the tests again: the \
             environment is made once and then reused. pip said: {said} (full log: {}).",
            dir.display(),
            log.display()
        )
    } else {
        format!(
            "pip could not install the tests' Python packages (tests/requirements.txt) into {}: {said} (full log: {}).",
            dir.display(),
            log.display()
        )
    }
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no output)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_registry_is_told_as_such_with_what_to_do() {
        let out = "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(... [Errno 101] Network is unreachable)'\n\
                   ERROR: Could not find a version that satisfies the requirement absl-py==2.5.1 (from versions: none)\n\
                   ERROR: No matching distribution found for absl-py==2.5.1\n";
        let m = pip_failure(Path::new("/t/py-venv"), out, Path::new("/t/py-venv/pip.log"));
        assert!(m.starts_with("pip could not reach a package registry"), "{m}");
        assert!(m.contains("PIP_INDEX_URL") && m.contains("/t/py-venv/pip.log"), "{m}");
        assert!(m.contains("No matching distribution found for absl-py==2.5.1"), "{m}");
        assert!(!m.contains('\n'), "one paragraph: {m}");
    }

    #[test]
    fn another_pip_error_is_quoted_without_the_network_advice() {
        let out = "Collecting numpy==9.9.9\nERROR: No matching distribution found for numpy==9.9.9\n";
        let m = pip_failure(Path::new("/t/v"), out, Path::new("/t/v/pip.log"));
        assert!(m.contains("numpy==9.9.9") && !m.contains("registry"), "{m}");
        // No retries: pip only says it found no versions.
        let out = "ERROR: Could not find a version that satisfies the requirement numpy==2.4.6 (from versions: none)\n";
        let m = pip_failure(Path::new("/t/v"), out, Path::new("/t/v/pip.log"));
        assert!(
            m.starts_with(
                "pip found no version at all of a pinned package, so it most likely could not reach a package registry"
            ),
            "{m}"
        );
    }
}
