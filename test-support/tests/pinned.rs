//! The tests' Python environment has exactly the pinned versions of tests/requirements.txt.
//! (`RECODE_TEST_VENV=/tmp/some-folder cargo test --workspace --test pinned -- --nocapture`
//! makes a fresh one there and prints how long it took.)

use std::process::Command;

#[test]
fn the_tests_python_has_every_pinned_version() {
    let Some(python) = recode_test_support::python("the pinned-versions check") else {
        return;
    };
    let pins: Vec<(&str, &str)> = recode_test_support::REQUIREMENTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split_once("==")
                .unwrap_or_else(|| panic!("tests/requirements.txt: {l:?} is not NAME==VERSION"))
        })
        .collect();
    assert!(pins.iter().any(|(n, _)| *n == "numpy") && pins.iter().any(|(n, _)| *n == "tensorboard"));
    let script = "import sys, importlib.metadata as md\nfor n in sys.argv[1:]: print(n, md.version(n))";
    let o = Command::new(&python)
        .args(["-c", script])
        .args(pins.iter().map(|(n, _)| n))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.lines().count(), pins.len(), "{text}");
    for ((name, want), line) in pins.iter().zip(text.lines()) {
        assert_eq!(
            line,
            format!("{name} {want}"),
            "{} has another version than tests/requirements.txt",
            python.display()
        );
    }
    // The modules the reference scripts import.
    let o = Command::new(&python)
        .args([
            "-c",
            "import numpy, sympy; from tensorboard.backend.event_processing.event_accumulator import EventAccumulator",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
