//! Running untrusted Python: one process per job, confined, time- and size-bounded.
//!
//! Confinement (`confine.rs` runs it between fork and exec; `Isolation` records what is in force):
//! - **Namespaces and a fresh root.** Mount, network, pid, IPC, UTS and cgroup namespaces; the
//!   program's root is a new tmpfs holding read-only binds of /usr, /etc, /bin, /lib* and the
//!   interpreter's own directories (asked from Python once, `layout.rs`), a minimal /dev (null,
//!   zero, full, random, urandom, a small /dev/shm), a fresh /proc and a private size-limited
//!   /tmp that is the working directory. The host's tree is detached (pivot_root), so /root,
//!   /home, /run, /var, /sys and every host socket file are simply absent; the empty network
//!   namespace has no interface but loopback and its own abstract-socket space.
//! - **No privilege.** As root (`Mode::Root`) the namespaces belong to the host's user namespace
//!   and the program then runs as an unprivileged uid/gid (65534 by default) with the capability
//!   bounding, ambient, inheritable, permitted and effective sets emptied. Without root
//!   (`Mode::UserNs`, also tried as root when the first fails) a new user namespace maps only
//!   the one uid the program runs as, so after exec it holds no capability anywhere.
//!   no_new_privs, and a seccomp filter refusing mount/umount, pivot_root, unshare/setns/clone
//!   with namespace flags, ptrace and process_vm_*, bpf, keyctl, kexec, module loading,
//!   io_uring and sockets other than unix/inet (see `confine::seccomp_filter`).
//! - **Limits for the whole job tree.** A fresh cgroup per job: pids.max (tasks: threads count as
//!   the kernel counts them) and, where the memory controller is available, a memory limit of
//!   `memory_mb + setup_memory_mb` with swap off; an OOM kill there is `Outcome::Memory`. Only
//!   without a memory cgroup is the per-process address-space limit used (it fails programs that
//!   reserve address space, as numpy and torch do). rlimits: CPU time, file size, open files,
//!   no core (+ NPROC, counted in threads, where no pids cgroup works).
//! - own session/process group, SIGKILLed as a whole on timeout; PDEATHSIG if the harness dies;
//!   a clean environment; stdout/stderr read concurrently with a size cap.
//!
//! Why hand-written rather than bubblewrap or nsjail: neither is installed on a fresh Debian
//! machine (the README's `cargo test` must need nothing installed by hand), a per-job exec of a
//! setuid or external helper costs time on every one of thousands of programs, and the pieces
//! are few system calls that the hostile suite (`tests/eval_hostile.rs`) checks, as root and
//! as an unprivileged user.
//!
//! Where nothing isolates (no root and no unprivileged user namespaces), `Sandbox::new` refuses
//! unless `SandboxConfig::unsafe_no_sandbox` (`--unsafe-no-sandbox`): then programs run in a host
//! temp dir with rlimits, no_new_privs, the seccomp filter and a Python-level socket guard only,
//! and `Isolation::mode` says `unsafe_no_sandbox` in every report.

mod cgroup;
mod confine;
mod job;
mod layout;

pub use job::{Job, Outcome, RunResult, TestCase, TestResult};

use anyhow::{bail, Context, Result};
use confine::Mode;
use serde::Serialize;
use std::ffi::CString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const DRIVER: &str = include_str!("driver.py");

/// Which confinement `Sandbox::new` may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// Host-root namespaces when root, else (or when those fail) a user namespace.
    Auto,
    /// Only the root mode (tests).
    Root,
    /// Only a user namespace (tests; what a non-root user gets).
    UserNamespace,
    /// None: the unsafe mode (requires `unsafe_no_sandbox`).
    None,
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Python interpreter; resolved to the real executable (pyenv shims need a full environment).
    pub python: PathBuf,
    /// Wall-time limit per unit test: a job with T tests gets T times this (as when
    /// CodeUpdateArena runs each test as its own program).
    pub timeout: Duration,
    /// Memory of the candidate and its tests, MiB: with the memory cgroup, the whole job may use
    /// `memory_mb + setup_memory_mb`; without it, the address space the candidate may map on
    /// top of what the setup (trusted dataset code: imports, the update) mapped.
    pub memory_mb: u64,
    /// Memory cgroup only: what the setup may use on top of `memory_mb`, MiB (resident memory,
    /// not mappings: importing torch maps ~3 GiB of libraries but uses a few hundred MiB).
    pub setup_memory_mb: u64,
    /// Address-space limit only: what the setup may map beyond `memory_mb`, MiB.
    pub setup_headroom_mb: u64,
    /// Largest file the program may write, MiB (a quarter of the private /tmp).
    pub file_mb: u64,
    /// Tasks (processes and threads) per job.
    pub max_tasks: u64,
    /// Bytes kept from each of stdout and stderr; more is an `OutputLimit` failure.
    pub output_cap: usize,
    pub confinement: Confinement,
    /// Use pids and memory cgroups where they work.
    pub use_cgroup: bool,
    /// Use the memory cgroup (false: the address-space limit, for tests).
    pub use_memory_cgroup: bool,
    /// Where no isolation works, run anyway (unconfined: the program can read and write the
    /// user's files) instead of refusing. Isolation that works is used regardless.
    pub unsafe_no_sandbox: bool,
    /// Host uid/gid programs run as when the harness is root.
    pub uid: u32,
    pub gid: u32,
    /// More host paths visible read-only inside (data a benchmark's programs read). A pathname
    /// socket in one stays connectable (connect is not a write): do not list /run or the like.
    pub ro_paths: Vec<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            python: "python3".into(),
            timeout: Duration::from_secs(10),
            memory_mb: 2048,
            setup_memory_mb: 1024,
            setup_headroom_mb: 6144,
            file_mb: 16,
            max_tasks: 32,
            output_cap: 1 << 20,
            confinement: Confinement::Auto,
            use_cgroup: true,
            use_memory_cgroup: true,
            unsafe_no_sandbox: false,
            uid: 65534,
            gid: 65534,
            ro_paths: vec![],
        }
    }
}

/// Which confinement mechanisms are in force.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Isolation {
    /// "root" (host-root namespaces, then an unprivileged uid), "user_namespace", or
    /// "unsafe_no_sandbox".
    pub mode: String,
    /// Host uid/gid the program runs as.
    pub uid: u32,
    pub gid: u32,
    pub net_namespace: bool,
    pub mount_namespace: bool,
    pub pid_namespace: bool,
    /// A fresh root with only `read_only` of the host, /dev, /tmp (and /proc).
    pub private_root: bool,
    pub proc: bool,
    /// Every capability set empty (bounding set included).
    pub no_capabilities: bool,
    pub no_new_privs: bool,
    pub seccomp: bool,
    /// Python-level guard replacing `socket` (the unsafe mode only).
    pub socket_guard: bool,
    pub pids_cgroup: bool,
    pub memory_cgroup: bool,
    /// RLIMIT_NPROC bounds tasks (where no pids cgroup does).
    pub nproc_limit: bool,
    pub python: String,
    /// Host paths visible (read-only) inside.
    pub read_only: Vec<String>,
}

pub struct Sandbox {
    cfg: SandboxConfig,
    isolation: Isolation,
    mode: Mode,
    fs: Option<Arc<confine::Fs>>,
    seccomp: Option<Arc<Vec<libc::sock_filter>>>,
    cgroups: cgroup::Bases,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Sandbox {
    /// Resolves the interpreter and probes which mechanisms work here; refuses where nothing
    /// isolates unless `unsafe_no_sandbox`.
    pub fn new(mut cfg: SandboxConfig) -> Result<Self> {
        cfg.python = resolve_python(&cfg.python)?;
        let root = unsafe { libc::geteuid() } == 0;
        let modes: &[Mode] = match (cfg.confinement, root) {
            (Confinement::Auto, true) => &[Mode::Root, Mode::UserNs],
            (Confinement::Auto, false) | (Confinement::UserNamespace, _) => &[Mode::UserNs],
            (Confinement::Root, _) => &[Mode::Root],
            (Confinement::None, _) => &[],
        };
        let mut paths = layout::python_paths(&cfg.python)?;
        paths.extend(cfg.ro_paths.iter().cloned());
        let seccomp = confine::seccomp_filter().map(Arc::new);
        let mut sb = Sandbox {
            isolation: Isolation {
                mode: String::new(),
                uid: 0,
                gid: 0,
                net_namespace: false,
                mount_namespace: false,
                pid_namespace: false,
                private_root: false,
                proc: false,
                no_capabilities: false,
                no_new_privs: true,
                seccomp: false,
                socket_guard: false,
                pids_cgroup: false,
                memory_cgroup: false,
                nproc_limit: false,
                python: cfg.python.display().to_string(),
                read_only: vec![],
            },
            cfg,
            mode: Mode::Unconfined,
            fs: None,
            seccomp: seccomp.clone(),
            cgroups: cgroup::Bases::default(),
        };
        let mut tried = vec![];
        let mut found = false;
        'modes: for &mode in modes {
            // In a user namespace the kernel may refuse a fresh /proc (a partly covered host
            // /proc, as in some containers): then go without one.
            for proc_ in [true, false].into_iter().take(if mode == Mode::UserNs { 2 } else { 1 }) {
                let (fs, shown) = layout::plan(&paths, sb.cfg.file_mb * 4, proc_)?;
                sb.set_mode(mode, Some(fs), shown);
                match sb.probe() {
                    Ok(()) => {
                        found = true;
                        break 'modes;
                    }
                    Err(e) => tried.push(format!("{} (proc {proc_}): {e}", sb.isolation.mode)),
                }
            }
        }
        if !found {
            if !sb.cfg.unsafe_no_sandbox {
                bail!(
                    "no isolation for model-written code works here{}{}; refusing to run it unconfined \
                     (it could read and change your files). Run as root, allow unprivileged user namespaces \
                     (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0), or pass \
                     --unsafe-no-sandbox (SandboxConfig::unsafe_no_sandbox) to run it anyway",
                    if tried.is_empty() { "" } else { ": tried " },
                    tried.join("; ")
                );
            }
            sb.set_mode(Mode::Unconfined, None, vec![]);
            if let Err(e) = sb.probe() {
                sb.seccomp = None;
                sb.probe().map_err(|e2| {
                    anyhow::anyhow!(
                        "the sandbox cannot run {}: {e}; without seccomp: {e2}",
                        sb.isolation.python
                    )
                })?;
            }
        }
        sb.isolation.seccomp = sb.seccomp.is_some();
        if sb.cfg.use_cgroup {
            let all = cgroup::Bases::find(sb.cfg.use_memory_cgroup);
            for bases in [all.clone(), all.without_memory(), all.without_pids()] {
                if !(bases.pids() || bases.memory()) {
                    continue;
                }
                sb.cgroups = bases;
                if sb.probe().is_ok() {
                    break;
                }
                sb.cgroups = cgroup::Bases::default();
            }
        }
        sb.isolation.pids_cgroup = sb.cgroups.pids();
        sb.isolation.memory_cgroup = sb.cgroups.memory();
        sb.isolation.nproc_limit = sb.nproc_base().is_some();
        Ok(sb)
    }

    fn set_mode(&mut self, mode: Mode, fs: Option<confine::Fs>, shown: Vec<String>) {
        let confined = mode != Mode::Unconfined;
        let root = unsafe { libc::geteuid() } == 0;
        let (uid, gid) = match (confined, root) {
            (true, true) => (self.cfg.uid, self.cfg.gid),
            (true, false) => unsafe { (libc::getuid(), libc::getgid()) },
            (false, _) => unsafe { (libc::geteuid(), libc::getegid()) },
        };
        let i = &mut self.isolation;
        i.mode = match mode {
            Mode::Root => "root",
            Mode::UserNs => "user_namespace",
            Mode::Unconfined => "unsafe_no_sandbox",
        }
        .into();
        (i.uid, i.gid) = (uid, gid);
        (i.net_namespace, i.mount_namespace, i.pid_namespace, i.private_root) =
            (confined, confined, confined, confined);
        i.proc = fs.as_ref().is_some_and(|f| f.proc);
        i.no_capabilities = confined || !root;
        i.socket_guard = !confined;
        i.read_only = shown;
        self.mode = mode;
        self.fs = fs.map(Arc::new);
    }

    /// Runs a trivial program; the error says what failed.
    fn probe(&self) -> std::result::Result<(), String> {
        let probe = Job {
            setup: String::new(),
            candidate: String::new(),
            tests: vec![TestCase::trivial()],
        };
        let r = self.run(&probe);
        match r.outcome {
            Outcome::Passed => Ok(()),
            Outcome::SandboxError { message } => Err(message),
            other => Err(format!("{other:?} {}", r.stderr.trim())),
        }
    }

    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    /// RLIMIT_NPROC where no pids cgroup bounds tasks: the kernel counts every task (thread) of
    /// the real uid, so the limit is what that uid runs now plus `max_tasks`. Void for root.
    fn nproc_base(&self) -> Option<u64> {
        if self.cgroups.pids() {
            return None;
        }
        let uid = self.isolation.uid;
        (uid != 0).then(|| tasks_of(uid))
    }

    /// Runs one job. Never panics or hangs because of the program; harness-side failures
    /// (cannot spawn, cannot make the job's cgroup) come back as `Outcome::SandboxError`.
    pub fn run(&self, job: &Job) -> RunResult {
        let start = Instant::now();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("recode-eval-{}-{seq}", std::process::id());
        let mb = 1u64 << 20;
        let cgroup = if self.cgroups.pids() || self.cgroups.memory() {
            match self.cgroups.make_job(
                &tag,
                self.cfg.max_tasks,
                (self.cfg.memory_mb + self.cfg.setup_memory_mb) * mb,
            ) {
                Some(c) => Some(c),
                None => {
                    return RunResult {
                        wall_s: start.elapsed().as_secs_f64(),
                        ..RunResult::error(format!("cannot make the job's cgroup {tag}"))
                    }
                }
            }
        } else {
            None
        };
        let workdir = (self.mode == Mode::Unconfined).then(|| std::env::temp_dir().join(&tag));
        let mut result = match self.spawn_and_wait(job, cgroup.as_ref(), workdir.as_deref()) {
            Ok(r) => r,
            Err(e) => RunResult::error(format!("{e:#}")),
        };
        if let Some(cg) = cgroup {
            // The kernel's OOM killer ends a job over its memory limit with SIGKILL.
            if cg.oom_killed() && !result.outcome.passed() && !matches!(result.outcome, Outcome::SandboxError { .. }) {
                result.outcome = Outcome::Memory;
            }
            cg.remove();
        }
        if let Some(dir) = workdir {
            let _ = std::fs::remove_dir_all(dir);
        }
        RunResult {
            wall_s: start.elapsed().as_secs_f64(),
            ..result
        }
    }

    fn spawn_and_wait(
        &self,
        job: &Job,
        cgroup: Option<&cgroup::JobCgroup>,
        workdir: Option<&Path>,
    ) -> Result<RunResult> {
        let nonce = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
        let mb = 1u64 << 20;
        let memory_cgroup = cgroup.is_some() && self.cgroups.memory();
        // With the memory cgroup, no address-space limit (0: the driver sets none).
        let memory_bytes = if memory_cgroup { 0 } else { self.cfg.memory_mb * mb };
        let payload = job.payload(&nonce, self.isolation.socket_guard, memory_bytes, self.cfg.timeout);
        let budget = self.cfg.timeout * job.tests.len().max(1) as u32;
        let mut limits = vec![
            (libc::RLIMIT_CPU, budget.as_secs() + 2),
            (libc::RLIMIT_FSIZE, self.cfg.file_mb * mb),
            (libc::RLIMIT_NOFILE, 256),
            (libc::RLIMIT_CORE, 0),
        ];
        if !memory_cgroup {
            // Lowered by the driver to (mapped after setup + memory_mb) before the candidate runs.
            limits.push((libc::RLIMIT_AS, (self.cfg.memory_mb + self.cfg.setup_headroom_mb) * mb));
        }
        if let Some(base) = self.nproc_base() {
            limits.push((libc::RLIMIT_NPROC, base + self.cfg.max_tasks));
        }
        if let Some(dir) = workdir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let (uid, gid) = (self.isolation.uid, self.isolation.gid);
        let plan = confine::Plan {
            mode: self.mode,
            fs: self.fs.clone(),
            cgroup_procs: cgroup
                .map(|c| c.procs_files().iter().map(|p| cstr(p)).collect())
                .unwrap_or_default(),
            host_workdir: workdir.map(cstr),
            limits,
            uid,
            gid,
            uid_map: CString::new(format!("{uid} {uid} 1")).unwrap(),
            gid_map: CString::new(format!("{gid} {gid} 1")).unwrap(),
            harness_root: unsafe { libc::geteuid() } == 0,
            seccomp: self.seccomp.clone(),
        };
        let home = workdir
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "/tmp".into());
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
            // One thread per BLAS: threads count against the task limit.
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
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => match e.raw_os_error().and_then(confine::describe) {
                Some(msg) => bail!("{msg}"),
                None => return Err(e).context("spawning the sandboxed python"),
            },
        };
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
            cg.kill();
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
        bail!(
            "{} did not report sys.executable: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(exe))
}

/// Tasks (threads) the host runs as `uid`, as RLIMIT_NPROC counts them.
fn tasks_of(uid: u32) -> u64 {
    let needle = format!("Uid:\t{uid}\t");
    let threads = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(1)
    };
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
                .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
                .filter(|s| s.contains(&needle))
                .map(|s| threads(&s))
                .sum()
        })
        .unwrap_or(0)
}
