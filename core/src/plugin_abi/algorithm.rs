use super::ffi;
use super::loader::{first_non_finite, open, options_json, ErrBuf, Opened};
use crate::algo::validate_batch;
use crate::api::{Algorithm, LossBatch, LossOutput};
use crate::registry::PluginKind;
use crate::spec::Options;
use anyhow::{bail, ensure, Result};
use std::ffi::{CStr, CString};
use std::path::Path;

/// Metrics a plugin may return per loss call.
const METRICS_CAP: usize = 16;

/// An algorithm implemented by a C-ABI shared library.
pub struct CAlgorithm {
    plugin: Opened,
    options: CString,
    advantages_fn: ffi::AdvantagesFn,
    keep_group_fn: Option<ffi::KeepGroupFn>,
    loss_fn: ffi::LossFn,
    needs_reference: bool,
}

/// Load an algorithm plugin, validate its options and ask whether it needs reference log-probs.
pub fn load_algorithm(path: &Path, options: &Options) -> Result<Box<dyn Algorithm>> {
    let plugin = open(path, Some(PluginKind::Algorithm))?;
    let advantages_fn = plugin.symbol::<ffi::AdvantagesFn>("recode_algo_advantages")?;
    let needs_ref_fn = plugin.symbol::<ffi::NeedsReferenceFn>("recode_algo_needs_reference")?;
    let loss_fn = plugin.symbol::<ffi::LossFn>("recode_algo_loss")?;
    let keep_group_fn = plugin.optional::<ffi::KeepGroupFn>("recode_algo_keep_group")?;
    let options = options_json(path, options)?;
    plugin.check_options(&options)?;
    // SAFETY: NUL-terminated options string.
    let needs_reference = match unsafe { needs_ref_fn(options.as_ptr()) } {
        0 => false,
        1 => true,
        rc => bail!(
            "{}: recode_algo_needs_reference returned {rc} (expected 0 or 1; options invalid?)",
            path.display()
        ),
    };
    Ok(Box::new(CAlgorithm {
        plugin,
        options,
        advantages_fn,
        keep_group_fn,
        loss_fn,
        needs_reference,
    }))
}

impl CAlgorithm {
    fn fail(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!("algorithm plugin {}: {what}", self.plugin.path.display())
    }
}

impl Algorithm for CAlgorithm {
    fn name(&self) -> &str {
        &self.plugin.info.name
    }

    fn advantages(&self, rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
        ensure!(
            group_size > 0 && rewards.len().is_multiple_of(group_size),
            "{} rewards do not split into groups of {group_size}",
            rewards.len()
        );
        let mut out = vec![f64::NAN; rewards.len()];
        let mut err = ErrBuf::new();
        // SAFETY: `rewards` and `out` hold n elements each and outlive the call.
        let rc = unsafe {
            (self.advantages_fn)(
                self.options.as_ptr(),
                rewards.as_ptr(),
                rewards.len(),
                group_size,
                out.as_mut_ptr(),
                err.ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            return Err(self.fail(&err.message(rc)));
        }
        if let Some((i, v)) = first_non_finite(&out) {
            return Err(self.fail(&format!(
                "advantage {i} of {} is {v} (not written, or not finite)",
                out.len()
            )));
        }
        Ok(out)
    }

    fn keep_group(&self, group_rewards: &[f64]) -> bool {
        match self.keep_group_fn {
            // SAFETY: the slice outlives the call. The header: 0 drops, anything else keeps.
            Some(f) => (unsafe { f(self.options.as_ptr(), group_rewards.as_ptr(), group_rewards.len()) }) != 0,
            None => true,
        }
    }

    fn needs_reference(&self) -> bool {
        self.needs_reference
    }

    fn loss(&self, b: &LossBatch<'_>) -> Result<LossOutput> {
        // Shapes are checked here: the plugin trusts rows × cols.
        validate_batch(b, self.needs_reference)?;
        let n = b.rows * b.cols;
        let ref_logp = match (self.needs_reference, b.ref_logp) {
            (true, Some(r)) => r.as_ptr(),
            _ => std::ptr::null(),
        };
        let cb = ffi::LossBatch {
            rows: b.rows,
            cols: b.cols,
            logp: b.logp.as_ptr(),
            old_logp: b.old_logp.as_ptr(),
            ref_logp,
            advantages: b.advantages.as_ptr(),
            mask: b.mask.as_ptr(),
            norm_rows: b.norm_rows,
            norm_tokens: b.norm_tokens,
        };
        let mut loss = f64::NAN;
        let mut grad = vec![f32::NAN; n];
        let mut metrics = [ffi::Metric {
            name: [0; ffi::METRIC_NAME_LEN],
            value: 0.0,
        }; METRICS_CAP];
        let mut n_metrics = 0usize;
        let mut err = ErrBuf::new();
        // SAFETY: every array has the length stated in `cb` (validated above) and outlives the call.
        let rc = unsafe {
            (self.loss_fn)(
                self.options.as_ptr(),
                &cb,
                &mut loss,
                grad.as_mut_ptr(),
                metrics.as_mut_ptr(),
                METRICS_CAP,
                &mut n_metrics,
                err.ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            return Err(self.fail(&err.message(rc)));
        }
        if !loss.is_finite() {
            return Err(self.fail(&format!("loss is {loss} (not written, or not finite)")));
        }
        if let Some((i, v)) = first_non_finite(&grad) {
            return Err(self.fail(&format!("gradient {i} of {n} is {v} (not written, or not finite)")));
        }
        if let Some(i) = (0..n).find(|&i| b.mask[i] == 0.0 && grad[i] != 0.0) {
            return Err(self.fail(&format!("gradient {i} is {} at a masked token (expected 0)", grad[i])));
        }
        if n_metrics > METRICS_CAP {
            return Err(self.fail(&format!(
                "reported {n_metrics} metrics, room was given for {METRICS_CAP}"
            )));
        }
        let mut out_metrics = Vec::with_capacity(n_metrics);
        for m in &metrics[..n_metrics] {
            let bytes: Vec<u8> = m.name.iter().map(|&c| c as u8).collect();
            let name = CStr::from_bytes_until_nul(&bytes)
                .map_err(|_| self.fail("a metric name is not NUL-terminated"))?
                .to_string_lossy()
                .into_owned();
            if !m.value.is_finite() {
                return Err(self.fail(&format!("metric `{name}` is {}", m.value)));
            }
            out_metrics.push((name, m.value));
        }
        Ok(LossOutput {
            loss,
            grad,
            metrics: out_metrics,
        })
    }
}
