//! Global-norm gradient clipping, which burn lacks (its clipping is per parameter tensor). Shared
//! by the built-in model and model plugins, which all link this library.

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

fn sq_norm<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, 1> {
    t.powi_scalar(2).sum()
}

/// The global L2 norm of the gradients of `params` (`(id, rank)`, rank 1 or 2; `B` is the backend
/// the gradients live on, the inner one of an autodiff backend). With a positive `max` and a finite
/// norm, scales them as torch's `clip_grad_norm_` (TRL's `max_grad_norm`): by `max / (norm + 1e-6)`
/// when that is below 1. Returns the norm before clipping.
pub fn clip<B: Backend>(grads: &mut GradientsParams, params: &[(ParamId, usize)], max: Option<f64>) -> f64 {
    clip_scaled::<B>(grads, params, max, 1.0)
}

/// [`clip`] for gradients of a loss multiplied by `1 / inv_scale` (f16 loss scaling): the norm
/// returned and compared with `max` is the true one, and the gradients leave unscaled (and
/// clipped) in one pass. A non-finite norm (an overflow) leaves them untouched.
pub fn clip_scaled<B: Backend>(
    grads: &mut GradientsParams,
    params: &[(ParamId, usize)],
    max: Option<f64>,
    inv_scale: f64,
) -> f64 {
    // Each parameter's sum of squares stays on the device; one read of their total (a GPU syncs
    // once per optimiser step, not once per parameter). Summed in parameter order.
    let parts: Vec<Tensor<B, 1>> = params
        .iter()
        .filter_map(|&(id, rank)| match rank {
            1 => grads.get::<B, 1>(id).map(sq_norm),
            _ => grads.get::<B, 2>(id).map(sq_norm),
        })
        .collect();
    let total = if parts.is_empty() {
        0.0
    } else {
        Tensor::cat(parts, 0)
            .sum()
            .into_data()
            .iter::<f64>()
            .next()
            .unwrap_or(f64::NAN)
    };
    let norm = total.sqrt() * inv_scale;
    if !norm.is_finite() {
        return norm;
    }
    let clip = match max {
        Some(max) if max > 0.0 => (max / (norm + 1e-6)).min(1.0),
        _ => 1.0,
    };
    let coef = clip * inv_scale;
    if coef != 1.0 {
        for &(id, rank) in params {
            match rank {
                1 => {
                    if let Some(t) = grads.remove::<B, 1>(id) {
                        grads.register(id, t * coef);
                    }
                }
                _ => {
                    if let Some(t) = grads.remove::<B, 2>(id) {
                        grads.register(id, t * coef);
                    }
                }
            }
        }
    }
    norm
}
