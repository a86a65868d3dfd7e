pub mod bench;
mod bench_eval;
mod bench_step;
pub mod eval;
pub mod evalenv;
pub mod install;
pub mod misc;
pub mod model;
pub mod run;
pub mod sweep;
pub mod validate;

use anyhow::{bail, Result};
use recode_core::config::{load, LoadOptions, LoadedSpec};
use recode_core::validate::{check, HostInfo};
use std::path::Path;

/// Load a spec with environment and --set overrides, and refuse it unless it validates fully
/// (types, ranges, files, plugin names and plugin options).
pub fn load_checked(path: &Path, sets: &[String]) -> Result<LoadedSpec> {
    load_checked_as(path, sets, true)
}

/// `complete = false` checks a fragment: what it sets must be valid, but it may leave out what a
/// run requires.
pub fn load_checked_as(path: &Path, sets: &[String], complete: bool) -> Result<LoadedSpec> {
    let loaded = load(path, &LoadOptions { sets: sets.to_vec(), env: true })?;
    let reg = crate::host::registry();
    let ids = crate::host::known_model_ids();
    if let Err(problems) = check(&loaded, &HostInfo { registry: &reg, known_model_ids: &ids, complete }) {
        bail!("invalid spec {}:\n  {}", path.display(), problems.join("\n  "));
    }
    recode_core::build::check_plugins(&reg, &loaded.spec).map_err(|e| anyhow::anyhow!("invalid spec {}: {e:#}", path.display()))?;
    Ok(loaded)
}
