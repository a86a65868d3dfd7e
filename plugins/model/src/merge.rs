//! Adapters merged into their weights, for inference. LoRA computes `x W + s·(x A) B` and DoRA
//! rescales that per output feature by `m / ||W + s·AB||`; at rollout time the adapters do not
//! change, so one matrix `W' = (W + s·AB) · m / ||W + s·AB||` computes the same function with no
//! per-token adapter work (and DoRA's norm is taken once per rollout, not once per decode step).
//! Results equal the unmerged path up to float rounding (tests/model.rs bounds the difference).

use crate::model::{Linear, Transformer};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

impl<B: Backend> Linear<B> {
    /// The adapted weight `[in, out]` as one matrix; `None` without an adapter.
    pub fn merged_weight(&self) -> Option<Tensor<B, 2>> {
        let (a, b) = (self.lora_a.as_ref()?, self.lora_b.as_ref()?);
        // Merged in the masters' dtype (f32), stored in the frozen weight's (compute) dtype.
        let (compute, master) = (self.weight.val().dtype(), b.val().dtype());
        let w = self.weight.val().cast(master) + crate::gemm_cpu::matmul(a.val(), b.val()) * self.scaling;
        let w = match &self.magnitude {
            None => w,
            // The same norm as the unmerged DoRA path: over the input dim, per output feature.
            Some(m) => {
                let norm = w.clone().powi_scalar(2).sum_dim(0).sqrt();
                w * (m.val().unsqueeze::<2>() / norm)
            }
        };
        Some(w.cast(compute))
    }

    fn merge_adapter(&mut self) {
        if let Some(w) = self.merged_weight() {
            // Detached: on an autodiff model the merged weight would otherwise be a graph node.
            self.weight = Param::from_tensor(w.detach());
            (self.lora_a, self.lora_b, self.magnitude) = (None, None, None);
        }
    }
}

impl<B: Backend> Transformer<B> {
    /// A copy whose adapted projections carry their adapters merged in (no adapters left). Only
    /// the merged weights are new memory; every other tensor is shared with `self`.
    pub fn with_adapters_merged(&self) -> Transformer<B> {
        let mut m = self.clone();
        for (_, _, lin) in m.linears_mut() {
            lin.merge_adapter();
        }
        if let Some(h) = m.lm_head.as_mut() {
            h.merge_adapter();
        }
        m
    }
}
