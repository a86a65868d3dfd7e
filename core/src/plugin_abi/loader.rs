//! Opening a plugin library: the ABI checks every kind shares, and the small helpers the C-ABI
//! reward and algorithm wrappers use for their calls (options as JSON, error buffers, finiteness).

use super::ffi;
use crate::registry::{PluginInfo, PluginKind};
use crate::spec::Options;
use anyhow::{anyhow, bail, Context, Result};
use libloading::Library;
use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An opened plugin library and its validated info.
pub(crate) struct Opened {
    pub lib: Arc<Library>,
    pub path: PathBuf,
    pub info: PluginInfo,
}

impl Opened {
    /// A required symbol, or an error naming the file, the symbol and the plugin kind.
    pub fn symbol<T: Copy>(&self, name: &str) -> Result<T> {
        self.optional(name)?.ok_or_else(|| {
            anyhow!(
                "{}: missing symbol `{name}`, which a {} plugin must export (see include/recode_plugin.h)",
                self.path.display(),
                self.info.kind
            )
        })
    }

    pub fn optional<T: Copy>(&self, name: &str) -> Result<Option<T>> {
        let cname = CString::new(name)?;
        // SAFETY: the caller names the symbol with its type from ffi.rs (the header's prototype).
        Ok(unsafe { self.lib.get::<T>(cname.as_bytes_with_nul()) }.ok().map(|s| *s))
    }

    /// Run the optional `recode_plugin_check_options`.
    pub fn check_options(&self, options: &CString) -> Result<()> {
        if let Some(f) = self.optional::<ffi::CheckOptionsFn>("recode_plugin_check_options")? {
            let mut err = ErrBuf::new();
            // SAFETY: NUL-terminated options and a writable buffer of the stated length.
            let rc = unsafe { f(options.as_ptr(), err.ptr(), err.len()) };
            if rc != 0 {
                bail!("{}: invalid options: {}", self.path.display(), err.message(rc));
            }
        }
        Ok(())
    }
}

pub(super) fn open_library(path: &Path) -> Result<Library> {
    // SAFETY: loading runs the library's initialisers; plugins are trusted code chosen by the user.
    unsafe { Library::new(path) }.with_context(|| format!("cannot load plugin library {}", path.display()))
}

fn kind_of(code: u32) -> Option<PluginKind> {
    match code {
        ffi::KIND_REWARD => Some(PluginKind::Reward),
        ffi::KIND_ALGORITHM => Some(PluginKind::Algorithm),
        ffi::KIND_MODEL => Some(PluginKind::Model),
        _ => None,
    }
}

/// Owned copy of a possibly-null C string from plugin info.
unsafe fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Open a library and validate `recode_plugin_info` (ABI version, kind, name).
pub(crate) fn open(path: &Path, expected: Option<PluginKind>) -> Result<Opened> {
    let lib = open_library(path)?;
    let shown = path.display();
    // SAFETY: the symbol has the header's prototype `const RecodePluginInfo* (void)`.
    let info_fn = unsafe { lib.get::<ffi::InfoFn>(b"recode_plugin_info\0") }
        .map(|s| *s)
        .map_err(|_| {
            anyhow!("{shown}: missing symbol `recode_plugin_info`; not a ReCode plugin (see include/recode_plugin.h)")
        })?;
    // SAFETY: plain C function with no arguments; the pointer is static data of the library.
    let raw = unsafe { info_fn() };
    if raw.is_null() {
        bail!("{shown}: recode_plugin_info() returned NULL");
    }
    let raw = unsafe { &*raw };
    if raw.abi_version != ffi::ABI_VERSION {
        bail!(
            "{shown}: built for plugin ABI version {}, but this host supports version {} \
             (rebuild it against include/recode_plugin.h)",
            raw.abi_version,
            ffi::ABI_VERSION
        );
    }
    let kind = kind_of(raw.kind).ok_or_else(|| {
        anyhow!(
            "{shown}: unknown plugin kind code {} (expected 1 reward, 2 algorithm, 3 model)",
            raw.kind
        )
    })?;
    // SAFETY: the header requires NUL-terminated strings (description may be NULL).
    let (name, version, description) = unsafe { (c_str(raw.name), c_str(raw.version), c_str(raw.description)) };
    if name.is_empty() {
        bail!("{shown}: recode_plugin_info() has an empty name");
    }
    if let Some(want) = expected {
        if kind != want {
            bail!("{shown}: is a {kind} plugin (`{name}`), but a {want} plugin was expected here");
        }
    }
    let info = PluginInfo {
        kind,
        name,
        version,
        source: path.display().to_string(),
        description,
    };
    Ok(Opened {
        lib: Arc::new(lib),
        path: path.to_path_buf(),
        info,
    })
}

/// The spec's TOML options as the NUL-terminated JSON object plugins receive.
pub(crate) fn options_json(path: &Path, options: &Options) -> Result<CString> {
    let json = serde_json::to_string(options)
        .with_context(|| format!("{}: options cannot be encoded as JSON", path.display()))?;
    CString::new(json).map_err(|_| anyhow!("{}: options contain a NUL character", path.display()))
}

/// The error buffer handed to plugins.
pub(crate) struct ErrBuf(Vec<u8>);

impl ErrBuf {
    pub fn new() -> Self {
        ErrBuf(vec![0; 1024])
    }
    pub fn ptr(&mut self) -> *mut c_char {
        self.0.as_mut_ptr().cast()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// The plugin's message (up to the first NUL, or the whole buffer if it wrote none).
    pub fn message(&self, rc: i32) -> String {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        let msg = String::from_utf8_lossy(&self.0[..end]).trim().to_string();
        if msg.is_empty() {
            format!("error code {rc} (no message)")
        } else {
            format!("{msg} (error code {rc})")
        }
    }
}

/// Index of the first non-finite value, for output checks.
pub(crate) fn first_non_finite<T: Copy + Into<f64>>(xs: &[T]) -> Option<(usize, f64)> {
    xs.iter().map(|&x| x.into()).enumerate().find(|(_, x)| !x.is_finite())
}
