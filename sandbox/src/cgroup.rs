//! A fresh cgroup per job for the pids and memory controllers, cgroup v1 or v2: bounds fork and
//! thread bombs (also for root, for whom RLIMIT_NPROC is void) and the memory of the whole job
//! tree, and tells an OOM kill apart from other deaths.

use std::path::{Path, PathBuf};
use std::time::Duration;

const NAME: &str = "recode-eval";

/// Where job cgroups are made: under the harness's own cgroup where the kernel lets us, else
/// under the hierarchy's root.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bases {
    pids: Option<PathBuf>,
    memory: Option<PathBuf>,
    /// Both controllers live in one v2 hierarchy (one directory per job).
    v2: bool,
}

impl Bases {
    pub fn find(want_memory: bool) -> Self {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut b = Bases::default();
        for (ctrl, slot) in [("pids", 0), ("memory", 1)] {
            if slot == 1 && !want_memory {
                continue;
            }
            if let Some(base) = v1_base(&mounts, &own, ctrl) {
                if slot == 0 {
                    b.pids = Some(base)
                } else {
                    b.memory = Some(base)
                }
            }
        }
        if b.pids.is_none() && b.memory.is_none() {
            if let Some((base, ctrls)) = v2_base(&mounts, &own, want_memory) {
                b.v2 = true;
                b.pids = ctrls.0.then(|| base.clone());
                b.memory = ctrls.1.then_some(base);
            }
        }
        b
    }

    pub fn pids(&self) -> bool {
        self.pids.is_some()
    }

    pub fn memory(&self) -> bool {
        self.memory.is_some()
    }

    pub fn without_memory(&self) -> Self {
        Bases {
            memory: None,
            ..self.clone()
        }
    }

    pub fn without_pids(&self) -> Self {
        Bases {
            pids: None,
            ..self.clone()
        }
    }

    /// The job's cgroup(s) with `max_tasks` tasks and `memory_bytes` (swap off); None where a
    /// directory or limit cannot be made.
    pub fn make_job(&self, tag: &str, max_tasks: u64, memory_bytes: u64) -> Option<JobCgroup> {
        let mut job = JobCgroup {
            dirs: vec![],
            memory: None,
        };
        if let Some(base) = &self.pids {
            let dir = base.join(tag);
            job.dirs.push(dir.clone());
            std::fs::create_dir(&dir).ok()?;
            std::fs::write(dir.join("pids.max"), max_tasks.to_string())
                .ok()
                .or_else(|| job.remove())?;
        }
        if let Some(base) = &self.memory {
            let dir = base.join(tag);
            if !self.v2 || self.pids.is_none() {
                job.dirs.push(dir.clone());
                std::fs::create_dir(&dir).ok().or_else(|| job.remove())?;
            }
            let ok = if self.v2 {
                // Where swap is not configured the file is absent: nothing to turn off.
                let swap = dir.join("memory.swap.max");
                std::fs::write(dir.join("memory.max"), memory_bytes.to_string()).is_ok()
                    && (!swap.exists() || std::fs::write(swap, "0").is_ok())
            } else {
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                std::fs::write(dir.join("memory.limit_in_bytes"), memory_bytes.to_string()).is_ok()
                    && (!memsw.exists() || std::fs::write(memsw, memory_bytes.to_string()).is_ok())
                    && std::fs::write(dir.join("memory.swappiness"), "0").is_ok()
            };
            if !ok {
                job.remove();
                return None;
            }
            job.memory = Some((dir, self.v2));
        }
        Some(job)
    }
}

/// `(mount point)/(own path)/recode-eval`, else `(mount point)/recode-eval`, for a v1 controller.
fn v1_base(mounts: &str, own: &str, ctrl: &str) -> Option<PathBuf> {
    let mount = mounts.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut post = post.split(' ');
        let (fstype, _, opts) = (post.next()?, post.next()?, post.next()?);
        (fstype == "cgroup" && opts.split(',').any(|o| o == ctrl)).then(|| pre.split(' ').nth(4).map(PathBuf::from))?
    })?;
    let own_path = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls
            .split(',')
            .any(|c| c == ctrl)
            .then(|| path.trim_start_matches('/').to_string())
    });
    let candidates = own_path
        .filter(|p| !p.is_empty())
        .map(|p| mount.join(p).join(NAME))
        .into_iter()
        .chain([mount.join(NAME)]);
    for base in candidates {
        let _ = std::fs::create_dir(&base);
        if base.join("cgroup.procs").exists() && probe_child(&base) {
            return Some(base);
        }
    }
    None
}

/// A v2 base with the pids (and memory) controllers enabled for its children.
fn v2_base(mounts: &str, own: &str, want_memory: bool) -> Option<(PathBuf, (bool, bool))> {
    let mount = mounts.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split(' ').next()? == "cgroup2").then(|| pre.split(' ').nth(4).map(PathBuf::from))?
    })?;
    let own_path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_start_matches('/').to_string());
    let candidates = own_path
        .filter(|p| !p.is_empty())
        .map(|p| mount.join(p).join(NAME))
        .into_iter()
        .chain([mount.join(NAME)]);
    for base in candidates {
        let _ = std::fs::create_dir(&base);
        if !base.join("cgroup.procs").exists() {
            continue;
        }
        // The parent must delegate the controllers to `base`, and `base` to its children.
        if let Some(parent) = base.parent() {
            let _ = std::fs::write(
                parent.join("cgroup.subtree_control"),
                if want_memory { "+pids +memory" } else { "+pids" },
            );
        }
        let _ = std::fs::write(
            base.join("cgroup.subtree_control"),
            if want_memory { "+pids +memory" } else { "+pids" },
        );
        let ctrl = std::fs::read_to_string(base.join("cgroup.subtree_control")).unwrap_or_default();
        let has = |c: &str| ctrl.split_whitespace().any(|x| x == c);
        let (pids, memory) = (has("pids"), want_memory && has("memory"));
        if (pids || memory) && probe_child(&base) {
            return Some((base, (pids, memory)));
        }
    }
    None
}

/// Whether a child cgroup can be made (and removed) under `base`.
fn probe_child(base: &Path) -> bool {
    let dir = base.join(format!("probe-{}", std::process::id()));
    let ok = std::fs::create_dir(&dir).is_ok();
    let _ = std::fs::remove_dir(&dir);
    ok
}

/// One job's cgroup directories (one per v1 controller, or one v2 directory).
pub(crate) struct JobCgroup {
    dirs: Vec<PathBuf>,
    /// The directory with the memory controller, and whether it is v2.
    memory: Option<(PathBuf, bool)>,
}

impl JobCgroup {
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Whether the kernel's OOM killer killed a task of this job.
    pub fn oom_killed(&self) -> bool {
        let Some((dir, v2)) = &self.memory else { return false };
        let file = if *v2 { "memory.events" } else { "memory.oom_control" };
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .any(|(k, v)| k == "oom_kill" && v.trim().parse::<u64>().is_ok_and(|n| n > 0))
    }

    /// SIGKILLs every task left (v2's cgroup.kill where present, else one by one).
    pub fn kill(&self) {
        for dir in &self.dirs {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            for _ in 0..50 {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs.split_whitespace().filter_map(|p| p.parse().ok()).collect();
                if pids.is_empty() {
                    break;
                }
                for p in pids {
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Kills what is left and removes the directories; `None` so `?` can bail out of `make_job`.
    pub fn remove(&self) -> Option<()> {
        self.kill();
        for dir in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        None
    }
}
