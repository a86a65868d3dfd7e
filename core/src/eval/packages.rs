//! Which Python modules are importable: one probe per distinct module, cached for the process.

use std::collections::HashMap;
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
        .args(["-I", "-c", "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 3)", module])
        .output()
        .is_ok_and(|o| o.status.success());
    cache().lock().unwrap().insert(key, ok);
    ok
}

/// The modules of `modules` that are not installed.
pub fn missing(python: &Path, modules: &[String]) -> Vec<String> {
    modules.iter().filter(|m| !available(python, m)).cloned().collect()
}
