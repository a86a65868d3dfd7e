//! Candidates that try to forge a pass: each has a WRONG `f` (returns 2, both tests want 1) and
//! attacks the harness's state instead (its nonce, its report channel, its result structures, its
//! functions, its process). None may pass, and no single test may be reported as passing. Also:
//! what still works (a correct solution, prints, per-test times, one test timing out alone,
//! lambdas, exceptions, numpy values) and the limit that remains (an object equal to everything).

use recode_core::eval::sandbox::{Job, Outcome, RunResult, Sandbox, SandboxConfig, TestCase};
use std::time::Duration;

fn sandbox(timeout_s: u64) -> Sandbox {
    let cfg = SandboxConfig {
        timeout: Duration::from_secs(timeout_s),
        memory_mb: 512,
        ..Default::default()
    };
    Sandbox::new(cfg).expect("python3 sandbox")
}

fn test(name: &str, body: &str) -> TestCase {
    TestCase {
        name: name.into(),
        code: format!("def {name}():\n{body}"),
        call: format!("{name}()"),
    }
}

/// `test_b` fails for a wrong `f` unless `abs` or `len` are the candidate's.
fn job(candidate: &str) -> Job {
    Job {
        setup: String::new(),
        candidate: candidate.into(),
        tests: vec![
            test("test_a", "    assert f() == 1\n"),
            test("test_b", "    assert abs(f() - 1) < 1e-9 and len([f()]) == 1\n"),
        ],
    }
}

/// Helpers for the attacks: a fake report line for both tests, every 32-hex-digit string
/// (the nonce's shape) reachable from gc and the frames, and a write to every descriptor.
const FORGE: &str = r#"
def fake_line(nonce):
    import json
    t = [{"name": n, "ok": True, "error": None, "wall_s": 0.0, "cpu_s": 0.0} for n in ("test_a", "test_b")]
    return (json.dumps({"done": nonce, "setup_error": None, "candidate_error": None, "memory": False, "tests": t}) + "\n").encode()

def nonces():
    import gc, re, sys
    found, pat = set(), re.compile(r"[0-9a-f]{32}")
    for o in gc.get_objects():
        for v in (o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else ()):
            if isinstance(v, (str, bytes)):
                found.update(pat.findall(v if isinstance(v, str) else v.decode("latin-1")))
    fr = sys._getframe()
    while fr:
        for v in list(fr.f_locals.values()) + list(fr.f_globals.values()):
            if isinstance(v, str):
                found.update(pat.findall(v))
        fr = fr.f_back
    return found or {"0" * 32}

def spray(data):
    import os
    for fd in range(256):
        try:
            os.write(fd, data)
        except OSError:
            pass
"#;

const WRONG: &str = "def f():\n    return 2\n";

fn hostile() -> Vec<(&'static str, String)> {
    vec![
        ("nonce_from_memory_to_every_fd", format!("{FORGE}for n in nonces():\n    spray(fake_line(n))\n{WRONG}")),
        ("fd_writes_during_the_test", format!("{FORGE}def f():\n    for n in nonces():\n        spray(fake_line(n))\n    return 2\n")),
        (
            "patch_result_dicts_via_gc",
            "import gc\ndef f():\n    for o in gc.get_objects():\n        if isinstance(o, dict) and 'ok' in o:\n            o.update(ok=True, error=None)\n        if isinstance(o, dict) and 'tests' in o:\n            o['candidate_error'] = None\n    return 2\n".into(),
        ),
        (
            "patch_frames_and_closure_cells",
            "import sys, gc, types\ndef f():\n    fr = sys._getframe()\n    while fr:\n        for v in list(fr.f_locals.values()):\n            if isinstance(v, dict):\n                v['ok'] = True\n        fr = fr.f_back\n    for o in gc.get_objects():\n        if isinstance(o, types.FunctionType) and o.__closure__:\n            for c in o.__closure__:\n                try:\n                    if isinstance(c.cell_contents, dict):\n                        c.cell_contents['ok'] = True\n                except ValueError:\n                    pass\n    return 2\n".into(),
        ),
        (
            "replace_the_drivers_functions",
            format!("import sys\nm = sys.modules['__main__']\nfor name in dir(m):\n    if name.startswith('_') and not name.startswith('__') and callable(getattr(m, name)):\n        setattr(m, name, lambda *a, **k: None)\n{WRONG}"),
        ),
        (
            "monkeypatch_builtins_json_and_assertionerror",
            format!("import builtins, json\nclass Never(Exception):\n    pass\nbuiltins.AssertionError = Never\njson.dumps = lambda *a, **k: '{{\"ok\": true}}'\nbuiltins.abs = lambda x: 0\n{WRONG}"),
        ),
        ("shadow_builtins_the_test_uses", format!("abs = lambda x: 0\nlen = lambda x: 1\n{WRONG}")),
        ("os_exit_mid_test", "import os\ndef f():\n    os._exit(0)\n".into()),
        ("sys_exit_mid_test", "import sys\ndef f():\n    sys.exit(0)\n".into()),
        ("kill_the_trusted_parent", "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 2\n".into()),
        // A call raising StopIteration would end a test's map()/all() early, as if all passed.
        ("stop_iteration_from_a_call", "def f():\n    raise StopIteration\n".into()),
        (
            "proc_fd_and_mem_of_the_parent",
            format!("{FORGE}import os, re\ndef f():\n    p, got = os.getppid(), set()\n    try:\n        got.add(open('/proc/%d/fd/0' % p, 'rb').read(64).decode('latin-1').strip())\n    except OSError:\n        pass\n    try:\n        with open('/proc/%d/maps' % p) as m, open('/proc/%d/mem' % p, 'rb') as mem:\n            for line in m:\n                lo, hi = (int(x, 16) for x in line.split()[0].split('-'))\n                try:\n                    mem.seek(lo)\n                    got.update(x.decode() for x in re.findall(rb'[0-9a-f]{{32}}', mem.read(min(hi - lo, 1 << 24))))\n                except (OSError, ValueError, OverflowError):\n                    pass\n    except OSError:\n        pass\n    for fd in range(256):\n        try:\n            w = os.open('/proc/%d/fd/%d' % (p, fd), os.O_WRONLY)\n        except OSError:\n            continue\n        for n in got | nonces():\n            os.write(w, fake_line(n))\n    return 2\n"),
        ),
        ("ptrace_the_parent", "import ctypes, os\ndef f():\n    ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0)\n    return 2\n".into()),
        (
            "threads_atexit_and_signal_handlers_after_the_test",
            format!("{FORGE}import threading, atexit, signal, time\ndef later(*_):\n    time.sleep(0.3)\n    for n in nonces():\n        spray(fake_line(n))\nthreading.Thread(target=later, daemon=True).start()\natexit.register(later)\nsignal.signal(signal.SIGTERM, later)\n{WRONG}"),
        ),
        (
            "grandchild_that_outlives_its_test",
            format!("{FORGE}import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(0.5)\n    for n in nonces():\n        spray(fake_line(n))\n    os._exit(0)\n{WRONG}"),
        ),
        (
            "forged_messages_on_its_own_channel",
            "import os, json, struct\ndef f():\n    for node in (['reply', ['M', 'os', 0]], ['reply', ['L', 0]], ['reply', ['nd', '|O8', [1], 0]], ['ready', []]):\n        body = json.dumps(node).encode()\n        for fd in range(3, 64):\n            try:\n                os.write(fd, struct.pack('<Q', len(body)) + body + struct.pack('<QQ', 1, 8) + bytes(8))\n            except OSError:\n                pass\n    return 2\n".into(),
        ),
    ]
}

fn assert_no_pass(name: &str, r: &RunResult) {
    assert!(
        !r.outcome.passed(),
        "{name} forged a pass: {:?}\n{}",
        r.outcome,
        r.stderr
    );
    assert!(
        r.outcome.counts(),
        "{name} is the candidate's failure, not the harness's: {:?}",
        r.outcome
    );
    let ok: Vec<_> = r.tests.iter().filter(|t| t.ok).map(|t| &t.name).collect();
    assert!(
        ok.is_empty(),
        "{name}: tests reported as passing: {ok:?} ({:?})",
        r.outcome
    );
}

#[test]
fn no_hostile_candidate_forges_a_pass() {
    let sb = sandbox(4);
    eprintln!("isolation: {:?}", sb.isolation());
    for (name, code) in hostile() {
        let r = sb.run(&job(&code));
        eprintln!(
            "{name}: {:?} tests {:?}",
            r.outcome,
            r.tests.iter().map(|t| (&t.name, t.ok, &t.error)).collect::<Vec<_>>()
        );
        assert_no_pass(name, &r);
        match name {
            "os_exit_mid_test" => assert_eq!(r.outcome, Outcome::Incomplete { exit_code: Some(0) }, "{name}"),
            // With a pid namespace the trusted process is its init, which a kill from inside
            // does not reach; without one it dies, and so does the report.
            "kill_the_trusted_parent" => assert!(
                matches!(r.outcome, Outcome::Signal { signal: 9 } | Outcome::Failed { .. }),
                "{name}: {:?}",
                r.outcome
            ),
            "stop_iteration_from_a_call" | "sys_exit_mid_test" => {
                let Outcome::Failed { reason } = &r.outcome else {
                    panic!("{name}: {:?}", r.outcome)
                };
                assert!(
                    reason.contains("StopIteration") || reason.contains("SystemExit"),
                    "{name}: {reason}"
                );
            }
            _ => {}
        }
    }
    // The harness is unharmed.
    assert_eq!(sb.run(&job("def f():\n    return 1\n")).outcome, Outcome::Passed);
}

#[test]
fn an_object_equal_to_everything_is_the_limit_that_remains() {
    let sb = sandbox(4);
    let yes = "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\ndef f():\n    return Yes()\n";
    let eq_only = Job {
        tests: vec![test("test_a", "    assert f() == 1\n")],
        ..job(yes)
    };
    // Documented in docs/evaluation.md: `==` on a result that is not plain data runs the candidate's
    // __eq__ (in its own process), so this wrong solution passes, as in HumanEval's harness.
    assert_eq!(sb.run(&eq_only).outcome, Outcome::Passed);
    // Plain-data checks are not fooled: the result is not an int, nor does arithmetic work.
    let typed = Job {
        tests: vec![test("test_t", "    assert type(f()) is int and f() == 1\n")],
        ..job(yes)
    };
    assert!(!sb.run(&typed).outcome.passed());
    assert!(!sb.run(&job(yes)).outcome.passed());
}

#[test]
fn correct_solution_prints_and_per_test_times() {
    let sb = sandbox(4);
    let code = "print('hello from the candidate')\ndef f():\n    print('inside f')\n    x = 0\n    for i in range(3_000_000):\n        x += i\n    return 1\n";
    let r = sb.run(&job(code));
    assert_eq!(r.outcome, Outcome::Passed, "{}", r.stderr);
    assert!(
        r.stderr.contains("hello from the candidate") && r.stderr.contains("inside f"),
        "{}",
        r.stderr
    );
    assert_eq!(r.tests.len(), 2);
    for t in &r.tests {
        assert!(t.ok && t.error.is_none(), "{t:?}");
        // f loops 3M times in the candidate's process: CPU time is measured there.
        assert!(t.cpu_s > 0.02 && t.wall_s >= t.cpu_s * 0.5 && t.wall_s < 4.0, "{t:?}");
    }
}

#[test]
fn a_test_that_loops_forever_times_out_alone() {
    let sb = sandbox(3);
    let j = Job {
        setup: String::new(),
        candidate: "def f():\n    return 1\ndef g():\n    while True:\n        pass\n".into(),
        tests: vec![
            test("test_a", "    assert f() == 1\n"),
            test("test_loop", "    g()\n"),
            test("test_c", "    assert f() == 1\n"),
        ],
    };
    let r = sb.run(&j);
    assert_eq!(r.outcome, Outcome::Timeout { cpu: false }, "{:?}", r.tests);
    let t: Vec<_> = r.tests.iter().map(|t| (t.name.as_str(), t.ok, t.timeout)).collect();
    assert_eq!(
        t,
        [
            ("test_a", true, false),
            ("test_loop", false, true),
            ("test_c", true, false)
        ]
    );
    // Its own 3 s plus what test_a left unused.
    assert!((2.9..6.5).contains(&r.tests[1].wall_s), "{:?}", r.tests[1]);
    assert!(r.wall_s < 9.5, "the job took {:.1}s", r.wall_s);
}

#[test]
fn values_exceptions_and_callbacks_cross_the_boundary() {
    let sb = sandbox(4);
    let candidate = "import collections\nclass Box:\n    def __init__(self, v):\n        self.v = v\n    def get(self):\n        return self.v\ndef apply(fn, x, *, times=1):\n    for _ in range(times):\n        x = fn(x)\n    return x\ndef parse(s):\n    if not s:\n        raise ValueError('empty input')\n    return {'n': int(s), 't': (1, 2.5, None), 'b': b'\\x00', 's': {3}, 'c': 1+2j}\ndef gen(n):\n    yield from range(n)\ndef counts(s):\n    return collections.Counter(s)\n";
    let body = "    assert apply(lambda v: v * 2, 3, times=2) == 12\n    r = parse('7')\n    assert type(r) is dict and r == {'n': 7, 't': (1, 2.5, None), 'b': b'\\x00', 's': {3}, 'c': 1+2j}\n    try:\n        parse('')\n        assert False, 'no exception'\n    except ValueError as e:\n        assert 'empty input' in str(e)\n    assert list(gen(4)) == [0, 1, 2, 3] and sum(gen(4)) == 6\n    b = Box([1, 2])\n    assert b.get() == [1, 2] and b.v == [1, 2] and isinstance(b, Box)\n    assert counts('aab')['a'] == 2 and isinstance(counts('a'), dict)\n";
    let j = Job {
        setup: String::new(),
        candidate: candidate.into(),
        tests: vec![test("test_all", body)],
    };
    let r = sb.run(&j);
    assert_eq!(r.outcome, Outcome::Passed, "{:?}\n{}", r.tests, r.stderr);
    let Some(python) = recode_test_support::python("numpy values across the sandbox boundary") else {
        return;
    };
    let sb = Sandbox::new(SandboxConfig {
        python,
        timeout: Duration::from_secs(4),
        ..Default::default()
    })
    .unwrap();
    let j = Job {
        setup: "import numpy as np\n".into(),
        candidate: "import numpy as np\ndef scaled(a, k):\n    return (a * k).astype(np.float32), np.int16(k), np.asfortranarray(np.arange(6).reshape(2, 3))\ndef odd():\n    return np.array(2.5), np.zeros((0, 3)), np.array(['2020-01-01'], dtype='datetime64[D]'), np.array([1, 'a'], dtype=object), np.float64\n".into(),
        tests: vec![test(
            "test_np",
            "    a, k, m = scaled(np.ones(3), 2)\n    assert type(a) is np.ndarray and a.dtype == np.float32 and np.array_equal(a, [2, 2, 2])\n    assert type(k) is np.int16 and k == 2\n    assert m.shape == (2, 3) and m[1, 2] == 5\n    z, e, d, o, cls = odd()\n    assert z.shape == () and z == 2.5 and e.shape == (0, 3) and d[0] == np.datetime64('2020-01-01')\n    # An object array stays in the candidate's process; a library class is numpy's own.\n    assert type(o) is not np.ndarray and o.tolist() == [1, 'a'] and cls is np.float64\n",
        )],
    };
    let r = sb.run(&j);
    assert_eq!(r.outcome, Outcome::Passed, "{:?}\n{}", r.tests, r.stderr);
}

#[test]
fn objects_of_the_test_lead_the_candidate_nowhere() {
    let sb = sandbox(4);
    // The test hands over a generator: its frame would lead to the driver's locals and functions.
    let walk = "def f(g):\n    fr = g.gi_frame\n    while fr is not None:\n        if 'exec_trusted' in fr.f_locals:\n            fr.f_locals['exec_trusted'](\"import os\\nos.write(1, b'forged')\", 'x', {})\n        fr = fr.f_back\n    return 2\n";
    let j = Job {
        setup: String::new(),
        candidate: walk.into(),
        tests: vec![test("test_g", "    assert f(x for x in range(3)) == 1\n")],
    };
    let r = sb.run(&j);
    let Outcome::Failed { reason } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(reason.contains("may not do 'getattr'"), "{reason}");
    // An object of the test's own class still works as an argument: attributes and methods.
    let use_obj = "def g(obj):\n    return obj.value + obj.double(2)\n";
    let body = "    class Obj:\n        value = 3\n        def double(self, x):\n            return 2 * x\n    assert g(Obj()) == 7\n";
    let j = Job {
        setup: String::new(),
        candidate: use_obj.into(),
        tests: vec![test("test_o", body)],
    };
    assert_eq!(sb.run(&j).outcome, Outcome::Passed);
}
