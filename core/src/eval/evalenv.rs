//! The pinned evaluation environment: a Python venv with the package versions CodeUpdateArena
//! was written for (numpy 1.x, torch 2.x, sympy), built from `eval-env/requirements.txt` and
//! cached by the hash of what it was built from. `recode eval` runs programs with it when present.
//!
//! The sandbox remounts the whole filesystem read-only and gives each program a private /tmp,
//! so the environment must live outside /tmp (the default cache folder does).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned requirements shipped with this build.
pub const REQUIREMENTS: &str = include_str!("../../../eval-env/requirements.txt");

/// Written into the environment's folder (its `sys.prefix`) once it is complete.
pub const MANIFEST: &str = "recode-eval-env.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub requirements_hash: String,
    pub requirements: String,
    pub base_python: String,
    pub python_version: String,
    /// Every installed distribution and its version.
    pub packages: BTreeMap<String, String>,
}

/// The requirements with or without torch (its lines are those naming the `torch` package).
pub fn requirements(with_torch: bool) -> String {
    REQUIREMENTS
        .lines()
        .filter(|l| with_torch || !is_torch_line(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn is_torch_line(line: &str) -> bool {
    let name: String = line
        .trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    name.eq_ignore_ascii_case("torch")
}

/// FNV-1a 64 of the text, in hex: a cache key for the environment folder, not a security check.
pub fn content_hash(text: &str) -> String {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// `$RECODE_CACHE/eval-env`, else `$XDG_CACHE_HOME/recode/eval-env`, else `~/.cache/recode/eval-env`
/// (beside the model cache).
pub fn cache_root() -> Result<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = env("RECODE_CACHE") {
        return Ok(p.join("eval-env"));
    }
    if let Some(p) = env("XDG_CACHE_HOME") {
        return Ok(p.join("recode").join("eval-env"));
    }
    match env("HOME") {
        Some(h) => Ok(h.join(".cache").join("recode").join("eval-env")),
        None => bail!("no cache folder for the evaluation environment: set RECODE_CACHE (or XDG_CACHE_HOME or HOME)"),
    }
}

/// Folder of the environment built from `requirements` under `root`.
pub fn env_dir(root: &Path, requirements: &str) -> PathBuf {
    root.join(content_hash(requirements))
}

pub fn python_of(dir: &Path) -> PathBuf {
    dir.join("bin").join("python3")
}

/// The manifest's requirements hash, if `prefix` is a complete pinned environment.
pub fn manifest_hash(prefix: &Path) -> Option<String> {
    read_manifest(prefix).map(|m| m.requirements_hash)
}

pub fn read_manifest(dir: &Path) -> Option<Manifest> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(MANIFEST)).ok()?).ok()
}

/// The interpreter of a complete environment for this build's requirements (with torch
/// preferred over without), if one was built under `root`.
pub fn find(root: &Path) -> Option<PathBuf> {
    [true, false]
        .into_iter()
        .map(|t| env_dir(root, &requirements(t)))
        .find(|d| read_manifest(d).is_some())
        .map(|d| python_of(&d))
}

/// The interpreter the sandbox runs: `explicit` if given, else the pinned environment when it
/// was built (and `use_env`), else `python3` from PATH.
pub fn sandbox_python(explicit: Option<&Path>, use_env: bool) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if use_env {
        if let Some(py) = find(&cache_root()?) {
            check_location(&py)?;
            return Ok(py);
        }
    }
    Ok(PathBuf::from("python3"))
}

/// Environments under `root` built from other requirements (left by an older build).
pub fn stale(root: &Path) -> Vec<PathBuf> {
    let current: Vec<PathBuf> = [true, false]
        .into_iter()
        .map(|t| env_dir(root, &requirements(t)))
        .collect();
    let Ok(entries) = std::fs::read_dir(root) else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !current.contains(p) && read_manifest(p).is_some())
        .collect()
}

/// The sandbox hides the host's /tmp; an environment there would not be visible to programs.
pub fn check_location(dir: &Path) -> Result<()> {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    if abs.starts_with("/tmp") || abs.starts_with(std::env::temp_dir()) {
        bail!(
            "{}: the evaluation sandbox mounts a private /tmp, so an environment there is invisible to the programs; set RECODE_CACHE to a folder outside it",
            abs.display()
        );
    }
    Ok(())
}

/// Builds (or, unless `force`, reuses) the environment for `requirements` under `root` with
/// `base_python -m venv` and pip. pip's output goes to this process's stderr.
pub fn create(root: &Path, requirements: &str, base_python: &Path, force: bool) -> Result<(PathBuf, Manifest)> {
    let dir = env_dir(root, requirements);
    check_location(&dir)?;
    if !force {
        if let Some(m) = read_manifest(&dir) {
            return Ok((python_of(&dir), m));
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the unfinished environment {}", dir.display()))?;
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    run(
        Command::new(base_python).args(["-m", "venv"]).arg(&dir),
        "creating the venv",
    )?;
    let req_path = dir.join("requirements.txt");
    std::fs::write(&req_path, requirements).with_context(|| format!("writing {}", req_path.display()))?;
    let python = python_of(&dir);
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(&req_path),
        "installing the pinned requirements",
    )?;
    let manifest = describe(&python, base_python, requirements)?;
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    std::fs::write(dir.join(MANIFEST), text).with_context(|| format!("writing {}", dir.join(MANIFEST).display()))?;
    Ok((python, manifest))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status}): {cmd:?}");
    }
    Ok(())
}

fn describe(python: &Path, base_python: &Path, requirements: &str) -> Result<Manifest> {
    let code = "import json, sys, importlib.metadata as md\n\
                print(json.dumps({'version': sys.version.split()[0], 'packages': {d.metadata['Name']: d.version for d in md.distributions()}}))";
    let out = Command::new(python)
        .args(["-I", "-c", code])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} cannot list its packages: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("package listing is not JSON")?;
    let packages = v["packages"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Manifest {
        requirements_hash: content_hash(requirements),
        requirements: requirements.to_string(),
        base_python: base_python.display().to_string(),
        python_version: v["version"].as_str().unwrap_or_default().to_string(),
        packages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_pin_numpy_1_and_torch_is_optional() {
        let full = requirements(true);
        assert!(full.lines().any(|l| l.starts_with("numpy==1.")), "{full}");
        assert!(full.lines().any(is_torch_line) && !requirements(false).lines().any(is_torch_line));
        assert!(requirements(false).contains("sympy=="));
        assert_ne!(
            env_dir(Path::new("/c"), &full),
            env_dir(Path::new("/c"), &requirements(false))
        );
    }

    #[test]
    fn refuses_tmp_and_finds_only_complete_environments() {
        assert!(check_location(Path::new("/tmp/x/eval-env")).is_err());
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("eval-env");
        let dir = env_dir(&root, &requirements(false));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(find(&root), None, "no manifest yet: unfinished");
        let m = Manifest {
            requirements_hash: content_hash(&requirements(false)),
            requirements: requirements(false),
            base_python: "python3".into(),
            python_version: "3.11".into(),
            packages: BTreeMap::new(),
        };
        std::fs::write(dir.join(MANIFEST), serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(find(&root), Some(python_of(&dir)));
        assert_eq!(manifest_hash(&dir), Some(m.requirements_hash.clone()));
        let old = root.join("0123456789abcdef");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join(MANIFEST), serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(stale(&root), vec![old]);
    }
}
