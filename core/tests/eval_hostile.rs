//! The hostile suite: each candidate's single test passes only if its attack worked, so every one
//! must fail; afterwards canaries outside the sandbox (a world-writable directory bound
//! read-only inside, a root-owned file, secrets, Unix-domain and abstract sockets listening on
//! the host, a host process) must be untouched and the harness must still run a good job.
//! Runs as root in each confinement mode that works here, and as an unprivileged user (uid
//! 65534, by re-running this test binary), as CI runs it.

use recode_core::eval::sandbox::{Confinement, Job, Outcome, Sandbox, SandboxConfig, TestCase};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const INNER: &str = "RECODE_HOSTILE_INNER_PYTHON";

fn job(candidate: &str) -> Job {
    Job {
        setup: String::new(),
        candidate: candidate.into(),
        tests: vec![TestCase {
            name: "attack_worked".into(),
            code: "def attack_worked():\n    assert f() == 1\n".into(),
            call: "attack_worked()".into(),
        }],
    }
}

fn euid() -> u32 {
    unsafe { libc::geteuid() }
}

/// Things outside the sandbox that attacks aim at.
struct Canaries {
    /// World-writable, bound read-only into the sandbox: only the mount protects it.
    visible: tempfile::TempDir,
    /// Not bound: secrets and sockets.
    hidden: tempfile::TempDir,
    root_secret: Option<PathBuf>,
    sockets: Vec<(PathBuf, UnixListener)>,
    abstract_name: String,
    _abstract: UnixListener,
    tcp: std::net::TcpListener,
    sleeper: Child,
}

impl Canaries {
    fn new() -> Self {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let visible = tempfile::Builder::new()
            .prefix("recode-hostile-visible")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(visible.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let keep = visible.path().join("keep.txt");
        std::fs::write(&keep, "keep").unwrap();
        std::fs::set_permissions(&keep, std::fs::Permissions::from_mode(0o666)).unwrap();
        let hidden = tempfile::Builder::new()
            .prefix("recode-hostile-hidden")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(hidden.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let secret = hidden.path().join("secret.txt");
        std::fs::write(&secret, "secret").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o666)).unwrap();
        // In root's home when we are root (the case that failed before), else in our own.
        let home = if euid() == 0 {
            Some(PathBuf::from("/root"))
        } else {
            std::env::var_os("HOME").map(PathBuf::from)
        };
        let root_secret = home
            .filter(|h| h.is_dir())
            .map(|h| h.join(format!(".recode-hostile-secret-{tag}")));
        if let Some(p) = &root_secret {
            std::fs::write(p, "secret").unwrap();
        }
        let mut sockets = vec![];
        for dir in [
            hidden.path().to_path_buf(),
            PathBuf::from("/run"),
            PathBuf::from("/var/run"),
        ] {
            let p = dir.join(format!("recode-hostile-{tag}.sock"));
            if let Ok(l) = UnixListener::bind(&p) {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777));
                l.set_nonblocking(true).unwrap();
                sockets.push((p, l));
            }
        }
        assert!(!sockets.is_empty());
        let abstract_name = format!("recode-hostile-{tag}");
        let addr =
            <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(&abstract_name)
                .unwrap();
        let abs = UnixListener::bind_addr(&addr).unwrap();
        abs.set_nonblocking(true).unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        tcp.set_nonblocking(true).unwrap();
        let sleeper = Command::new("sleep").arg("600").spawn().unwrap();
        Canaries {
            visible,
            hidden,
            root_secret,
            sockets,
            abstract_name,
            _abstract: abs,
            tcp,
            sleeper,
        }
    }

    fn secrets(&self) -> Vec<String> {
        let mut v = vec![self.hidden.path().join("secret.txt").display().to_string()];
        v.extend(self.root_secret.iter().map(|p| p.display().to_string()));
        v
    }

    /// Nothing changed, nothing connected, the host process lives.
    fn check(&mut self, what: &str) {
        let keep = self.visible.path().join("keep.txt");
        assert_eq!(
            std::fs::read_to_string(&keep).unwrap(),
            "keep",
            "{what}: the read-only canary changed"
        );
        let names: Vec<_> = std::fs::read_dir(self.visible.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{what}: files appeared next to the canary: {names:?}");
        assert_eq!(
            std::fs::read_to_string(self.hidden.path().join("secret.txt")).unwrap(),
            "secret",
            "{what}"
        );
        for (p, l) in &self.sockets {
            assert!(
                l.accept().is_err(),
                "{what}: the host socket {} accepted a connection",
                p.display()
            );
        }
        assert!(
            self._abstract.accept().is_err(),
            "{what}: the host's abstract socket accepted a connection"
        );
        assert!(
            self.tcp.accept().is_err(),
            "{what}: the host's TCP listener accepted a connection"
        );
        assert!(
            self.sleeper.try_wait().unwrap().is_none(),
            "{what}: a host process was killed"
        );
    }
}

impl Drop for Canaries {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
        for (p, _) in &self.sockets {
            let _ = std::fs::remove_file(p);
        }
        if let Some(p) = &self.root_secret {
            let _ = std::fs::remove_file(p);
        }
    }
}

const PRELUDE: &str =
    "import os, sys, ctypes, socket, time, platform, threading\nlibc = ctypes.CDLL(None, use_errno=True)\n";

/// (name, candidate): `f()` returns 1 only if the attack got through.
fn attacks(c: &Canaries) -> Vec<(&'static str, String)> {
    let vis = c.visible.path().display().to_string();
    let hidden = c.hidden.path().display().to_string();
    let socks: Vec<String> = c.sockets.iter().map(|(p, _)| p.display().to_string()).collect();
    let secrets = c.secrets();
    let sleeper = c.sleeper.id();
    let root_file = "/etc/hostname".to_string();
    let clone_nr = if cfg!(target_arch = "aarch64") { 220 } else { 56 };
    let a = |body: String| format!("{PRELUDE}def f():\n{body}\n");
    vec![
        ("remount_rw_then_write", a(format!(
            "    for p in (b'/', {vis:?}.encode(), b'/tmp/..'):\n        libc.mount(None, p, None, 32 | 4096, None)\n\
             \x20   for name in ('keep.txt', 'new.txt'):\n        try:\n            open({vis:?} + '/' + name, 'w').write('changed')\n            return 1\n        except OSError:\n            pass\n\
             \x20   try:\n        os.remove({vis:?} + '/keep.txt')\n        return 1\n    except OSError:\n        return 0"
        ))),
        ("write_root_owned_host_file", a(format!(
            "    for p in ({root_file:?}, '/proc/1/root' + {root_file:?}, '/proc/self/root' + {root_file:?}, {hidden:?} + '/secret.txt', '/proc/1/root' + {hidden:?} + '/secret.txt'):\n\
             \x20       try:\n            open(p, 'a').write('x')\n            return 1\n        except OSError:\n            pass\n    return 0"
        ))),
        ("host_unix_sockets", a(format!(
            "    for p in {socks:?} + ['/run/docker.sock', '/var/run/docker.sock', '/run/systemd/private']:\n\
             \x20       s = socket.socket(socket.AF_UNIX)\n        try:\n            s.connect(p)\n            return 1\n        except OSError:\n            pass\n    return 0"
        ))),
        ("host_abstract_socket", a(format!(
            "    s = socket.socket(socket.AF_UNIX)\n    try:\n        s.connect('\\0' + {:?})\n        return 1\n    except OSError:\n        return 0",
            c.abstract_name
        ))),
        ("host_tcp", a(format!(
            "    try:\n        socket.create_connection(('127.0.0.1', {}), timeout=1)\n        return 1\n    except OSError:\n        return 0",
            c.tcp.local_addr().unwrap().port()
        ))),
        ("other_socket_families", a(
            "    for fam in (16, 17, 40, 38):\n        try:\n            socket.socket(fam, socket.SOCK_RAW if fam != 38 else socket.SOCK_SEQPACKET)\n            return 1\n        except OSError:\n            pass\n    return 0".into()
        )),
        ("read_secrets_root_home_run", a(format!(
            "    for p in {secrets:?}:\n        try:\n            if 'secret' in open(p).read():\n                return 1\n        except OSError:\n            pass\n\
             \x20   for d in ('/home', '/run', '/var/run', '/var/lib', '/var/log', '/work', '/sys', '/root/.cargo', '/root/.bashrc', '/mnt'):\n        if os.path.exists(d):\n            return 1\n    return 0"
        ))),
        ("mount_unshare_setns_ptrace_clone", a(format!(
            "    ok = 0\n    os.makedirs('/tmp/m', exist_ok=True)\n\
             \x20   if libc.mount(b'none', b'/tmp/m', b'tmpfs', 0, None) == 0: ok = 1\n\
             \x20   for flag in (0x10000000, 0x20000, 0x40000000):\n        if libc.unshare(flag) == 0: ok = 1\n\
             \x20   for ns in ('net', 'mnt', 'user', 'pid'):\n        try:\n            fd = os.open('/proc/1/ns/' + ns, os.O_RDONLY)\n            if libc.setns(fd, 0) == 0: ok = 1\n        except OSError:\n            pass\n\
             \x20   pid = os.fork()\n    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n\
             \x20   if libc.ptrace(16, pid, None, None) == 0: ok = 1\n    os.kill(pid, 9)\n    os.waitpid(pid, 0)\n\
             \x20   r = libc.syscall({clone_nr}, 0x10000000 | 17, 0, 0, 0, 0)\n    if r == 0:\n        os._exit(0)\n    if r > 0:\n        ok = 1\n    return ok"
        ))),
        ("write_proc_sys_and_sys", a(
            "    for p in ('/proc/sys/kernel/hostname', '/proc/sys/vm/drop_caches', '/proc/sysrq-trigger', '/proc/sys/kernel/core_pattern', '/sys/kernel/uevent_helper', '/sys/fs/cgroup/cgroup.procs'):\n\
             \x20       try:\n            open(p, 'w').write('1')\n            return 1\n        except OSError:\n            pass\n    return 0".into()
        )),
        ("kill_host_pid", a(format!(
            "    try:\n        os.kill(-1, 9)\n    except OSError:\n        pass\n    try:\n        os.kill({sleeper}, 9)\n        return 1\n    except OSError:\n        return 0"
        ))),
        ("setuid_root_and_capabilities", a(
            "    for call in (lambda: os.setuid(0), lambda: os.setresuid(0, 0, 0), lambda: os.setgid(0), lambda: os.setgroups([0])):\n\
             \x20       try:\n            call()\n            return 1\n        except OSError:\n            pass\n\
             \x20   st = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)\n\
             \x20   if any(int(st[k].strip(), 16) for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb')): return 1\n\
             \x20   if st['NoNewPrivs'].strip() != '1' or st['Seccomp'].strip() != '2': return 1\n\
             \x20   return 1 if os.getuid() == 0 or os.geteuid() == 0 else 0".into()
        )),
        ("device_nodes", a(
            "    for p in ('/dev/vda', '/dev/sda', '/dev/nvme0n1', '/dev/mem', '/dev/kmem', '/dev/port', '/dev/kmsg', '/dev/tty', '/dev/console', '/dev/fuse', '/dev/net/tun'):\n\
             \x20       try:\n            os.close(os.open(p, os.O_RDONLY))\n            return 1\n        except OSError:\n            pass\n\
             \x20   try:\n        os.mknod('/tmp/mem', 0o20600, os.makedev(1, 1))\n        return 1\n    except OSError:\n        pass\n\
             \x20   extra = set(os.listdir('/dev')) - {'null', 'zero', 'full', 'random', 'urandom', 'shm', 'fd', 'stdin', 'stdout', 'stderr'}\n\
             \x20   return 1 if extra else 0".into()
        )),
        ("thread_bomb", a(
            "    n = 0\n    try:\n        while n < 5000:\n            threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n            n += 1\n    except RuntimeError:\n        pass\n    return 1 if n >= 5000 else 0".into()
        )),
        ("fork_bomb", a(
            "    n = 0\n    while n < 5000:\n        try:\n            if os.fork() == 0:\n                time.sleep(30)\n                os._exit(0)\n            n += 1\n        except OSError:\n            break\n    return 1 if n >= 5000 else 0".into()
        )),
    ]
}

fn sandbox(confinement: Confinement, python: Option<&Path>, canaries: &Canaries) -> anyhow::Result<Sandbox> {
    let mut cfg = SandboxConfig {
        timeout: Duration::from_secs(8),
        memory_mb: 512,
        setup_memory_mb: 128,
        confinement,
        ro_paths: vec![canaries.visible.path().to_path_buf()],
        ..Default::default()
    };
    if let Some(p) = python {
        cfg.python = p.to_path_buf();
    }
    Sandbox::new(cfg)
}

/// Every attack fails, the canaries hold, the harness still works.
fn run_suite(confinement: Confinement, python: Option<&Path>) -> Option<String> {
    let mut canaries = Canaries::new();
    let sb = match sandbox(confinement, python, &canaries) {
        Ok(sb) => sb,
        Err(e) => return Some(format!("{e:#}")),
    };
    let iso = sb.isolation().clone();
    eprintln!("isolation ({confinement:?}, euid {}): {iso:?}", euid());
    assert!(
        iso.private_root && iso.no_capabilities && iso.pid_namespace && iso.net_namespace,
        "{iso:?}"
    );
    assert_ne!(iso.uid, 0, "{iso:?}");
    assert!(
        iso.read_only.iter().any(|p| Path::new(p) == canaries.visible.path()),
        "{iso:?}"
    );
    for (name, code) in attacks(&canaries) {
        let t = Instant::now();
        let r = sb.run(&job(&code));
        eprintln!("{name}: {:?} in {:.2}s", r.outcome, t.elapsed().as_secs_f64());
        assert!(
            !r.outcome.passed(),
            "{name}: the attack worked ({:?}) {}",
            iso.mode,
            r.stderr
        );
        assert!(
            r.outcome.counts(),
            "{name}: a harness failure, not a candidate one: {:?}",
            r.outcome
        );
        // The attack's own code ran: it returned 0 (a clean failure) or was stopped by a limit.
        if let Outcome::Failed { reason } = &r.outcome {
            assert!(
                reason.contains("AssertionError") || name.ends_with("bomb"),
                "{name}: {reason}\n{}",
                r.stderr
            );
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{name} took too long");
        canaries.check(name);
    }
    let good = sb.run(&job("def f():\n    return 1\n"));
    assert_eq!(good.outcome, Outcome::Passed, "the harness survives: {}", good.stderr);
    // A file of the visible directory is readable inside (so the read-only check above was real).
    let read = format!(
        "def f():\n    return 1 if open({:?}).read() == 'keep' else 0\n",
        canaries.visible.path().join("keep.txt").display().to_string()
    );
    assert_eq!(sb.run(&job(&read)).outcome, Outcome::Passed);
    None
}

#[test]
fn hostile_suite_as_root_in_each_mode() {
    if std::env::var_os(INNER).is_some() {
        return;
    }
    if euid() != 0 {
        recode_test_support::skip(
            "the root modes of the hostile suite: not root (the unprivileged run covers this user)",
        );
        return;
    }
    assert_eq!(
        run_suite(Confinement::Root, None),
        None,
        "the root mode must work as root"
    );
    // The unprivileged uid cannot reach a Python under /root (mode 700): use the system's.
    let system = Path::new("/usr/bin/python3");
    if let Some(why) = run_suite(Confinement::UserNamespace, system.exists().then_some(system)) {
        recode_test_support::skip_or_fail_in_ci(&format!("the user-namespace mode as root: {why}"));
    }
}

/// As uid 65534: this binary again, with its shared libraries copied where that uid can read
/// them (rustup's live under /root), and a Python that uid can run.
#[test]
fn hostile_suite_as_unprivileged_user() {
    if let Some(python) = std::env::var_os(INNER) {
        assert_ne!(euid(), 0);
        let python = PathBuf::from(python);
        if let Some(why) = run_suite(Confinement::Auto, Some(&python)) {
            // Refused loudly where no isolation works; that is the documented behaviour.
            assert!(why.contains("--unsafe-no-sandbox"), "{why}");
            panic!("REFUSED: {why}");
        }
        return;
    }
    if euid() != 0 {
        assert_eq!(run_suite(Confinement::Auto, None), None);
        return;
    }
    let nobody = |cmd: &mut Command| {
        use std::os::unix::process::CommandExt;
        unsafe {
            cmd.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(65534, 65534, 65534) != 0
                    || libc::setresuid(65534, 65534, 65534) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    };
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            let mut c = Command::new(p);
            c.args(["-c", "pass"]).current_dir("/");
            nobody(&mut c);
            c.output().is_ok_and(|o| o.status.success())
        });
    let Some(python) = python else {
        recode_test_support::skip_or_fail_in_ci(
            "hostile suite as uid 65534: no python3 that uid can run (/usr/bin/python3, /usr/local/bin/python3)",
        );
        return;
    };
    let libs = tempfile::Builder::new()
        .prefix("recode-hostile-libs")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(libs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let exe_copy = libs.path().join("eval_hostile");
    std::fs::copy(&exe, &exe_copy).unwrap();
    let mut maps = String::new();
    std::fs::File::open("/proc/self/maps")
        .unwrap()
        .read_to_string(&mut maps)
        .unwrap();
    for lib in maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains(".so"))
    {
        let p = Path::new(lib);
        if !(p.starts_with("/usr") || p.starts_with("/lib")) {
            let _ = std::fs::copy(p, libs.path().join(p.file_name().unwrap()));
        }
    }
    for e in std::fs::read_dir(libs.path()).unwrap().flatten() {
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut c = Command::new(&exe_copy);
    c.args([
        "--exact",
        "hostile_suite_as_unprivileged_user",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(INNER, &python)
    .env("LD_LIBRARY_PATH", libs.path())
    .env("HOME", "/var/tmp")
    .current_dir("/var/tmp");
    nobody(&mut c);
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- as uid 65534 ---\n{text}");
    if !out.status.success() && text.contains("REFUSED") {
        recode_test_support::skip_or_fail_in_ci(
            "hostile suite as uid 65534: the sandbox refused (see above): no unprivileged user namespaces here",
        );
        return;
    }
    assert!(out.status.success(), "the hostile suite failed as uid 65534");
    assert!(text.contains("1 passed"), "{text}");
}

/// Memory is the job tree's, through the cgroup: reserving address space is free, touching it
/// is not, and an OOM kill is `Memory`.
#[test]
fn memory_is_counted_not_mapped() {
    if std::env::var_os(INNER).is_some() {
        return;
    }
    let canaries = Canaries::new();
    let sb = sandbox(Confinement::Auto, None, &canaries).unwrap();
    if !sb.isolation().memory_cgroup {
        recode_test_support::skip_or_fail_in_ci(
            "memory cgroup checks: no memory cgroup here (the address-space limit is used)",
        );
        return;
    }
    let reserve = format!("{PRELUDE}libc.mmap.restype = ctypes.c_void_p\nlibc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]\n\
        p = libc.mmap(None, 8 << 30, 0, 0x22 | 0x4000, -1, 0)\ndef f():\n    return 1 if p not in (None, 2**64 - 1) else 0\n");
    let r = sb.run(&job(&reserve));
    assert_eq!(
        r.outcome,
        Outcome::Passed,
        "an 8 GiB PROT_NONE reservation under 512 MiB: {}",
        r.stderr
    );
    let t = Instant::now();
    let r = sb.run(&job("x = bytearray(2 << 30)\ndef f():\n    return 1\n"));
    assert_eq!(
        r.outcome,
        Outcome::Memory,
        "touching 2 GiB under 512 MiB ({:.1}s): {}",
        t.elapsed().as_secs_f64(),
        r.stderr
    );
    let Some(python) = recode_test_support::python("numpy import under a 512 MiB memory limit") else {
        return;
    };
    let sb = sandbox(Confinement::Auto, Some(&python), &canaries).unwrap();
    let r = sb.run(&job(
        "import numpy as np\ndef f():\n    return int(np.ones(1000).sum() == 1000)\n",
    ));
    assert_eq!(r.outcome, Outcome::Passed, "numpy under 512 MiB: {}", r.stderr);
}
