//! Fused CPU ops for the inference model (`NdArray<f32>`, no autodiff): attention with RoPE and
//! the KV cache, RMSNorm, SwiGLU. Each replaces a chain of 5-20 small burn ops whose per-op cost
//! (~20 us: allocation, dispatch) made up a fifth of a decode step. Same formulas, in the same
//! order, as the burn path in `model.rs`, which the training model (autodiff) and the GPU backends
//! keep using; both are checked against the numpy reference in the tests.

use crate::config::ModelConfig;
use crate::cpu::dot;
use crate::host::{from_host, host_vec};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

/// `x * (1 / sqrt(mean(x^2) + eps)) * w`, row by row.
pub fn rms_norm<B: Backend>(x: &Tensor<B, 2>, w: &Tensor<B, 1>, eps: f64) -> Option<Tensor<B, 2>> {
    let [rows, n] = x.dims();
    let (mut v, w) = (host_vec(x)?, host_vec(w)?);
    for row in v.chunks_exact_mut(n) {
        let var = row.iter().map(|a| a * a).sum::<f32>() / n as f32;
        let inv = 1.0 / (var + eps as f32).sqrt();
        for (a, g) in row.iter_mut().zip(&w) {
            *a = *a * inv * g;
        }
    }
    from_host(v, [rows, n])
}

/// `silu(gate) * up`.
pub fn swiglu<B: Backend>(gate: &Tensor<B, 2>, up: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let (mut g, u) = (host_vec(gate)?, host_vec(up)?);
    for (a, b) in g.iter_mut().zip(&u) {
        *a = *a / (1.0 + (-*a).exp()) * b;
    }
    from_host(g, gate.dims())
}

/// Keys and values of one layer on the host, `[batch, kv_heads, capacity, head_dim]`.
pub struct HostKv {
    k: Vec<f32>,
    v: Vec<f32>,
    kvh: usize,
    cap: usize,
    hd: usize,
}

impl HostKv {
    pub fn new(cfg: &ModelConfig, batch: usize, capacity: usize) -> Self {
        let len = batch * cfg.num_key_value_heads * capacity * cfg.head_dim;
        HostKv {
            k: vec![0.0; len],
            v: vec![0.0; len],
            kvh: cfg.num_key_value_heads,
            cap: capacity,
            hd: cfg.head_dim,
        }
    }
    fn at(&self, b: usize, h: usize, pos: usize) -> usize {
        ((b * self.kvh + h) * self.cap + pos) * self.hd
    }

    /// A cache whose row `i` is a copy of this cache's row `rows[i]`.
    pub fn gather_rows(&self, rows: &[usize]) -> HostKv {
        let slab = self.kvh * self.cap * self.hd;
        let pick = |src: &[f32]| {
            rows.iter()
                .flat_map(|&r| src[r * slab..(r + 1) * slab].iter().copied())
                .collect()
        };
        HostKv {
            k: pick(&self.k),
            v: pick(&self.v),
            kvh: self.kvh,
            cap: self.cap,
            hd: self.hd,
        }
    }
}

/// What attention needs from the step, on the host (see `model::Step`).
pub struct StepHost<'a> {
    pub batch: usize,
    pub t: usize,
    pub past: usize,
    /// `[b*t, head_dim/2]` RoPE tables.
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    /// `[b*t, past+t]` additive mask (0 or -1e9).
    pub mask: &'a [f32],
}

/// Rotate-half RoPE of one head vector in place: `[x1*c - x2*s, x2*c + x1*s]`.
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    for d in 0..half {
        let (x1, x2) = (x[d], x[d + half]);
        x[d] = x1 * cos[d] - x2 * sin[d];
        x[d + half] = x2 * cos[d] + x1 * sin[d];
    }
}

/// GQA attention of `t` new tokens per row after `past` cached ones. `q` `[b*t, nh*hd]`, `k` and
/// `v` `[b*t, kvh*hd]` (projections, biases added); RoPE is applied here, the new keys/values are
/// written into `cache` (or a scratch one when `None`, then `past` must be 0). Returns the heads'
/// outputs `[b*t, nh*hd]`, ready for `o_proj`.
pub fn attention<B: Backend>(
    q: &Tensor<B, 2>,
    k: &Tensor<B, 2>,
    v: &Tensor<B, 2>,
    cfg: &ModelConfig,
    st: &StepHost,
    cache: Option<&mut HostKv>,
) -> Option<Tensor<B, 2>> {
    let (b, t, past) = (st.batch, st.t, st.past);
    let (nh, kvh, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let (g, half, s) = (nh / kvh, hd / 2, past + t);
    let (mut q, mut k, v) = (host_vec(q)?, host_vec(k)?, host_vec(v)?);
    let mut scratch;
    let cache = match cache {
        Some(c) => c,
        None => {
            assert_eq!(past, 0, "attention without a cache starts at position 0");
            scratch = HostKv {
                k: vec![0.0; b * kvh * t * hd],
                v: vec![0.0; b * kvh * t * hd],
                kvh,
                cap: t,
                hd,
            };
            &mut scratch
        }
    };
    assert!(s <= cache.cap, "KV cache of {} positions is full", cache.cap);
    // RoPE on the new queries and keys; keys and values into the cache.
    for r in 0..b * t {
        let (cos, sin) = (&st.cos[r * half..(r + 1) * half], &st.sin[r * half..(r + 1) * half]);
        for h in 0..nh {
            rope(&mut q[(r * nh + h) * hd..(r * nh + h + 1) * hd], cos, sin);
        }
        let (bi, i) = (r / t, r % t);
        for h in 0..kvh {
            let src = (r * kvh + h) * hd..(r * kvh + h + 1) * hd;
            rope(&mut k[src.clone()], cos, sin);
            let at = cache.at(bi, h, past + i);
            cache.k[at..at + hd].copy_from_slice(&k[src.clone()]);
            cache.v[at..at + hd].copy_from_slice(&v[src]);
        }
    }
    // One task per (row, kv head): its g query heads x t positions, `[g, t, hd]`.
    let scale = 1.0 / (hd as f32).sqrt();
    let cache = &*cache;
    let mut groups = vec![0f32; b * kvh * g * t * hd];
    groups.par_chunks_mut(g * t * hd).enumerate().for_each(|(task, out)| {
        let (bi, kh) = (task / kvh, task % kvh);
        let keys = &cache.k[cache.at(bi, kh, 0)..cache.at(bi, kh, s)];
        let vals = &cache.v[cache.at(bi, kh, 0)..cache.at(bi, kh, s)];
        let mut p = vec![0f32; s];
        for gi in 0..g {
            let h = kh * g + gi;
            for i in 0..t {
                let r = bi * t + i;
                let qv = &q[(r * nh + h) * hd..(r * nh + h + 1) * hd];
                let mask = &st.mask[r * s..(r + 1) * s];
                // Keys masked out (future or padding) get exp(-1e9 - max) = 0 in f32: skip them.
                let mut max = f32::NEG_INFINITY;
                for j in 0..s {
                    p[j] = if mask[j] == 0.0 {
                        dot(qv, &keys[j * hd..(j + 1) * hd]) * scale + mask[j]
                    } else {
                        f32::NEG_INFINITY
                    };
                    max = max.max(p[j]);
                }
                let mut sum = 0f32;
                for pj in p.iter_mut() {
                    *pj = (*pj - max).exp();
                    sum += *pj;
                }
                let o = &mut out[(gi * t + i) * hd..(gi * t + i + 1) * hd];
                for (j, &pj) in p.iter().enumerate() {
                    if pj != 0.0 {
                        let w = pj / sum;
                        for (od, vd) in o.iter_mut().zip(&vals[j * hd..(j + 1) * hd]) {
                            *od += w * vd;
                        }
                    }
                }
            }
        }
    });
    // [b, kvh, g, t, hd] -> [b*t, nh*hd] (head h = kh*g + gi).
    let mut out = vec![0f32; b * t * nh * hd];
    for bi in 0..b {
        for kh in 0..kvh {
            for gi in 0..g {
                for i in 0..t {
                    let src = (((bi * kvh + kh) * g + gi) * t + i) * hd;
                    let dst = ((bi * t + i) * nh + kh * g + gi) * hd;
                    out[dst..dst + hd].copy_from_slice(&groups[src..src + hd]);
                }
            }
        }
    }
    from_host(out, [b * t, nh * hd])
}
