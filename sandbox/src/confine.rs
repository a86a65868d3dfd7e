//! What runs in the forked child before `exec`: everything here is precomputed by the parent so
//! the child only makes system calls (no allocation after fork).
//!
//! Confined modes (`Mode::Root`, `Mode::UserNs`), in order:
//! 1. own session, PDEATHSIG, join the job's cgroups;
//! 2. unshare(NEWNS | NEWNET | NEWPID | NEWIPC | NEWUTS | NEWCGROUP), with NEWUSER in `UserNs`
//!    mode (then map the one uid/gid the program runs as);
//! 3. fork: the parent stays outside the pid namespace and only waits (the harness never is the
//!    program's parent), the child is pid 1 of the new namespace;
//! 4. a fresh root: a tmpfs with read-only binds of the system and Python directories, a minimal
//!    /dev, a fresh /proc, a private /tmp; pivot_root into it and detach the host's tree;
//! 5. rlimits, every capability dropped (bounding, ambient, inheritable), an unprivileged
//!    uid/gid, no_new_privs, a seccomp filter (see `seccomp_filter`).

use std::ffi::{CStr, CString};
use std::io;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No namespaces: a host temp dir as working directory (the explicit unsafe mode).
    Unconfined,
    /// The harness is root: namespaces of the host's user namespace, then setresuid to `uid`.
    Root,
    /// A new user namespace mapping only `uid`/`gid` (works without root where the kernel allows).
    UserNs,
}

/// A read-only bind: host `src` (canonical, under /oldroot) at `dst` (under /newroot).
pub(crate) struct Bind {
    pub src: CString,
    pub dst: CString,
    pub is_dir: bool,
    /// Flags kept on the read-only remount (noexec when the source has it; locked in a userns).
    pub flags: libc::c_ulong,
}

/// The fresh root's layout, as absolute paths valid after the first pivot_root (host at /oldroot).
pub(crate) struct Fs {
    /// An existing host directory the staging tmpfs is mounted on (only in our namespace).
    pub stage: CString,
    pub stage_newroot: CString,
    pub stage_oldroot: CString,
    /// Directories to create under /newroot, parents first.
    pub dirs: Vec<CString>,
    /// (target, link) symlinks under /newroot (e.g. /bin -> usr/bin).
    pub symlinks: Vec<(CString, CString)>,
    pub binds: Vec<Bind>,
    /// (host device under /oldroot, /newroot/dev/name).
    pub devices: Vec<(CString, CString)>,
    /// /dev/fd, /dev/stdin, ...: created after /dev is mounted.
    pub dev_symlinks: Vec<(CString, CString)>,
    pub tmp_opts: CString,
    pub shm_opts: CString,
    /// Mount a fresh /proc (in a user namespace the kernel refuses it where the host's /proc is
    /// partly covered, as in some containers; the probe then tries without).
    pub proc: bool,
}

/// Confinement steps for one sandboxed process.
pub(crate) struct Plan {
    pub mode: Mode,
    pub fs: Option<std::sync::Arc<Fs>>,
    /// `cgroup.procs` of the job's cgroups (pids, memory), joined before anything else.
    pub cgroup_procs: Vec<CString>,
    /// Working directory in the unconfined mode (a fresh host temp dir).
    pub host_workdir: Option<CString>,
    pub limits: Vec<(libc::__rlimit_resource_t, libc::rlim_t)>,
    /// Host ids the program runs as (confined modes).
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// "uid uid 1" and "gid gid 1" for the user namespace's maps.
    pub uid_map: CString,
    pub gid_map: CString,
    /// Whether the harness is root (it then clears its supplementary groups first).
    pub harness_root: bool,
    pub seccomp: Option<std::sync::Arc<Vec<libc::sock_filter>>>,
}

/// What failed, for the error the parent reports: `STEP * 1000 + errno` travels back through
/// std's exec-error pipe (no allocation is possible here).
pub(crate) const STEPS: &[&str] = &[
    "",
    "setsid",
    "prctl(PDEATHSIG)",
    "joining the job cgroup",
    "setgroups before the user namespace",
    "prctl(DUMPABLE)",
    "unshare(namespaces)",
    "writing /proc/self/setgroups",
    "writing /proc/self/uid_map",
    "writing /proc/self/gid_map",
    "fork of the pid-1 process",
    "making mounts private",
    "mounting the staging tmpfs",
    "creating the new root",
    "mounting the new root tmpfs",
    "pivot_root into the staging root",
    "creating a directory in the new root",
    "creating a symlink in the new root",
    "bind-mounting a read-only path",
    "remounting a bind read-only",
    "mounting /dev",
    "mounting /dev/shm",
    "binding a device node",
    "remounting /dev read-only",
    "mounting /tmp",
    "mounting /proc",
    "pivot_root into the new root",
    "detaching the host's root",
    "remounting / read-only",
    "chdir",
    "setrlimit",
    "dropping the capability bounding set",
    "clearing ambient capabilities",
    "setgroups",
    "setresgid",
    "setresuid",
    "capset (clearing every capability)",
    "prctl(NO_NEW_PRIVS)",
    "installing the seccomp filter",
];

/// `raw_os_error` of a failed spawn -> "step: error".
pub(crate) fn describe(raw: i32) -> Option<String> {
    let (step, errno) = (raw / 1000, raw % 1000);
    let name = STEPS.get(step as usize).filter(|s| !s.is_empty())?;
    Some(format!(
        "sandbox set-up failed at {name}: {}",
        io::Error::from_raw_os_error(errno)
    ))
}

fn step_of(name: &str) -> i32 {
    STEPS.iter().position(|s| *s == name).expect("known step") as i32
}

unsafe fn fail(step: &str) -> io::Error {
    let errno = *libc::__errno_location();
    io::Error::from_raw_os_error(step_of(step) * 1000 + errno.clamp(1, 999))
}

unsafe fn check(ret: libc::c_int, step: &str) -> io::Result<()> {
    if ret == -1 {
        Err(fail(step))
    } else {
        Ok(())
    }
}

unsafe fn write_file(path: &CStr, data: &[u8], step: &str) -> io::Result<()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(fail(step));
    }
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    let err = (n != data.len() as isize).then(|| fail(step));
    libc::close(fd);
    err.map_or(Ok(()), Err)
}

const NONE: *const libc::c_char = std::ptr::null();

unsafe fn mount(
    src: *const libc::c_char,
    dst: &CStr,
    fstype: *const libc::c_char,
    flags: libc::c_ulong,
    data: *const libc::c_char,
    step: &str,
) -> io::Result<()> {
    check(libc::mount(src, dst.as_ptr(), fstype, flags, data.cast()), step)
}

/// Runs in the child between fork and exec.
///
/// # Safety
/// Only async-signal-safe calls; `plan` was built before the fork.
pub(crate) unsafe fn apply(plan: &Plan) -> io::Result<()> {
    // Own session and process group: the parent kills the whole group on timeout.
    check(libc::setsid(), "setsid")?;
    check(
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0),
        "prctl(PDEATHSIG)",
    )?;
    for procs in &plan.cgroup_procs {
        // "0" means the writing task itself.
        write_file(procs, b"0", "joining the job cgroup")?;
    }
    if plan.mode == Mode::UserNs && plan.harness_root {
        // Become the unprivileged uid first: only the parent namespace could map another uid
        // than the creator's own, and supplementary groups cannot be changed inside.
        check(
            libc::setgroups(0, std::ptr::null()),
            "setgroups before the user namespace",
        )?;
        check(libc::setresgid(plan.gid, plan.gid, plan.gid), "setresgid")?;
        check(libc::setresuid(plan.uid, plan.uid, plan.uid), "setresuid")?;
        // A uid change clears both; /proc/self/uid_map must stay ours to write.
        check(
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0),
            "prctl(PDEATHSIG)",
        )?;
        check(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(DUMPABLE)")?;
    }
    if plan.mode != Mode::Unconfined {
        let mut flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWCGROUP;
        if plan.mode == Mode::UserNs {
            flags |= libc::CLONE_NEWUSER;
        }
        check(libc::unshare(flags), "unshare(namespaces)")?;
        if plan.mode == Mode::UserNs {
            write_file(c"/proc/self/setgroups", b"deny", "writing /proc/self/setgroups")?;
            write_file(
                c"/proc/self/uid_map",
                plan.uid_map.as_bytes(),
                "writing /proc/self/uid_map",
            )?;
            write_file(
                c"/proc/self/gid_map",
                plan.gid_map.as_bytes(),
                "writing /proc/self/gid_map",
            )?;
        }
    }
    // Always interpose a small parent process, so the program's parent is never the harness
    // (killing it only ends this job). Raw clone(SIGCHLD) = fork without glibc's atfork
    // handlers, which may take locks that another thread of the harness held at the first fork.
    let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) as libc::pid_t;
    if pid < 0 {
        return Err(fail("fork of the pid-1 process"));
    }
    if pid > 0 {
        intermediate(pid);
    }
    check(
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0),
        "prctl(PDEATHSIG)",
    )?;
    if let Some(fs) = &plan.fs {
        build_root(fs)?;
        check(libc::chdir(c"/tmp".as_ptr()), "chdir")?;
    } else if let Some(dir) = &plan.host_workdir {
        check(libc::chdir(dir.as_ptr()), "chdir")?;
    }
    for &(res, value) in &plan.limits {
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        check(libc::setrlimit(res, &lim), "setrlimit")?;
    }
    if plan.mode != Mode::Unconfined {
        drop_privileges(plan)?;
    }
    check(
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        "prctl(NO_NEW_PRIVS)",
    )?;
    if let Some(filter) = &plan.seccomp {
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        check(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const _ as libc::c_ulong,
                0,
                0,
            ),
            "installing the seccomp filter",
        )?;
    }
    Ok(())
}

unsafe fn build_root(fs: &Fs) -> io::Result<()> {
    // Private propagation first, or the mounts below would reach the host.
    mount(
        NONE,
        c"/",
        NONE,
        libc::MS_REC | libc::MS_PRIVATE,
        NONE,
        "making mounts private",
    )?;
    let tmpfs = c"tmpfs".as_ptr();
    mount(
        tmpfs,
        &fs.stage,
        tmpfs,
        libc::MS_NOSUID | libc::MS_NODEV,
        c"size=64k,mode=0755".as_ptr(),
        "mounting the staging tmpfs",
    )?;
    for d in [&fs.stage_newroot, &fs.stage_oldroot] {
        check(libc::mkdir(d.as_ptr(), 0o755), "creating the new root")?;
    }
    mount(
        tmpfs,
        &fs.stage_newroot,
        tmpfs,
        libc::MS_NOSUID | libc::MS_NODEV,
        c"size=1m,mode=0755".as_ptr(),
        "mounting the new root tmpfs",
    )?;
    // The host's tree moves to /oldroot, so binds can name any host path (even one under the
    // staging directory) until it is detached.
    check(
        libc::syscall(libc::SYS_pivot_root, fs.stage.as_ptr(), fs.stage_oldroot.as_ptr()) as libc::c_int,
        "pivot_root into the staging root",
    )?;
    check(libc::chdir(c"/".as_ptr()), "chdir")?;
    for d in &fs.dirs {
        if libc::mkdir(d.as_ptr(), 0o755) == -1 && *libc::__errno_location() != libc::EEXIST {
            return Err(fail("creating a directory in the new root"));
        }
    }
    for (target, link) in &fs.symlinks {
        check(
            libc::symlink(target.as_ptr(), link.as_ptr()),
            "creating a symlink in the new root",
        )?;
    }
    for b in &fs.binds {
        if !b.is_dir {
            let fd = libc::open(b.dst.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o644);
            if fd < 0 {
                return Err(fail("creating a directory in the new root"));
            }
            libc::close(fd);
        }
        mount(
            b.src.as_ptr(),
            &b.dst,
            NONE,
            libc::MS_BIND,
            NONE,
            "bind-mounting a read-only path",
        )?;
        let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | b.flags;
        mount(NONE, &b.dst, NONE, ro, NONE, "remounting a bind read-only")?;
    }
    let dev = c"/newroot/dev";
    mount(
        tmpfs,
        dev,
        tmpfs,
        libc::MS_NOSUID | libc::MS_NOEXEC,
        c"size=64k,mode=0755".as_ptr(),
        "mounting /dev",
    )?;
    let shm = c"/newroot/dev/shm";
    check(libc::mkdir(shm.as_ptr(), 0o1777), "mounting /dev/shm")?;
    mount(
        tmpfs,
        shm,
        tmpfs,
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        fs.shm_opts.as_ptr(),
        "mounting /dev/shm",
    )?;
    for (src, dst) in &fs.devices {
        let fd = libc::open(dst.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o644);
        if fd < 0 {
            return Err(fail("binding a device node"));
        }
        libc::close(fd);
        mount(src.as_ptr(), dst, NONE, libc::MS_BIND, NONE, "binding a device node")?;
    }
    for (target, link) in &fs.dev_symlinks {
        check(
            libc::symlink(target.as_ptr(), link.as_ptr()),
            "creating a symlink in the new root",
        )?;
    }
    let ro_dev = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC;
    mount(NONE, dev, NONE, ro_dev, NONE, "remounting /dev read-only")?;
    let tmp = c"/newroot/tmp";
    mount(
        tmpfs,
        tmp,
        tmpfs,
        libc::MS_NOSUID | libc::MS_NODEV,
        fs.tmp_opts.as_ptr(),
        "mounting /tmp",
    )?;
    if fs.proc {
        // Before the host's tree is detached: in a user namespace the kernel mounts a proc only
        // while a fully visible one exists in the namespace.
        let proc_ = c"proc".as_ptr();
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        mount(proc_, c"/newroot/proc", proc_, flags, NONE, "mounting /proc")?;
    }
    check(libc::chdir(c"/newroot".as_ptr()), "chdir")?;
    check(
        libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
        "pivot_root into the new root",
    )?;
    check(
        libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
        "detaching the host's root",
    )?;
    check(libc::chdir(c"/".as_ptr()), "chdir")?;
    let ro_root = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    mount(NONE, c"/", NONE, ro_root, NONE, "remounting / read-only")
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

unsafe fn drop_privileges(plan: &Plan) -> io::Result<()> {
    // The bounding set limits what any later exec can gain; CAP_SETPCAP (held until setresuid)
    // allows the drops. Numbers past the kernel's last capability give EINVAL: stop there.
    for cap in 0..64 {
        if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) == -1 {
            if *libc::__errno_location() == libc::EINVAL {
                break;
            }
            return Err(fail("dropping the capability bounding set"));
        }
    }
    check(
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ),
        "clearing ambient capabilities",
    )?;
    if plan.mode == Mode::Root {
        check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
    }
    check(libc::setresgid(plan.gid, plan.gid, plan.gid), "setresgid")?;
    check(libc::setresuid(plan.uid, plan.uid, plan.uid), "setresuid")?;
    // Permitted and effective go with the uid change in Root mode, not in a user namespace,
    // and inheritable never: clear all three explicitly.
    let hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    check(
        libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) as libc::c_int,
        "capset (clearing every capability)",
    )?;
    // The uid change cleared it: the program must still die with its parent.
    check(
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0),
        "prctl(PDEATHSIG)",
    )
}

/// Waits for the real program and exits the same way it did. Never returns.
unsafe fn intermediate(child: libc::pid_t) -> ! {
    // Drop every inherited descriptor, including std's exec-error pipe, so the harness sees
    // the exec of the real program and EOF on output as soon as that program's side closes.
    for fd in 0..1024 {
        libc::close(fd);
    }
    let mut status: libc::c_int = 0;
    loop {
        let r = libc::waitpid(child, &mut status, 0);
        if r == child {
            break;
        }
        if r < 0 && *libc::__errno_location() != libc::EINTR {
            libc::_exit(125);
        }
    }
    if libc::WIFEXITED(status) {
        libc::_exit(libc::WEXITSTATUS(status));
    }
    let sig = libc::WTERMSIG(status);
    libc::signal(sig, libc::SIG_DFL);
    libc::kill(libc::getpid(), sig);
    libc::_exit(128 + sig);
}

// ---- seccomp ----

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// System calls refused with EPERM: they change mounts or namespaces, reach other processes'
/// memory, or load code into the kernel. No Python program under test needs them.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn refused() -> Vec<libc::c_long> {
    use libc::*;
    let mut v = vec![
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_chroot,
        SYS_unshare,
        SYS_setns,
        SYS_ptrace,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_pidfd_getfd,
        SYS_bpf,
        SYS_keyctl,
        SYS_add_key,
        SYS_request_key,
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_perf_event_open,
        SYS_userfaultfd,
        SYS_open_by_handle_at,
        SYS_name_to_handle_at,
        SYS_swapon,
        SYS_swapoff,
        SYS_reboot,
        SYS_fsopen,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fspick,
        SYS_move_mount,
        SYS_open_tree,
        SYS_mount_setattr,
        SYS_acct,
        SYS_quotactl,
        SYS_syslog,
        SYS_vhangup,
        SYS_lookup_dcookie,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([SYS_iopl, SYS_ioperm]);
    v
}

/// A classic BPF seccomp filter: other architectures (i386 calls from a 64-bit process, x32)
/// are killed or refused; `refused()` gives EPERM; clone with a namespace flag EPERM; clone3
/// and io_uring ENOSYS (libc falls back to clone, which is checked); socket/socketpair of a
/// family other than AF_UNIX/AF_INET/AF_INET6 EAFNOSUPPORT (inet reaches nothing inside an
/// empty network namespace). `None` on architectures without a filter here.
pub(crate) fn seccomp_filter() -> Option<Vec<libc::sock_filter>> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        use libc::*;
        let stmt = |code: u32, k: u32| sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let jump = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        };
        let ret = |k: u32| stmt(BPF_RET | BPF_K, k);
        let errno = |e: c_int| ret(SECCOMP_RET_ERRNO | e as u32);
        const ALLOW: u32 = SECCOMP_RET_ALLOW;
        // Low 32 bits of args[0] (little-endian seccomp_data).
        let arg0: u32 = if cfg!(target_endian = "little") { 16 } else { 20 };
        let mut f = vec![
            stmt(BPF_LD | BPF_W | BPF_ABS, 4), // arch
            jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
            ret(SECCOMP_RET_KILL_PROCESS),
            stmt(BPF_LD | BPF_W | BPF_ABS, 0), // nr
        ];
        if cfg!(target_arch = "x86_64") {
            f.push(jump(BPF_JMP | BPF_JGE | BPF_K, 0x4000_0000, 0, 1)); // x32 ABI
            f.push(errno(ENOSYS));
        }
        for nr in refused() {
            f.push(jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, 0, 1));
            f.push(errno(EPERM));
        }
        for nr in [
            SYS_clone3,
            SYS_io_uring_setup,
            SYS_io_uring_enter,
            SYS_io_uring_register,
        ] {
            f.push(jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, 0, 1));
            f.push(errno(ENOSYS));
        }
        let ns =
            (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET)
                as u32;
        f.extend([
            jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone as u32, 0, 4),
            stmt(BPF_LD | BPF_W | BPF_ABS, arg0),
            jump(BPF_JMP | BPF_JSET | BPF_K, ns, 0, 1),
            errno(EPERM),
            ret(ALLOW),
        ]);
        for nr in [SYS_socket, SYS_socketpair] {
            f.extend([
                jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, 0, 6),
                stmt(BPF_LD | BPF_W | BPF_ABS, arg0),
                jump(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX as u32, 3, 0),
                jump(BPF_JMP | BPF_JEQ | BPF_K, AF_INET as u32, 2, 0),
                jump(BPF_JMP | BPF_JEQ | BPF_K, AF_INET6 as u32, 1, 0),
                errno(EAFNOSUPPORT),
                ret(ALLOW),
            ]);
        }
        f.push(ret(ALLOW));
        Some(f)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    None
}
