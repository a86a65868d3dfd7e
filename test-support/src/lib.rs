//! Set-up shared by the workspace's tests.
//!
//! [`python`] is the interpreter of a virtual environment under `target/py-venv`, made on first
//! use from `tests/requirements.txt` (exact versions) with pip; the tests run their reference
//! scripts with it, so `cargo test --workspace` needs nothing installed by hand. [`skip`] and
//! [`skip_or_fail_in_ci`] print `skipped: why` where `cargo test` shows it.

mod venv;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

pub use venv::ensure;

/// The pinned packages (tests/requirements.txt); a change remakes the environment.
pub const REQUIREMENTS: &str = include_str!("../../tests/requirements.txt");

/// Prints `skipped: why` on the process's own stderr. libtest hides what a passing test prints
/// with `eprintln!`; a direct write is not captured, so every skip shows in `cargo test`'s output.
pub fn skip(why: &str) {
    say(&format!("skipped: {why}"));
}

/// Whether this run is CI's (`CI=true`), where every tool the tests use is installed.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A skip for want of something CI installs (the Python environment, a Vulkan driver): a skip
/// elsewhere, a failure under `CI=true`, so a green CI never hides a check that did not run.
pub fn skip_or_fail_in_ci(why: &str) {
    if in_ci() {
        panic!("skipped under CI=true, where this is installed, so the test fails: {why}");
    }
    skip(why);
}

/// The tests' Python, with the packages of tests/requirements.txt. When it cannot be made (no
/// `python3`, no registry), prints why and returns `None` (a failure under `CI=true`). `what`
/// names the check that is skipped.
pub fn python(what: &str) -> Option<PathBuf> {
    static ENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static TOLD: AtomicBool = AtomicBool::new(false);
    match ENV.get_or_init(|| ensure(&venv_dir(), REQUIREMENTS)) {
        Ok(python) => Some(python.clone()),
        Err(e) if !TOLD.swap(true, Ordering::SeqCst) => {
            skip_or_fail_in_ci(&format!("{what}: {e}"));
            None
        }
        Err(_) => {
            skip_or_fail_in_ci(&format!(
                "{what}: the tests' Python environment could not be made (why: above)"
            ));
            None
        }
    }
}

/// Runs `python script args...` and panics with the script's stderr when it fails: how tests call
/// their independent Python references (numpy forwards of the models).
pub fn run_reference(python: &Path, script: &Path, args: &[&Path]) {
    let o = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
    assert!(
        o.status.success(),
        "reference {} failed: {}",
        script.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `RECODE_TEST_VENV` if set, else `py-venv` in the target folder of the running test binary.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("RECODE_TEST_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => target_dir().join("py-venv"),
    }
}

/// Test binaries live in `<target>/<profile>/deps`; the workspace's `target/` otherwise.
fn target_dir() -> PathBuf {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.ancestors().find(|a| a.file_name() == Some("deps".as_ref()))?;
        Some(deps.parent()?.parent()?.to_path_buf())
    });
    from_exe.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
