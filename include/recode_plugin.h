/*
 * recode_plugin.h — the C ABI of ReCode-rs reward and algorithm plugins.
 *
 * A plugin is a shared library (.so / .dylib / .dll) named in a spec by path, e.g.
 *   [[reward]]  name = "./libmy_reward.so"     options = { keyword = "import" }
 *   [algorithm] name = "./libmy_algo.so"       options = { ... }
 * The host (recode_core::plugin_abi) loads it with dlopen, checks recode_plugin_info(), and calls
 * the functions below. Only plain data crosses the boundary: no Rust types, no ownership transfer.
 *
 * Conventions for every function:
 *  - Strings are UTF-8, passed as pointer + length (RecodeStr), not NUL-terminated, except
 *    `options_json`, which is a NUL-terminated JSON object (the spec's `options` table; "{}" when
 *    empty). Plugins are stateless: options come with every call; parse them (or cache by content).
 *  - All pointers are owned by the host and valid only during the call. Output buffers are
 *    allocated by the host with the documented size and pre-filled with NaN; a plugin must write
 *    every element. Elements left NaN, or written NaN/Inf, make the host fail with an error.
 *  - Return 0 on success. On failure return non-zero and write a NUL-terminated message into
 *    `err` (at most `err_len` bytes including the NUL; truncate if longer). The host reports it
 *    together with the library path.
 *  - Functions may be called from any thread, also concurrently: keep no mutable global state
 *    (or guard it), and keep no pointer after returning.
 *  - Rust plugins: a panic must never unwind across `extern "C"` (it aborts the host). Wrap each
 *    body in std::panic::catch_unwind and turn a panic into a non-zero return with a message.
 *  - Return values must not depend on anything but the arguments (rewards must be deterministic).
 */
#ifndef RECODE_PLUGIN_H
#define RECODE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change to this header. The host refuses other versions. */
#define RECODE_PLUGIN_ABI_VERSION 1

#if defined(_WIN32)
#define RECODE_EXPORT __declspec(dllexport)
#else
#define RECODE_EXPORT __attribute__((visibility("default")))
#endif

/* RecodePluginInfo.kind */
#define RECODE_PLUGIN_KIND_REWARD 1
#define RECODE_PLUGIN_KIND_ALGORITHM 2
#define RECODE_PLUGIN_KIND_MODEL 3

/* Capacity of a metric name, NUL included. */
#define RECODE_METRIC_NAME_LEN 48

typedef struct RecodePluginInfo {
    uint32_t abi_version;    /* RECODE_PLUGIN_ABI_VERSION the plugin was built against */
    uint32_t kind;           /* one of RECODE_PLUGIN_KIND_* */
    const char* name;        /* NUL-terminated; used in logs and `recode plugins` */
    const char* version;     /* NUL-terminated, e.g. "0.1.0" */
    const char* description; /* NUL-terminated, one line; may be NULL */
} RecodePluginInfo;

/* A UTF-8 string slice; `ptr` may be NULL when `len` is 0. */
typedef struct RecodeStr {
    const char* ptr;
    size_t len;
} RecodeStr;

/* One completion to score. */
typedef struct RecodeRewardItem {
    RecodeStr prompt;         /* the rendered prompt */
    RecodeStr completion;     /* generated text only */
    RecodeStr target;         /* the reference answer (ReCode: new_code) */
    size_t completion_tokens; /* number of generated tokens */
} RecodeRewardItem;

/* One micro-batch of a policy-gradient loss; per-token arrays are row-major [rows * cols]. */
typedef struct RecodeLossBatch {
    size_t rows;
    size_t cols;
    const float* logp;       /* current policy log-probs of the completion tokens */
    const float* old_logp;   /* log-probs of the sampling policy (== logp on the first pass) */
    const float* ref_logp;   /* reference policy log-probs; NULL unless needs_reference() == 1 */
    const float* advantages; /* [rows], one per sequence */
    const float* mask;       /* 1 for tokens that count, 0 for padding (padding values are arbitrary) */
    size_t norm_rows;        /* sequences in the whole optimiser mini-batch */
    double norm_tokens;      /* unmasked tokens in the whole mini-batch */
} RecodeLossBatch;

/* A named diagnostic, e.g. {"clip_frac", 0.1}. */
typedef struct RecodeMetric {
    char name[RECODE_METRIC_NAME_LEN]; /* NUL-terminated */
    double value;
} RecodeMetric;

/* ---- Every plugin ---------------------------------------------------------------------- */

/* Required. Static description of the plugin; the returned pointer stays valid while the library
 * is loaded. Must not fail and must be safe to call first, before any other function. */
RECODE_EXPORT const RecodePluginInfo* recode_plugin_info(void);

/* Optional. Validate options once at load time so a bad spec fails before training starts
 * (unknown keys, out-of-range values). Returns 0 when valid. */
RECODE_EXPORT int recode_plugin_check_options(const char* options_json, char* err, size_t err_len);

/* ---- Reward plugins (kind RECODE_PLUGIN_KIND_REWARD) ----------------------------------- */

/* Required. Score `n` completions: write out_scores[0..n] (finite values).
 * This ABI is unchanged since Python rewards arrived: a C reward sees the prompt, the completion,
 * the target and the token count, and scores every item. A reward that needs the data row's other
 * columns, the completion's token ids, "does not apply" (None) or extra metrics is written in
 * Python ([[reward]] python = "..."; see docs/plugins.md, "Write a reward in Python"). */
RECODE_EXPORT int recode_reward_score(const char* options_json, size_t n, const RecodeRewardItem* items,
                                      double* out_scores, char* err, size_t err_len);

/* ---- Algorithm plugins (kind RECODE_PLUGIN_KIND_ALGORITHM) ----------------------------- */

/* Required. Advantages for `n` rewards laid out as consecutive groups of `group_size`
 * (n is a multiple of group_size): write out[0..n]. */
RECODE_EXPORT int recode_algo_advantages(const char* options_json, const double* rewards, size_t n,
                                         size_t group_size, double* out, char* err, size_t err_len);

/* Optional (default: keep every group). Return 0 to drop a group of `n` rewards from the update
 * (DAPO dynamic sampling), any other value to keep it. Cannot fail: validate options elsewhere. */
RECODE_EXPORT int recode_algo_keep_group(const char* options_json, const double* rewards, size_t n);

/* Required. Return 1 if the loss needs RecodeLossBatch.ref_logp (a KL term), 0 if not,
 * negative if the options are invalid. */
RECODE_EXPORT int recode_algo_needs_reference(const char* options_json);

/* Required. The loss of one micro-batch and its gradient with respect to logp.
 *  out_loss:   this micro-batch's contribution to the mini-batch loss; normalise with
 *              norm_rows / norm_tokens so that micro-batch losses sum to the mini-batch loss.
 *  out_grad:   [rows * cols], d(out_loss)/d(logp); write 0 where mask is 0.
 *  metrics:    room for `metrics_cap` diagnostics (means over this micro-batch's unmasked
 *              tokens); set *out_n_metrics to the number written (0 is fine). */
RECODE_EXPORT int recode_algo_loss(const char* options_json, const RecodeLossBatch* batch, double* out_loss,
                                   float* out_grad, RecodeMetric* metrics, size_t metrics_cap,
                                   size_t* out_n_metrics, char* err, size_t err_len);

/* ---- Model plugins (kind RECODE_PLUGIN_KIND_MODEL) ------------------------------------- */

/* Required for model plugins, which are Rust dylibs sharing the host's burn and std: they are
 * only usable when built by the same compiler against the same crates. Return a NUL-terminated
 * static string "recode-core <ver>; <rustc --version>; burn <ver>"; the host compares it with its
 * own before touching any Rust symbol and refuses a mismatch. Plain C: safe to call first. */
RECODE_EXPORT const char* recode_model_plugin_abi_fingerprint(void);

/* After the fingerprint matches, the host resolves the Rust-ABI function
 *   recode_model_plugin_create(&ModelContext) -> anyhow::Result<Box<dyn Policy>>
 * (no C prototype: it exchanges Rust types). `recode_core::export_model_plugin!` exports all three
 * symbols (with recode_plugin_info); see examples/plugins/rust-model. */

#ifdef __cplusplus
}
#endif

#endif /* RECODE_PLUGIN_H */
