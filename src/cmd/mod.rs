pub mod bench;
mod bench_eval;
mod bench_step;
pub mod eval;
pub mod evalenv;
pub mod inspect;
pub mod install;
pub mod model;
pub mod run;
pub mod sweep;
pub mod validate;

use anyhow::Result;
use recode_core::config::LoadedSpec;
use recode_core::validate::SpecChecker;
use std::path::Path;

/// A spec with environment and --set overrides, refused unless it validates fully (types, ranges,
/// files, plugin names and plugin options); the checks are the library's (`HostInfo`).
pub fn load_checked(path: &Path, sets: &[String]) -> Result<LoadedSpec> {
    crate::host::Host::new().info(true).load_checked(path, sets)
}
