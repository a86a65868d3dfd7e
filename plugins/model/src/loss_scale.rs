//! Dynamic loss scaling for f16 training (bf16 has f32's exponent range and needs none). The
//! loss gradient is multiplied by `scale` before backward, so small activation gradients do not
//! flush to zero in f16; the global-norm clip divides it out again. A step whose gradients
//! overflowed (a non-finite norm) is skipped and the scale halved; after `GROWTH_INTERVAL` good
//! steps in a row it doubles. torch's GradScaler grows every 2000 steps; RL runs have hundreds.

use serde::{Deserialize, Serialize};

pub const INITIAL_SCALE: f64 = 65536.0;
pub const GROWTH_INTERVAL: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    /// Applied steps since the last change of scale.
    pub good: usize,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: INITIAL_SCALE,
            good: 0,
        }
    }
}

impl LossScaler {
    /// After an overflow: halve (not below 1) and start counting again.
    pub fn backoff(&mut self) {
        self.scale = (self.scale / 2.0).max(1.0);
        self.good = 0;
    }
    /// After an applied step.
    pub fn grow(&mut self) {
        self.good += 1;
        if self.good >= GROWTH_INTERVAL {
            self.scale *= 2.0;
            self.good = 0;
        }
    }
}
