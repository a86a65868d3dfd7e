//! Loading reward and algorithm plugins through the C ABI of include/recode_plugin.h, and the
//! Rust model plugins (dylibs sharing the host's burn, usable only with an identical toolchain and
//! workspace build; checked by fingerprint before any Rust symbol is touched).
//!
//! Each plugin object holds an `Arc<Library>`, so the library stays loaded while it lives. Every
//! call checks the plugin's return code and outputs (count, finiteness) and names the library.

mod algorithm;
pub mod ffi;
mod loader;
mod model;
mod reward;

pub use algorithm::{load_algorithm, CAlgorithm};
pub use ffi::MODEL_PLUGIN_FINGERPRINT_C;
pub use model::{
    check_model_plugin, check_model_plugin_against, create_policy, fingerprint_for, host_fingerprint,
    load_model_plugin, BURN_VERSION,
};
pub use reward::{load_reward, CReward};

use crate::registry::{PluginInfo, PluginKind};
use anyhow::Result;
use std::path::Path;

/// What a plugin library says about itself (for `recode plugins`), after the ABI checks.
pub fn describe(path: &Path) -> Result<PluginInfo> {
    let info = loader::open(path, None)?.info;
    if info.kind == PluginKind::Model {
        check_model_plugin(path)?;
    }
    Ok(info)
}
