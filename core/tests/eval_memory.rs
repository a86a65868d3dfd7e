//! Memory limits count what the candidate uses, not what the setup mapped: the CUDA build of
//! torch maps ~3 GiB of shared libraries at import, which must not eat the candidate's
//! `memory_mb`, while a candidate that allocates too much still fails with `Memory`. With the
//! memory cgroup (root, or a delegated cgroup) untouched mappings are free; without it the
//! address-space limit counts from after the setup.

use recode_core::eval::sandbox::{Job, Outcome, Sandbox, SandboxConfig, TestCase};
use std::time::Duration;

/// The setup maps 1.5 GiB (untouched, as a library mapping would be) with a 512 MiB limit.
fn job(candidate: &str) -> Job {
    Job {
        setup: "import mmap\n_big = mmap.mmap(-1, 1536 << 20)\n".into(),
        candidate: candidate.into(),
        tests: vec![TestCase {
            name: "t".into(),
            code: "def t():\n    assert len(data) > 0\n".into(),
            call: "t()".into(),
        }],
    }
}

fn check(sb: &Sandbox) {
    let ok = sb.run(&job("data = bytearray(200 << 20)\n"));
    assert!(
        ok.outcome.passed(),
        "200 MiB after a 1.5 GiB setup: {:?} {}",
        ok.outcome,
        ok.stderr
    );
    let big = sb.run(&job("data = bytearray(1024 << 20)\n"));
    assert!(
        matches!(big.outcome, Outcome::Memory),
        "1 GiB over a 512 MiB limit: {:?}",
        big.outcome
    );
}

#[test]
fn memory_limit_counts_from_after_the_setup() {
    let base = SandboxConfig {
        timeout: Duration::from_secs(20),
        memory_mb: 512,
        setup_memory_mb: 128,
        ..Default::default()
    };
    let sb = Sandbox::new(base.clone()).unwrap();
    if sb.isolation().memory_cgroup {
        check(&sb);
    } else {
        recode_test_support::skip_or_fail_in_ci("the memory-cgroup half of the memory test: no memory cgroup here");
    }
    // The address-space fallback.
    let sb = Sandbox::new(SandboxConfig {
        use_memory_cgroup: false,
        ..base.clone()
    })
    .unwrap();
    assert!(!sb.isolation().memory_cgroup);
    check(&sb);
    // Without headroom the setup itself cannot map that much.
    let strict = Sandbox::new(SandboxConfig {
        use_memory_cgroup: false,
        setup_headroom_mb: 0,
        ..base
    })
    .unwrap();
    let r = strict.run(&job("data = b'x'\n"));
    assert!(!r.outcome.passed(), "{:?}", r.outcome);
}
