//! Rust mirrors of include/recode_plugin.h (ABI version 1). Keep the two in sync.

use std::ffi::{c_char, c_double, c_int};

pub const ABI_VERSION: u32 = 1;
pub const KIND_REWARD: u32 = 1;
pub const KIND_ALGORITHM: u32 = 2;
pub const KIND_MODEL: u32 = 3;
pub const METRIC_NAME_LEN: usize = 48;

#[repr(C)]
pub struct PluginInfo {
    pub abi_version: u32,
    pub kind: u32,
    pub name: *const c_char,
    pub version: *const c_char,
    pub description: *const c_char,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Str {
    pub ptr: *const c_char,
    pub len: usize,
}

impl Str {
    pub fn new(s: &str) -> Self {
        Str {
            ptr: s.as_ptr().cast(),
            len: s.len(),
        }
    }
}

#[repr(C)]
pub struct RewardItem {
    pub prompt: Str,
    pub completion: Str,
    pub target: Str,
    pub completion_tokens: usize,
}

#[repr(C)]
pub struct LossBatch {
    pub rows: usize,
    pub cols: usize,
    pub logp: *const f32,
    pub old_logp: *const f32,
    pub ref_logp: *const f32,
    pub advantages: *const f32,
    pub mask: *const f32,
    pub norm_rows: usize,
    pub norm_tokens: c_double,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Metric {
    pub name: [c_char; METRIC_NAME_LEN],
    pub value: c_double,
}

pub type InfoFn = unsafe extern "C" fn() -> *const PluginInfo;
pub type CheckOptionsFn = unsafe extern "C" fn(*const c_char, *mut c_char, usize) -> c_int;
pub type RewardScoreFn =
    unsafe extern "C" fn(*const c_char, usize, *const RewardItem, *mut c_double, *mut c_char, usize) -> c_int;
pub type AdvantagesFn =
    unsafe extern "C" fn(*const c_char, *const c_double, usize, usize, *mut c_double, *mut c_char, usize) -> c_int;
pub type KeepGroupFn = unsafe extern "C" fn(*const c_char, *const c_double, usize) -> c_int;
pub type NeedsReferenceFn = unsafe extern "C" fn(*const c_char) -> c_int;
pub type LossFn = unsafe extern "C" fn(
    *const c_char,
    *const LossBatch,
    *mut c_double,
    *mut f32,
    *mut Metric,
    usize,
    *mut usize,
    *mut c_char,
    usize,
) -> c_int;
pub type FingerprintFn = unsafe extern "C" fn() -> *const c_char;

/// The fingerprint as a NUL-terminated constant, compiled into the host and into every plugin
/// (through `export_model_plugin!`): each side records the compiler that built its recode-core.
pub const MODEL_PLUGIN_FINGERPRINT_C: &str = concat!(
    "recode-core ",
    env!("CARGO_PKG_VERSION"),
    "; ",
    env!("RECODE_RUSTC_VERSION"),
    "; burn 0.21.0\0"
);
