use super::ffi;
use super::loader::{open, open_library};
use crate::registry::{ModelContext, ModelFactory, PluginInfo, PluginKind};
use anyhow::{anyhow, bail, Result};
use std::ffi::CStr;
use std::path::Path;

/// The burn release the host's model plugins are built against (see the workspace Cargo.toml).
pub const BURN_VERSION: &str = "burn 0.21.0";

/// "recode-core <version>; <rustc --version>; <burn>", the identity a model plugin must match.
pub fn fingerprint_for(burn: &str) -> String {
    format!(
        "recode-core {}; {}; {burn}",
        env!("CARGO_PKG_VERSION"),
        env!("RECODE_RUSTC_VERSION")
    )
}

/// The host's fingerprint: the same constant plugins export, so the two cannot drift apart.
pub fn host_fingerprint() -> String {
    ffi::MODEL_PLUGIN_FINGERPRINT_C.trim_end_matches('\0').to_string()
}

/// Load a Rust model plugin (a `dylib` built in this workspace with `export_model_plugin!`):
/// check the fingerprint first, then its info, then resolve `recode_model_plugin_create`.
/// The library is never unloaded: policies it creates keep code and vtables in it.
pub fn load_model_plugin(path: &Path) -> Result<(ModelFactory, PluginInfo)> {
    check_model_plugin(path)?;
    let opened = open(path, Some(PluginKind::Model))?;
    let create: ModelFactory = opened.symbol("recode_model_plugin_create")?;
    std::mem::forget(opened.lib.clone());
    Ok((create, opened.info))
}

/// Call a model factory, turning a panic inside it into an error naming `what`.
pub fn create_policy(what: &str, create: ModelFactory, ctx: &ModelContext<'_>) -> Result<Box<dyn crate::api::Policy>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| create(ctx))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            bail!(
                "model plugin {what} panicked while loading: {}",
                msg.unwrap_or_else(|| "(no message)".into())
            )
        }
    }
}

/// Exports what the host looks for in a model plugin library: `recode_plugin_info` and
/// `recode_model_plugin_abi_fingerprint` (C) and `recode_model_plugin_create` (Rust ABI, same
/// signature as a built-in `ModelFactory`). Use once in a `crate-type = ["dylib"]` crate that is a
/// member of this workspace and depends on burn through `recode-burn`:
///
/// ```ignore
/// recode_core::export_model_plugin!(name: "bigram", version: "0.1.0",
///     description: "a tiny example model", create: my_factory);
/// ```
#[macro_export]
macro_rules! export_model_plugin {
    (name: $name:literal, version: $version:literal, description: $desc:literal, create: $create:path $(,)?) => {
        #[no_mangle]
        pub extern "C" fn recode_model_plugin_abi_fingerprint() -> *const ::std::ffi::c_char {
            $crate::plugin_abi::ffi::MODEL_PLUGIN_FINGERPRINT_C
                .as_ptr()
                .cast()
        }

        #[no_mangle]
        pub extern "C" fn recode_plugin_info() -> *const $crate::plugin_abi::ffi::PluginInfo {
            struct Info($crate::plugin_abi::ffi::PluginInfo);
            // SAFETY: only pointers to static NUL-terminated strings, never written.
            unsafe impl Sync for Info {}
            static INFO: Info = Info($crate::plugin_abi::ffi::PluginInfo {
                abi_version: $crate::plugin_abi::ffi::ABI_VERSION,
                kind: $crate::plugin_abi::ffi::KIND_MODEL,
                name: concat!($name, "\0").as_ptr().cast(),
                version: concat!($version, "\0").as_ptr().cast(),
                description: concat!($desc, "\0").as_ptr().cast(),
            });
            &INFO.0
        }

        #[no_mangle]
        pub fn recode_model_plugin_create(
            ctx: &$crate::registry::ModelContext<'_>,
        ) -> $crate::anyhow::Result<Box<dyn $crate::api::Policy>> {
            let create: $crate::registry::ModelFactory = $create;
            create(ctx)
        }
    };
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
