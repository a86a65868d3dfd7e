use super::ffi;
use super::loader::{first_non_finite, open, options_json, ErrBuf, Opened};
use crate::api::{Reward, RewardInput};
use crate::registry::PluginKind;
use crate::spec::Options;
use anyhow::{bail, Result};
use std::ffi::CString;
use std::path::Path;

/// A reward implemented by a C-ABI shared library.
pub struct CReward {
    plugin: Opened,
    options: CString,
    score_fn: ffi::RewardScoreFn,
}

/// Load a reward plugin and validate its options.
pub fn load_reward(path: &Path, options: &Options) -> Result<Box<dyn Reward>> {
    let plugin = open(path, Some(PluginKind::Reward))?;
    let score_fn = plugin.symbol::<ffi::RewardScoreFn>("recode_reward_score")?;
    let options = options_json(path, options)?;
    plugin.check_options(&options)?;
    Ok(Box::new(CReward {
        plugin,
        options,
        score_fn,
    }))
}

impl Reward for CReward {
    fn name(&self) -> &str {
        &self.plugin.info.name
    }

    fn score(&self, batch: &[RewardInput<'_>]) -> Result<Vec<f64>> {
        let items: Vec<ffi::RewardItem> = batch
            .iter()
            .map(|r| ffi::RewardItem {
                prompt: ffi::Str::new(r.prompt),
                completion: ffi::Str::new(r.completion),
                target: ffi::Str::new(r.target),
                completion_tokens: r.completion_tokens,
            })
            .collect();
        let mut out = vec![f64::NAN; batch.len()];
        let mut err = ErrBuf::new();
        // SAFETY: `items` and `out` hold `batch.len()` elements and outlive the call; the strings
        // borrowed by `items` live in `batch`.
        let rc = unsafe {
            (self.score_fn)(
                self.options.as_ptr(),
                items.len(),
                items.as_ptr(),
                out.as_mut_ptr(),
                err.ptr(),
                err.len(),
            )
        };
        let path = self.plugin.path.display();
        if rc != 0 {
            bail!("reward plugin {path}: {}", err.message(rc));
        }
        if let Some((i, v)) = first_non_finite(&out) {
            bail!(
                "reward plugin {path}: score {i} of {} is {v} (not written, or not a finite number)",
                out.len()
            );
        }
        Ok(out)
    }
}
