//! The fresh root a confined program sees: read-only binds of the system directories and of
//! the directories the interpreter uses (asked from Python once), a minimal /dev, /proc and a
//! private /tmp. Nothing else of the host: no /root, /home, /run, /var, /work, /sys.

use super::confine::{Bind, Fs};
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// Top-level system entries bound read-only (or recreated as the symlinks they are).
const SYSTEM: [&str; 8] = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"];
const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

/// Directories the interpreter reads: prefixes, the executable's folder, sys.path.
const PY_PATHS: &str = "import json, os, site, sys\n\
p = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable)]\n\
try:\n    p += site.getsitepackages()\nexcept Exception:\n    pass\n\
p += sys.path\n\
print(json.dumps([os.path.abspath(x) for x in p if x]))\n";

/// Host paths (as given, absolute) the interpreter needs besides the system directories.
pub(crate) fn python_paths(python: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new(python)
        .args(["-I", "-c", PY_PATHS])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} could not list its paths: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let paths: Vec<String> = serde_json::from_slice(&out.stdout).context("reading the interpreter's paths")?;
    let mut v: Vec<PathBuf> = paths.into_iter().map(PathBuf::from).collect();
    if let Some(dir) = python.parent() {
        v.push(dir.to_path_buf());
    }
    Ok(v)
}

fn under(p: &Path, base: &Path) -> bool {
    p.starts_with(base)
}

fn cstr(p: impl AsRef<Path>) -> CString {
    CString::new(p.as_ref().as_os_str().as_encoded_bytes()).expect("path without NUL")
}

/// `/newroot` + an absolute path.
fn inside(p: &Path) -> PathBuf {
    Path::new("/newroot").join(p.strip_prefix("/").unwrap_or(p))
}

/// Mount flags a read-only remount of a bind of `p` must keep (noexec is locked in a userns).
fn kept_flags(p: &Path) -> libc::c_ulong {
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let c = cstr(p);
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    if st.f_flag & libc::ST_NOEXEC != 0 {
        libc::MS_NOEXEC
    } else {
        0
    }
}

/// The layout for `extra` host paths (the interpreter's and any configured ones), each bound at
/// its own path and at its canonical one.
pub(crate) fn plan(extra: &[PathBuf], tmp_mb: u64, proc_: bool) -> Result<(Fs, Vec<String>)> {
    let mut dirs: Vec<PathBuf> = vec!["/newroot/dev".into(), "/newroot/tmp".into(), "/newroot/proc".into()];
    let mut symlinks = vec![];
    let mut binds = vec![];
    let mut shown = vec![];
    let mut system: Vec<PathBuf> = vec![];
    for s in SYSTEM {
        let p = Path::new(s);
        let Ok(meta) = p.symlink_metadata() else { continue };
        system.push(p.to_path_buf());
        if meta.file_type().is_symlink() {
            symlinks.push((cstr(std::fs::read_link(p)?), cstr(inside(p))));
        } else if meta.is_dir() {
            dirs.push(inside(p));
            binds.push(Bind {
                src: cstr(Path::new("/oldroot").join(&s[1..])),
                dst: cstr(inside(p)),
                is_dir: true,
                flags: kept_flags(p),
            });
            shown.push(s.to_string());
        }
    }
    // Each wanted path at its own name and its canonical one, without those the system
    // directories already cover, and without paths inside another one kept.
    let mut wanted: Vec<(PathBuf, PathBuf)> = vec![];
    for p in extra {
        let Ok(real) = p.canonicalize() else { continue };
        for dst in [p.clone(), real.clone()] {
            let dst: PathBuf = dst.components().filter(|c| !matches!(c, Component::CurDir)).collect();
            if dst == Path::new("/") || system.iter().any(|s| under(&dst, s)) {
                continue;
            }
            wanted.push((dst, real.clone()));
        }
    }
    wanted.sort_by_key(|(d, _)| d.components().count());
    let mut kept: Vec<(PathBuf, PathBuf)> = vec![];
    for (dst, real) in wanted {
        if !kept.iter().any(|(k, _)| under(&dst, k)) {
            kept.push((dst, real));
        }
    }
    for (dst, real) in &kept {
        let is_dir = real.is_dir();
        let mut parent = dst.parent();
        let mut chain = vec![];
        while let Some(d) = parent.filter(|d| *d != Path::new("/")) {
            chain.push(inside(d));
            parent = d.parent();
        }
        dirs.extend(chain.into_iter().rev());
        if is_dir {
            dirs.push(inside(dst));
        }
        binds.push(Bind {
            src: cstr(Path::new("/oldroot").join(real.strip_prefix("/")?)),
            dst: cstr(inside(dst)),
            is_dir,
            flags: kept_flags(real),
        });
        shown.push(dst.display().to_string());
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    let devices = DEVICES
        .iter()
        .filter(|d| Path::new("/dev").join(d).exists())
        .map(|d| {
            (
                cstr(Path::new("/oldroot/dev").join(d)),
                cstr(Path::new("/newroot/dev").join(d)),
            )
        })
        .collect();
    let dev_symlinks = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ]
    .iter()
    .map(|(t, l)| (cstr(t), cstr(Path::new("/newroot/dev").join(l))))
    .collect();
    let stage = ["/tmp", "/mnt", "/var/tmp"]
        .into_iter()
        .find(|d| Path::new(d).is_dir())
        .context("no /tmp, /mnt or /var/tmp to stage the sandbox's root on")?;
    let fs = Fs {
        stage: cstr(stage),
        stage_newroot: cstr(Path::new(stage).join("newroot")),
        stage_oldroot: cstr(Path::new(stage).join("oldroot")),
        dirs: dirs.iter().map(cstr).collect(),
        symlinks,
        binds,
        devices,
        dev_symlinks,
        tmp_opts: cstr(format!("size={tmp_mb}m,mode=1777")),
        shm_opts: cstr(format!("size={tmp_mb}m,mode=1777")),
        proc: proc_,
    };
    Ok((fs, shown))
}
