//! Example reward plugin in Rust over the C ABI of include/recode_plugin.h (version 1).
//! No dependencies: the C structs are re-declared here.

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

#[repr(C)]
pub struct RecodePluginInfo {
    abi_version: u32,
    kind: u32,
    name: *const c_char,
    version: *const c_char,
    description: *const c_char,
}

#[repr(C)]
pub struct RecodeStr {
    ptr: *const c_char,
    len: usize,
}

#[repr(C)]
pub struct RecodeRewardItem {
    prompt: RecodeStr,
    completion: RecodeStr,
    target: RecodeStr,
    completion_tokens: usize,
}

struct Info(RecodePluginInfo);
// SAFETY: immutable static data (pointers to string literals).
unsafe impl Sync for Info {}

static INFO: Info = Info(RecodePluginInfo {
    abi_version: 1,
    kind: 1, // reward
    name: c"rust-target-overlap".as_ptr(),
    version: c"0.1.0".as_ptr(),
    description: c"1 if the completion contains the target, else the share of target lines it contains".as_ptr(),
});

#[no_mangle]
pub extern "C" fn recode_plugin_info() -> *const RecodePluginInfo {
    &INFO.0
}

fn text(s: &RecodeStr) -> Result<&str, String> {
    if s.len == 0 {
        return Ok("");
    }
    // SAFETY: the host passes a valid pointer to `len` bytes for the duration of the call.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr.cast::<u8>(), s.len) };
    std::str::from_utf8(bytes).map_err(|e| format!("input is not UTF-8: {e}"))
}

fn score_one(completion: &str, target: &str) -> f64 {
    let target = target.trim();
    if completion.contains(target) {
        return 1.0;
    }
    let lines: Vec<&str> = target.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return 0.0;
    }
    lines.iter().filter(|l| completion.contains(*l)).count() as f64 / lines.len() as f64
}

/// Flat-JSON check for `"panic": true` (enough for this example's single option).
fn wants_panic(options: &str) -> bool {
    let compact: String = options.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains("\"panic\":true")
}

fn write_err(err: *mut c_char, err_len: usize, msg: &str) {
    if err.is_null() || err_len == 0 {
        return;
    }
    let n = msg.len().min(err_len - 1);
    // SAFETY: the host gives a writable buffer of `err_len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err.cast::<u8>(), n);
        *err.add(n) = 0;
    }
}

unsafe fn score(options: *const c_char, n: usize, items: *const RecodeRewardItem, out: *mut f64) -> Result<(), String> {
    let options = CStr::from_ptr(options).to_str().map_err(|e| e.to_string())?;
    if wants_panic(options) {
        panic!("asked to panic by the options");
    }
    let items = if n == 0 { &[][..] } else { std::slice::from_raw_parts(items, n) };
    let out = if n == 0 { &mut [][..] } else { std::slice::from_raw_parts_mut(out, n) };
    for (item, o) in items.iter().zip(out) {
        *o = score_one(text(&item.completion)?, text(&item.target)?);
    }
    Ok(())
}

/// # Safety
/// Called by the host with the arguments described in include/recode_plugin.h.
#[no_mangle]
pub unsafe extern "C" fn recode_reward_score(
    options_json: *const c_char,
    n: usize,
    items: *const RecodeRewardItem,
    out_scores: *mut f64,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    // Never unwind into the host: a panic becomes error code 2.
    match catch_unwind(AssertUnwindSafe(|| score(options_json, n, items, out_scores))) {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            write_err(err, err_len, &msg);
            1
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            write_err(err, err_len, &format!("panic in rust-target-overlap: {msg}"));
            2
        }
    }
}
