//! Making an environment for real, with pip pointed at an index that refuses connections: the
//! error is the one-paragraph "could not reach a package registry" message, not a stack trace,
//! and a later call tries again (nothing half-made is taken for ready).

use recode_test_support::ensure;

#[test]
fn no_registry_gives_a_clear_message_and_no_half_made_environment() {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        recode_test_support::skip_or_fail_in_ci("python3 is not on PATH");
        return;
    }
    // Port 9 (discard) on loopback refuses at once; no retries keeps this test to seconds (pip then
    // reports only "from versions: none"; with retries it names the refused connection).
    std::env::set_var("PIP_INDEX_URL", "http://127.0.0.1:9/simple");
    std::env::set_var("PIP_RETRIES", "0");
    std::env::remove_var("PIP_FIND_LINKS");
    std::env::remove_var("PIP_EXTRA_INDEX_URL");
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    for _ in 0..2 {
        let e = ensure(&venv, "numpy==2.4.6\n").expect_err("no index: must fail");
        assert!(
            e.contains("could not reach a package registry") && e.contains("PIP_INDEX_URL"),
            "{e}"
        );
        assert!(e.contains(&venv.join("pip.log").display().to_string()), "{e}");
        assert!(!e.contains('\n'), "one paragraph: {e}");
        assert!(!venv.join("recode-requirements.txt").exists());
    }
}
