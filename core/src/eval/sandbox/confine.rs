//! What runs in the forked child before `exec`: everything here is precomputed by the parent so
//! the child only makes system calls (no allocation after fork).

use std::ffi::CString;
use std::io;

/// Confinement steps for one sandboxed process.
pub(crate) struct Plan {
    /// unshare(NET | NS | PID), then mount a private tmpfs /tmp, a fresh /proc, and remount the
    /// rest of the filesystem read-only.
    pub namespaces: bool,
    /// Mount points remounted read-only inside the private mount namespace (with their flags).
    pub ro_mounts: Vec<(CString, libc::c_ulong)>,
    pub tmpfs_opts: CString,
    /// `cgroup.procs` of a fresh pids cgroup the child joins (bounds fork bombs, even for root).
    pub cgroup_procs: Option<CString>,
    /// Working directory when there is no mount namespace (a fresh host temp dir).
    pub host_workdir: Option<CString>,
    pub limits: Vec<(libc::__rlimit_resource_t, libc::rlim_t)>,
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the child between fork and exec.
///
/// # Safety
/// Only async-signal-safe calls; `plan` was built before the fork.
pub(crate) unsafe fn apply(plan: &Plan) -> io::Result<()> {
    // Own session and process group: the parent kills the whole group on timeout.
    check(libc::setsid())?;
    check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0))?;
    if let Some(procs) = &plan.cgroup_procs {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // "0" means the writing task itself.
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        libc::close(fd);
        if n != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    if plan.namespaces {
        check(libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS | libc::CLONE_NEWPID))?;
    }
    // Always interpose a small parent process, so `os.getppid()` in the program is never the
    // harness (killing it only ends this job).
    // Raw clone(SIGCHLD) = fork without glibc's atfork handlers, which may take locks that
    // another thread of the harness held at the first fork.
    let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0) as libc::pid_t;
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        intermediate(pid);
    }
    check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0))?;
    if plan.namespaces {
        let none = std::ptr::null::<libc::c_char>();
        // Private propagation first, or the mounts below would leak to the host.
        check(libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()))?;
        for (path, flags) in &plan.ro_mounts {
            // Special filesystems may refuse; the ones that matter (/, /work, ...) do not.
            libc::mount(
                none,
                path.as_ptr(),
                none,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags,
                std::ptr::null(),
            );
        }
        check(libc::mount(
            c"tmpfs".as_ptr(),
            c"/tmp".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            plan.tmpfs_opts.as_ptr().cast(),
        ))?;
        // We are pid 1 of the new pid namespace: a fresh /proc hides host processes.
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        );
        check(libc::chdir(c"/tmp".as_ptr()))?;
    } else if let Some(dir) = &plan.host_workdir {
        check(libc::chdir(dir.as_ptr()))?;
    }
    for &(res, value) in &plan.limits {
        let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
        check(libc::setrlimit(res, &lim))?;
    }
    Ok(())
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
