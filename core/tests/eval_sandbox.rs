//! Hostile candidates: each must be contained, recorded as a failure with its reason, and the
//! test process must survive. All of them also run together through one parallel pool.

use recode_core::eval::sandbox::{Confinement, Job, Outcome, Sandbox, SandboxConfig, TestCase};
use std::time::{Duration, Instant};

fn sandbox() -> Sandbox {
    // A small setup allowance: a memory bomb reaches the cgroup's limit (and its OOM kill) fast.
    let cfg = SandboxConfig {
        timeout: Duration::from_secs(4),
        memory_mb: 512,
        setup_memory_mb: 128,
        ..Default::default()
    };
    Sandbox::new(cfg).expect("python3 sandbox")
}

/// The explicit unsafe mode (no namespaces): socket guard, host temp dir. A longer wall limit than
/// `sandbox()`: under heavy load (a training run and a build on two cores) the memory bomb once
/// ran out of 4 s before its cgroup's OOM kill (Timeout instead of Memory).
fn fallback_sandbox() -> Sandbox {
    let cfg = SandboxConfig {
        timeout: Duration::from_secs(10),
        memory_mb: 512,
        confinement: Confinement::None,
        unsafe_no_sandbox: true,
        ..Default::default()
    };
    Sandbox::new(cfg).expect("python3 sandbox")
}

/// A job whose single test passes iff the candidate defined `f` returning 1 and got that far.
fn job(candidate: &str) -> Job {
    Job {
        setup: String::new(),
        candidate: candidate.into(),
        tests: vec![TestCase {
            name: "test_f".into(),
            code: "def test_f():\n    assert f() == 1\n".into(),
            call: "test_f()".into(),
        }],
    }
}

const OK: &str = "def f():\n    return 1\n";

fn hostile(outside: &std::path::Path, port: u16) -> Vec<(&'static str, String)> {
    let o = outside.display();
    vec![
        ("infinite_loop", format!("{OK}while True:\n    pass\n")),
        ("fork_bomb", format!("import os\n{OK}\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")),
        ("alloc_10gb", format!("{OK}x = bytearray(10 * 1024**3)\n")),
        ("write_outside", format!("{OK}open('{o}/written.txt', 'w').write('x')\n")),
        ("write_tmp_outside", format!("{OK}open('/tmp/recode-eval-outside-marker', 'w').write('x')\n")),
        ("delete_file", format!("import os\n{OK}os.remove('{o}/keep.txt')\n")),
        ("socket", format!("import socket\n{OK}socket.create_connection(('127.0.0.1', {port}), timeout=2)\n")),
        ("print_megabytes", format!("{OK}import sys\nfor _ in range(64):\n    sys.stdout.write('x' * (1 << 20))\n")),
        ("exit_early", format!("import os\n{OK}os._exit(0)\n")),
        ("sys_exit", format!("import sys\n{OK}sys.exit(0)\n")),
        ("kill_parent", format!("import os, signal\n{OK}os.kill(os.getppid(), signal.SIGKILL)\n")),
        ("kill_group", format!("import os, signal\n{OK}os.killpg(0, signal.SIGKILL)\n")),
        ("fake_marker", format!("import os\n{OK}os.write(1, b'{{\"done\": \"guess\", \"setup_error\": null, \"candidate_error\": null, \"memory\": false, \"tests\": []}}\\n')\nos._exit(0)\n")),
    ]
}

fn check(name: &str, outcome: &Outcome, sb: &Sandbox) {
    if name == "write_tmp_outside" && sb.isolation().mount_namespace {
        // /tmp inside is the job's private tmpfs: allowed, and `after_checks` verifies the host.
        return;
    }
    let unreachable_parent =
        sb.isolation().uid != own_euid() || (name == "kill_parent" && sb.isolation().pid_namespace);
    if matches!(name, "kill_parent" | "kill_group") && outcome.passed() && unreachable_parent {
        // The program's parent is the driver's trusted process (init of the pid namespace, which a
        // kill from inside does not reach) or runs as another uid: the signal reached nothing, and
        // the (correct) candidate is judged as usual.
        return;
    }
    assert!(!outcome.passed(), "{name} must not pass: {outcome:?}");
    assert!(
        outcome.counts(),
        "{name} is a candidate failure, not a harness one: {outcome:?}"
    );
    let iso = sb.isolation();
    match name {
        "infinite_loop" => assert!(matches!(outcome, Outcome::Timeout { .. }), "{name}: {outcome:?}"),
        "alloc_10gb" => assert!(matches!(outcome, Outcome::Memory), "{name}: {outcome:?}"),
        "print_megabytes" => assert!(matches!(outcome, Outcome::OutputLimit { .. }), "{name}: {outcome:?}"),
        "exit_early" => assert_eq!(outcome, &Outcome::Incomplete { exit_code: Some(0) }, "{name}"),
        "fake_marker" => assert_eq!(outcome, &Outcome::Incomplete { exit_code: Some(0) }, "{name}"),
        "kill_parent" | "kill_group" => {
            assert!(matches!(outcome, Outcome::Signal { signal: 9 }), "{name}: {outcome:?}")
        }
        "socket" if iso.net_namespace || iso.socket_guard => {
            assert!(matches!(outcome, Outcome::Failed { .. }), "{name}: {outcome:?}")
        }
        "write_outside" | "delete_file" if iso.mount_namespace => {
            let Outcome::Failed { reason } = outcome else {
                panic!("{name}: {outcome:?}")
            };
            // The host directory is not even visible in the sandbox's fresh root.
            assert!(
                reason.contains("Read-only file system") || reason.contains("No such file"),
                "{name}: {reason}"
            );
        }
        _ => {}
    }
}

fn own_euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|u| u.parse().ok())
        })
        .unwrap_or(0)
}

fn setup_outside() -> (tempfile::TempDir, std::net::TcpListener) {
    // Not under /tmp: the sandbox's /tmp is private, so this checks the read-only remount.
    let base = ["/var/tmp", "/dev/shm"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .unwrap_or(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::Builder::new()
        .prefix("recode-eval-outside")
        .tempdir_in(base)
        .unwrap();
    std::fs::write(dir.path().join("keep.txt"), "keep").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    (dir, listener)
}

fn after_checks(sb: &Sandbox, dir: &std::path::Path, listener: &std::net::TcpListener) {
    if sb.isolation().mount_namespace {
        assert!(!dir.join("written.txt").exists(), "a write escaped the sandbox");
        assert!(dir.join("keep.txt").exists(), "a delete escaped the sandbox");
        assert!(!std::path::Path::new("/tmp/recode-eval-outside-marker").exists());
    } else {
        eprintln!("no mount namespace here: writes outside the working dir are NOT prevented");
    }
    assert!(listener.accept().is_err(), "the candidate reached a host socket");
}

#[test]
fn each_hostile_candidate_is_contained() {
    let sb = sandbox();
    eprintln!("isolation: {:?}", sb.isolation());
    let (dir, listener) = setup_outside();
    for (name, code) in hostile(dir.path(), listener.local_addr().unwrap().port()) {
        let t = Instant::now();
        let r = sb.run(&job(&code));
        eprintln!("{name}: {:?} in {:.2}s", r.outcome, t.elapsed().as_secs_f64());
        check(name, &r.outcome, &sb);
        assert!(t.elapsed() < Duration::from_secs(10), "{name} took too long");
    }
    after_checks(&sb, dir.path(), &listener);
    // The harness still works afterwards.
    assert_eq!(sb.run(&job(OK)).outcome, Outcome::Passed);
}

#[test]
fn hostile_candidates_without_namespaces() {
    let sb = fallback_sandbox();
    assert!(sb.isolation().socket_guard && !sb.isolation().net_namespace);
    assert_eq!(sb.isolation().mode, "unsafe_no_sandbox");
    let (dir, listener) = setup_outside();
    // Writes outside the working dir are not prevented in this mode: leave those out.
    for (name, code) in hostile(dir.path(), listener.local_addr().unwrap().port()) {
        if name.starts_with("write") || name == "delete_file" {
            continue;
        }
        let r = sb.run(&job(&code));
        eprintln!("fallback {name}: {:?}", r.outcome);
        check(name, &r.outcome, &sb);
    }
    assert!(listener.accept().is_err(), "the candidate reached a host socket");
    let r = sb.run(&job(&format!("{OK}import os\nopen('here.txt', 'w').write('x')\n")));
    assert_eq!(
        r.outcome,
        Outcome::Passed,
        "the fresh working dir is writable: {}",
        r.stderr
    );
}

#[test]
fn hostile_candidates_in_one_parallel_run() {
    let sb = sandbox();
    let (dir, listener) = setup_outside();
    let mut jobs: Vec<(&str, String)> = hostile(dir.path(), listener.local_addr().unwrap().port());
    jobs.push(("good", OK.to_string()));
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = jobs
            .chunks(4)
            .map(|c| s.spawn(|| c.iter().map(|(n, code)| (*n, sb.run(&job(code)))).collect::<Vec<_>>()))
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    for (name, r) in &results {
        if *name == "good" {
            assert_eq!(
                r.outcome,
                Outcome::Passed,
                "good candidate among hostile ones: {}",
                r.stderr
            );
        } else {
            check(name, &r.outcome, &sb);
        }
    }
    after_checks(&sb, dir.path(), &listener);
}

#[test]
fn failures_carry_reasons() {
    let sb = sandbox();
    let r = sb.run(&job("def f():\n    return 2\n"));
    let Outcome::Failed { reason } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(
        reason.contains("test_f") && reason.contains("AssertionError"),
        "{reason}"
    );
    let r = sb.run(&job("def f(:\n"));
    let Outcome::Failed { reason } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(reason.starts_with("candidate: SyntaxError"), "{reason}");
    let mut j = job(OK);
    j.setup = "import surely_not_installed_pkg".into();
    assert!(matches!(sb.run(&j).outcome, Outcome::Environment { .. }));
    // Prints go to stderr, not into the result channel.
    let r = sb.run(&job(&format!("{OK}print('hello from candidate')\n")));
    assert_eq!(r.outcome, Outcome::Passed);
    assert!(r.stderr.contains("hello from candidate"));
}
