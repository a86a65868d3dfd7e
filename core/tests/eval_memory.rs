//! The address-space limit applies to the candidate on top of what the setup mapped: the CUDA
//! build of torch maps ~3 GiB of shared libraries at import, which must not eat the candidate's
//! `memory_mb`, while a candidate that allocates too much still fails with `Memory`.

use recode_core::eval::sandbox::{Job, Outcome, Sandbox, SandboxConfig, TestCase};
use std::time::Duration;

/// The setup maps 1.5 GiB (untouched, as a library mapping would be) with a 512 MiB limit.
fn job(candidate: &str) -> Job {
    Job {
        setup: "import mmap\n_big = mmap.mmap(-1, 1536 << 20)\n".into(),
        candidate: candidate.into(),
        tests: vec![TestCase { name: "t".into(), code: "def t():\n    assert len(data) > 0\n".into(), call: "t()".into() }],
    }
}

#[test]
fn memory_limit_counts_from_after_the_setup() {
    let cfg = SandboxConfig { timeout: Duration::from_secs(10), memory_mb: 512, ..Default::default() };
    let sb = Sandbox::new(cfg).unwrap();
    let ok = sb.run(&job("data = bytearray(200 << 20)\n"));
    assert!(ok.outcome.passed(), "200 MiB after a 1.5 GiB setup: {:?} {}", ok.outcome, ok.stderr);
    let big = sb.run(&job("data = bytearray(1024 << 20)\n"));
    assert!(matches!(big.outcome, Outcome::Memory), "1 GiB over a 512 MiB limit: {:?}", big.outcome);
    // Without headroom the setup itself cannot map that much.
    let strict = Sandbox::new(SandboxConfig { memory_mb: 512, setup_headroom_mb: 0, ..Default::default() }).unwrap();
    let r = strict.run(&job("data = b'x'\n"));
    assert!(!r.outcome.passed(), "{:?}", r.outcome);
}
