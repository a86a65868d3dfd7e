//! Running untrusted Python: one process per job, confined, time- and size-bounded.
//!
//! Mechanisms (each probed once; `Isolation` records which are in force):
//! - network, mount and pid namespaces (unshare in pre_exec, needs root or CAP_SYS_ADMIN): no
//!   network at all, the whole filesystem read-only except a private size-limited tmpfs /tmp that
//!   is the working directory, and every process of the job dies with it. Without them: a
//!   Python-level socket guard and a fresh host temp dir (writes elsewhere are then possible).
//! - a fresh pids cgroup per job (bounds fork bombs, also for root, for whom RLIMIT_NPROC is void).
//! - rlimits: CPU time, address space, file size, open files, core size (+ NPROC for non-root).
//! - own session/process group, SIGKILLed as a whole on timeout; PDEATHSIG if the harness dies.
//! - clean environment; stdout/stderr read concurrently with a size cap.

mod confine;
mod job;

pub use job::{Job, Outcome, RunResult, TestCase, TestResult};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::ffi::CString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DRIVER: &str = include_str!("sandbox/driver.py");
const CGROUP_ROOTS: [&str; 2] = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"];

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Python interpreter; resolved to the real executable (pyenv shims need a full environment).
    pub python: PathBuf,
    /// Wall-time limit per unit test: a job with T tests gets T times this (as when
    /// CodeUpdateArena runs each test as its own program).
    pub timeout: Duration,
    /// Address-space limit of the candidate and its tests, MiB, on top of what the setup
    /// (trusted dataset code: imports, the update) mapped: importing the CUDA build of torch
    /// alone maps ~3 GiB of shared libraries without using that much memory.
    pub memory_mb: u64,
    /// Address space the setup may map beyond `memory_mb`, MiB (the limit before the candidate).
    pub setup_headroom_mb: u64,
    /// Largest file the program may write, MiB (also the size of the private /tmp).
    pub file_mb: u64,
    /// Tasks (processes and threads) per job.
    pub max_tasks: u64,
    /// Bytes kept from each of stdout and stderr; more is an `OutputLimit` failure.
    pub output_cap: usize,
    /// Use namespaces and a pids cgroup where they work (false forces the fallbacks, for tests).
    pub use_namespaces: bool,
    pub use_cgroup: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            python: "python3".into(),
            timeout: Duration::from_secs(10),
            memory_mb: 2048,
            setup_headroom_mb: 6144,
            file_mb: 16,
            max_tasks: 32,
            output_cap: 1 << 20,
            use_namespaces: true,
            use_cgroup: true,
        }
    }
}

/// Which confinement mechanisms are in force.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Isolation {
    pub net_namespace: bool,
    pub mount_namespace: bool,
    pub pid_namespace: bool,
    /// Python-level guard replacing `socket` (used when there is no network namespace).
    pub socket_guard: bool,
    pub pids_cgroup: bool,
    /// RLIMIT_NPROC has effect (not for root).
    pub nproc_limit: bool,
    pub python: String,
}

pub struct Sandbox {
    cfg: SandboxConfig,
    isolation: Isolation,
    ro_mounts: Vec<(CString, libc::c_ulong)>,
    cgroup_base: Option<PathBuf>,
    nproc: Option<u64>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Sandbox {
    /// Resolves the interpreter and probes which mechanisms work here.
    pub fn new(mut cfg: SandboxConfig) -> Result<Self> {
        cfg.python = resolve_python(&cfg.python)?;
        let root = unsafe { libc::geteuid() } == 0;
        let nproc = (!root).then(|| own_process_count() + cfg.max_tasks);
        let mut sb = Sandbox {
            isolation: Isolation {
                net_namespace: false,
                mount_namespace: false,
                pid_namespace: false,
                socket_guard: true,
                pids_cgroup: false,
                nproc_limit: nproc.is_some(),
                python: cfg.python.display().to_string(),
            },
            cfg,
            ro_mounts: read_mounts(),
            cgroup_base: None,
            nproc,
        };
        // Probe each mechanism with a trivial program; keep what works.
        let probe = Job { setup: String::new(), candidate: String::new(), tests: vec![TestCase::trivial()] };
        if let Some(base) = make_cgroup_base().filter(|_| sb.cfg.use_cgroup) {
            sb.cgroup_base = Some(base);
            if !matches!(sb.run(&probe).outcome, Outcome::Passed) {
                sb.cgroup_base = None;
            }
        }
        sb.isolation.pids_cgroup = sb.cgroup_base.is_some();
        sb.set_namespaces(sb.cfg.use_namespaces);
        if !sb.cfg.use_namespaces || !matches!(sb.run(&probe).outcome, Outcome::Passed) {
            sb.set_namespaces(false);
            let r = sb.run(&probe);
            if !matches!(r.outcome, Outcome::Passed) {
                bail!("the sandbox cannot run {}: {:?} {}", sb.isolation.python, r.outcome, r.stderr);
            }
        }
        Ok(sb)
    }

    fn set_namespaces(&mut self, on: bool) {
        let i = &mut self.isolation;
        (i.net_namespace, i.mount_namespace, i.pid_namespace, i.socket_guard) = (on, on, on, !on);
    }

    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    /// Runs one job. Never panics or hangs because of the program; harness-side failures
    /// (cannot spawn) come back as `Outcome::SandboxError`.
    pub fn run(&self, job: &Job) -> RunResult {
        let start = Instant::now();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("recode-eval-{}-{seq}", std::process::id());
        let cgroup = self.cgroup_base.as_ref().and_then(|b| make_job_cgroup(b, &tag, self.cfg.max_tasks));
        let workdir = (!self.isolation.mount_namespace).then(|| std::env::temp_dir().join(&tag));
        let result = match self.spawn_and_wait(job, cgroup.as_deref(), workdir.as_deref()) {
            Ok(r) => r,
            Err(e) => RunResult::error(format!("{e:#}")),
        };
        if let Some(cg) = cgroup {
            remove_cgroup(&cg);
        }
        if let Some(dir) = workdir {
            let _ = std::fs::remove_dir_all(dir);
        }
        RunResult { wall_s: start.elapsed().as_secs_f64(), ..result }
    }

    fn spawn_and_wait(&self, job: &Job, cgroup: Option<&Path>, workdir: Option<&Path>) -> Result<RunResult> {
        let nonce = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
        let mb = 1u64 << 20;
        let payload = job.payload(&nonce, self.isolation.socket_guard, self.cfg.memory_mb * mb, self.cfg.timeout);
        let budget = self.cfg.timeout * job.tests.len().max(1) as u32;
        let mut limits = vec![
            (libc::RLIMIT_CPU, budget.as_secs() + 2),
            // Lowered by the driver to (mapped after setup + memory_mb) before the candidate runs.
            (libc::RLIMIT_AS, (self.cfg.memory_mb + self.cfg.setup_headroom_mb) * mb),
            (libc::RLIMIT_FSIZE, self.cfg.file_mb * mb),
            (libc::RLIMIT_NOFILE, 256),
            (libc::RLIMIT_CORE, 0),
        ];
        if let Some(n) = self.nproc {
            limits.push((libc::RLIMIT_NPROC, n));
        }
        if let Some(dir) = workdir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let plan = confine::Plan {
            namespaces: self.isolation.mount_namespace,
            ro_mounts: self.ro_mounts.clone(),
            tmpfs_opts: CString::new(format!("size={}m,mode=1777", self.cfg.file_mb * 4)).unwrap(),
            cgroup_procs: cgroup.map(|c| cstr(&c.join("cgroup.procs"))),
            host_workdir: workdir.map(cstr),
            limits,
        };
        let home = workdir.map(|d| d.display().to_string()).unwrap_or_else(|| "/tmp".into());
        let mut cmd = Command::new(&self.cfg.python);
        cmd.args(["-I", "-B", "-c", DRIVER])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &home)
            .env("TMPDIR", &home)
            .env("LANG", "C.UTF-8")
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONIOENCODING", "utf-8")
            // One thread per BLAS: threads count against the task limit and the address space.
            .env("OMP_NUM_THREADS", "1")
            .env("OPENBLAS_NUM_THREADS", "1")
            .env("MKL_NUM_THREADS", "1")
            .env("MPLBACKEND", "Agg")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || confine::apply(&plan));
        }
        let mut child = cmd.spawn().context("spawning the sandboxed python")?;
        let pgid = child.id() as libc::pid_t;
        let mut stdin = child.stdin.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let cap = self.cfg.output_cap;
        let out = spawn_reader(child.stdout.take().unwrap(), cap, tx.clone(), 0);
        let err = spawn_reader(child.stderr.take().unwrap(), cap, tx, 1);
        // A writer thread: a program that never reads stdin must not block us.
        std::thread::spawn(move || {
            let _ = stdin.write_all(payload.as_bytes());
        });
        let deadline = Instant::now() + budget;
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(cg) = cgroup {
            kill_cgroup(cg);
        } else if !self.isolation.pid_namespace {
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        // Readers end when every writer is gone; do not wait forever for escaped processes.
        let mut streams = [None, None];
        let until = Instant::now() + Duration::from_secs(2);
        for _ in 0..2 {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, data)) => streams[i] = Some(data),
                Err(_) => break,
            }
        }
        drop((out, err));
        let [o, e] = streams;
        Ok(job::classify(job, &nonce, status, timed_out, o, e, cap))
    }
}

type Captured = (Vec<u8>, usize);

fn spawn_reader<R: Read + Send + 'static>(
    mut r: R,
    cap: usize,
    tx: mpsc::Sender<(usize, Captured)>,
    idx: usize,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut kept, mut total) = (Vec::new(), 0usize);
        let mut buf = [0u8; 65536];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n;
                    let room = cap.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        let _ = tx.send((idx, (kept, total)));
    })
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL")
}

/// The real interpreter behind `python` (pyenv shims and wrappers need the user's environment).
fn resolve_python(python: &Path) -> Result<PathBuf> {
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || exe.is_empty() {
        bail!("{} did not report sys.executable: {}", python.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(PathBuf::from(exe))
}

/// Mount points with the flags that must be kept when remounting them read-only.
fn read_mounts() -> Vec<(CString, libc::c_ulong)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 6 {
            continue;
        }
        let path = f[4].replace("\\040", " ");
        let mut flags = 0;
        for o in f[5].split(',') {
            flags |= match o {
                "nosuid" => libc::MS_NOSUID,
                "nodev" => libc::MS_NODEV,
                "noexec" => libc::MS_NOEXEC,
                _ => 0,
            };
        }
        if let Ok(c) = CString::new(path) {
            v.push((c, flags));
        }
    }
    v
}

fn own_process_count() -> u64 {
    let uid = unsafe { libc::getuid() };
    let needle = format!("Uid:\t{uid}\t");
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
                .filter(|e| std::fs::read_to_string(e.path().join("status")).is_ok_and(|s| s.contains(&needle)))
                .count() as u64
        })
        .unwrap_or(0)
}

fn make_cgroup_base() -> Option<PathBuf> {
    CGROUP_ROOTS.iter().find_map(|root| {
        let base = Path::new(root).join("recode-eval");
        let _ = std::fs::create_dir(&base);
        // cgroup v2 needs the controller enabled for children.
        let _ = std::fs::write(base.join("cgroup.subtree_control"), "+pids");
        base.join("cgroup.procs").exists().then_some(base)
    })
}

fn make_job_cgroup(base: &Path, tag: &str, max_tasks: u64) -> Option<PathBuf> {
    let dir = base.join(tag);
    std::fs::create_dir(&dir).ok()?;
    if std::fs::write(dir.join("pids.max"), max_tasks.to_string()).is_err() {
        let _ = std::fs::remove_dir(&dir);
        return None;
    }
    Some(dir)
}

fn kill_cgroup(dir: &Path) {
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn remove_cgroup(dir: &Path) {
    kill_cgroup(dir);
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
