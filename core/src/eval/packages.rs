//! Which Python modules are importable: one probe per distinct module, cached for the process.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

fn cache() -> &'static Mutex<HashMap<(String, String), bool>> {
    static C: OnceLock<Mutex<HashMap<(String, String), bool>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// Whether `module` can be found by `python` (without importing it). The name comes from the
/// dataset and is passed as an argument, never as code.
pub fn available(python: &Path, module: &str) -> bool {
    let key = (python.display().to_string(), module.to_string());
    if let Some(&v) = cache().lock().unwrap().get(&key) {
        return v;
    }
    let ok = Command::new(python)
        .args([
            "-I",
            "-c",
            "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 3)",
            module,
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    cache().lock().unwrap().insert(key, ok);
    ok
}

/// The modules of `modules` that are not installed.
pub fn missing(python: &Path, modules: &[String]) -> Vec<String> {
    modules.iter().filter(|m| !available(python, m)).cloned().collect()
}

/// The interpreter that runs the programs, as recorded in a report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PythonEnv {
    pub python: String,
    pub version: String,
    /// `sys.prefix`; a pinned environment built by `recode eval-env create` has its manifest there.
    pub prefix: String,
    /// Set when `prefix` is a pinned evaluation environment (the hash of its requirements).
    pub pinned_requirements_hash: Option<String>,
    /// Version of the distribution behind each third-party module the problems import
    /// ("not installed" when it cannot be found).
    pub packages: BTreeMap<String, String>,
}

const VERSIONS_PY: &str = r#"
import json, sys, importlib.metadata as md
dists = md.packages_distributions() if hasattr(md, "packages_distributions") else {}
std = getattr(sys, "stdlib_module_names", ())
out = {}
for m in sys.argv[1:]:
    if m in std or m in sys.builtin_module_names:
        continue
    names = dists.get(m, [m])
    try:
        out[m] = md.version(names[0])
    except Exception:
        out[m] = "not installed"
print(json.dumps({"version": sys.version.split()[0], "prefix": sys.prefix, "packages": out}))
"#;

/// Probes `python` for its version, prefix and the versions of `modules` (names passed as
/// arguments, never as code).
pub fn python_env(python: &Path, modules: &[String]) -> PythonEnv {
    let mut env = PythonEnv {
        python: python.display().to_string(),
        ..Default::default()
    };
    let out = Command::new(python)
        .args(["-I", "-c", VERSIONS_PY])
        .args(modules)
        .output();
    let Some(v) = out
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
    else {
        env.version = "unknown (version probe failed)".into();
        return env;
    };
    env.version = v["version"].as_str().unwrap_or_default().to_string();
    env.prefix = v["prefix"].as_str().unwrap_or_default().to_string();
    if let Some(p) = v["packages"].as_object() {
        env.packages = p
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
    }
    env.pinned_requirements_hash = super::evalenv::manifest_hash(Path::new(&env.prefix));
    env
}
