//! `recode install --prefix P`: the installed binary starts and trains outside the checkout, with
//! a clean environment (no LD_LIBRARY_PATH from cargo), finding its shared libraries in P/lib/recode.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn an_installed_binary_trains_outside_the_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    let o = Command::new(env!("CARGO_BIN_EXE_recode"))
        .args(["install", "--prefix", prefix.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        listed.contains("lib/recode/librecode_burn.so") && listed.contains("lib/recode/libstd-"),
        "{listed}"
    );
    let exe = prefix.join("bin/recode");
    let clean = |c: &mut Command| {
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", tmp.path())
            .current_dir(tmp.path());
    };
    // The build tree's deps/ is not beside the copy: burn must come from the prefix.
    let mut ldd = Command::new("ldd");
    clean(&mut ldd);
    let deps = String::from_utf8_lossy(&ldd.arg(&exe).output().expect("ldd").stdout).into_owned();
    let burn = deps.lines().find(|l| l.contains("librecode_burn")).unwrap_or_default();
    let inside = burn.contains(&prefix.display().to_string()) && burn.contains("lib/recode/librecode_burn.so");
    assert!(inside, "librecode_burn resolved outside the prefix: {deps}");
    let r = |p: &str| root().join(p).display().to_string();
    let mut run = Command::new(&exe);
    clean(&mut run);
    let o = run
        .args(["run", &r("experiments/tiny-grpo.toml")])
        .args(["--set", &format!("model.path={:?}", r("tests/fixtures/tiny-qwen2"))])
        .args(["--set", &format!("data.path={:?}", r("tests/fixtures/tiny-task.jsonl"))])
        .args(["--set", "run.output_dir=\"runs\"", "--set", "training.steps=2"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the installed binary failed outside the checkout:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(tmp.path().join("runs/tiny-grpo").is_dir());
}
