use super::{ffi, open_library};
use anyhow::{anyhow, bail, Result};
use std::ffi::CStr;
use std::path::Path;

/// The burn release the host's model plugins are built against (see the workspace Cargo.toml).
pub const BURN_VERSION: &str = "burn 0.21.0";

/// "recode-core <version>; <rustc --version>; <burn>", the identity a model plugin must match.
pub fn fingerprint_for(burn: &str) -> String {
    format!("recode-core {}; {}; {burn}", env!("CARGO_PKG_VERSION"), env!("RECODE_RUSTC_VERSION"))
}

/// The host's fingerprint with the default burn version.
pub fn host_fingerprint() -> String {
    fingerprint_for(BURN_VERSION)
}

/// Refuse a model plugin whose `recode_model_plugin_abi_fingerprint()` differs from the host's.
/// Call before resolving any Rust symbol of the plugin.
pub fn check_model_plugin(path: &Path) -> Result<()> {
    check_model_plugin_against(path, &host_fingerprint())
}

/// As `check_model_plugin`, against an explicit expected fingerprint.
pub fn check_model_plugin_against(path: &Path, expected: &str) -> Result<()> {
    let lib = open_library(path)?;
    let shown = path.display();
    // SAFETY: the header's prototype `const char* (void)`.
    let f = unsafe { lib.get::<ffi::FingerprintFn>(b"recode_model_plugin_abi_fingerprint\0") }
        .map(|s| *s)
        .map_err(|_| anyhow!("{shown}: missing symbol `recode_model_plugin_abi_fingerprint`; not a model plugin"))?;
    // SAFETY: plain C function returning a static NUL-terminated string (or NULL).
    let p = unsafe { f() };
    if p.is_null() {
        bail!("{shown}: recode_model_plugin_abi_fingerprint() returned NULL");
    }
    let found = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    if found != expected {
        bail!(
            "{shown}: model plugin was built for `{found}`, but this host is `{expected}`; \
             rebuild the plugin with the host's compiler and workspace"
        );
    }
    Ok(())
}
