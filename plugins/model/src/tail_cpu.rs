//! RMSNorm, SwiGLU, RoPE and DoRA's output and norm of the training model on the CPU (`Autodiff<NdArray<f32>>`), as autodiff
//! ops with hand-written backwards. burn's chains for them (square, mean, sqrt, recip, three
//! products; sigmoid, two products) are 5-10 element-wise passes each way, every one on one core;
//! these are one pass per direction, rows spread over rayon's workers.
//!
//! Determinism: every output element is computed by one thread from its own row, in index order;
//! the one sum across rows (RMSNorm's weight gradient, only when the weight trains) adds partial
//! sums of fixed blocks of rows in block order. So the bits do not depend on the thread count.
//! Other backends, dtypes (f16/bf16 mixed precision, f64 gradient checks) and strided tensors
//! return `None`, and model.rs keeps burn's ops for them.

use crate::host::Cpu;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use rayon::prelude::*;
use std::any::Any;
use std::borrow::Cow;
use std::ops::Range;

type Ad = Autodiff<Cpu, NoCheckpointing>;

/// Rows per partial sum of a gradient summed over rows ([`block_sums`]): fixed, so the sum's
/// order is too.
const BLOCK_ROWS: usize = 64;

/// `n` column sums over `rows` rows: `block` sums one fixed block of rows (one thread each), and
/// the blocks' sums are added in block order, so the bits do not depend on the thread count.
fn block_sums(rows: usize, n: usize, block: impl Fn(Range<usize>) -> Vec<f32> + Sync) -> Vec<f32> {
    let partial: Vec<Vec<f32>> = (0..rows.div_ceil(BLOCK_ROWS))
        .into_par_iter()
        .map(|b| block(b * BLOCK_ROWS..((b + 1) * BLOCK_ROWS).min(rows)))
        .collect();
    let mut sum = vec![0f32; n];
    for p in &partial {
        sum.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    sum
}

/// `silu(gate) * up` on the training backend; `None` elsewhere.
pub fn swiglu<B: Backend>(gate: &Tensor<B, 2>, up: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let (g, u) = (as_ad(gate)?, as_ad(up)?);
    let dims = g.dims();
    if u.dims() != dims {
        return None;
    }
    let (g, u) = (g.into_primitive().tensor(), u.into_primitive().tensor());
    let (gs, us) = (values(&g.primitive)?, values(&u.primitive)?);
    let mut y = vec![0f32; gs.len()];
    let cols = dims[1].max(1);
    y.par_chunks_mut(cols).enumerate().for_each(|(r, out)| {
        let (gr, ur) = (&gs[r * cols..(r + 1) * cols], &us[r * cols..(r + 1) * cols]);
        for ((o, &a), &b) in out.iter_mut().zip(gr).zip(ur) {
            *o = a / (1.0 + (-a).exp()) * b;
        }
    });
    let state = || (g.primitive.clone(), u.primitive.clone(), cols);
    record(SwigluBackward, [&g, &u], state, tensor(y, dims.to_vec()))
}

#[derive(Debug)]
struct SwigluBackward;

impl Backward<Cpu, 2> for SwigluBackward {
    /// gate, up, columns.
    type State = (FloatTensor<Cpu>, FloatTensor<Cpu>, usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_g, node_u] = ops.parents;
        let (g, u, cols) = ops.state;
        let dy = grads.consume::<Cpu>(&ops.node);
        let shape = shape_of(&g);
        let (gs, us, dys) = (contiguous(&g), contiguous(&u), contiguous(&dy));
        // d/dg silu(g) = s (1 + g (1 - s)) with s = sigmoid(g).
        let (mut dg, mut du) = (vec![0f32; gs.len()], vec![0f32; gs.len()]);
        dg.par_chunks_mut(cols)
            .zip(du.par_chunks_mut(cols))
            .enumerate()
            .for_each(|(r, (dgr, dur))| {
                let at = r * cols..(r + 1) * cols;
                let (gr, ur, dyr) = (&gs[at.clone()], &us[at.clone()], &dys[at]);
                for i in 0..cols {
                    let (a, d) = (gr[i], dyr[i]);
                    let s = 1.0 / (1.0 + (-a).exp());
                    dgr[i] = d * ur[i] * (s * (1.0 + a * (1.0 - s)));
                    dur[i] = d * (a * s);
                }
            });
        if let Some(n) = node_g {
            grads.register::<Cpu>(n.id, tensor(dg, shape.clone()));
        }
        if let Some(n) = node_u {
            grads.register::<Cpu>(n.id, tensor(du, shape));
        }
    }
}

/// `x / sqrt(mean(x^2) + eps) * w` per row, on the training backend; `None` elsewhere.
pub fn rms_norm<B: Backend>(x: &Tensor<B, 2>, w: &Tensor<B, 1>, eps: f64) -> Option<Tensor<B, 2>> {
    let (x, w) = (as_ad(x)?, as_ad(w)?);
    let dims = x.dims();
    if w.dims()[0] != dims[1] || dims[1] == 0 {
        return None;
    }
    let (x, w) = (x.into_primitive().tensor(), w.into_primitive().tensor());
    let (xs, ws) = (values(&x.primitive)?, values(&w.primitive)?);
    let n = dims[1];
    let mut y = vec![0f32; xs.len()];
    let mut inv = vec![0f32; dims[0]];
    y.par_chunks_mut(n)
        .zip(inv.par_iter_mut())
        .enumerate()
        .for_each(|(r, (out, inv))| {
            let row = &xs[r * n..(r + 1) * n];
            let var = row.iter().map(|a| a * a).sum::<f32>() / n as f32;
            *inv = 1.0 / (var + eps as f32).sqrt();
            for ((o, &a), &g) in out.iter_mut().zip(row).zip(ws.iter()) {
                *o = a * *inv * g;
            }
        });
    let state = || (x.primitive.clone(), w.primitive.clone(), inv);
    record(RmsNormBackward, [&x, &w], state, tensor(y, dims.to_vec()))
}

#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Cpu, 2> for RmsNormBackward {
    /// x, w, and each row's 1 / sqrt(mean(x^2) + eps).
    type State = (FloatTensor<Cpu>, FloatTensor<Cpu>, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let (x, w, inv) = ops.state;
        let dy = grads.consume::<Cpu>(&ops.node);
        let shape = shape_of(&x);
        let (xs, ws, dys) = (contiguous(&x), contiguous(&w), contiguous(&dy));
        let n = ws.len();
        if let Some(node) = node_x {
            // y = x r w with r = (mean(x^2) + eps)^-1/2: dx = r (dy w) - x r^3 mean(dy w x).
            let mut dx = vec![0f32; xs.len()];
            dx.par_chunks_mut(n).enumerate().for_each(|(r, out)| {
                let (row, d) = (&xs[r * n..(r + 1) * n], &dys[r * n..(r + 1) * n]);
                let dot = (0..n).map(|i| d[i] * ws[i] * row[i]).sum::<f32>() / n as f32;
                let (k, c) = (inv[r], inv[r] * inv[r] * inv[r] * dot);
                for i in 0..n {
                    out[i] = k * (d[i] * ws[i]) - row[i] * c;
                }
            });
            grads.register::<Cpu>(node.id, tensor(dx, shape));
        }
        if let Some(node) = node_w {
            // dw = sum over rows of dy x r.
            let dw = block_sums(inv.len(), n, |block| {
                let mut acc = vec![0f32; n];
                for r in block {
                    let (row, d) = (&xs[r * n..(r + 1) * n], &dys[r * n..(r + 1) * n]);
                    for i in 0..n {
                        acc[i] += d[i] * row[i] * inv[r];
                    }
                }
                acc
            });
            grads.register::<Cpu>(node.id, tensor(dw, vec![n]));
        }
    }
}

/// Rotate-half RoPE of every head of `x` `[rows, heads * head_dim]` (the projection's output,
/// before the heads are split off), row `r` rotated by `cos`/`sin` `[rows, head_dim / 2]`; on the
/// training backend, else `None`. The same products and sums, in the same order, as model.rs's
/// `Step::rope`; its backward is the rotation by the negative angle.
pub fn rope<B: Backend>(x: &Tensor<B, 2>, cos: &[f32], sin: &[f32], head_dim: usize) -> Option<Tensor<B, 2>> {
    let x = as_ad(x)?;
    let [rows, width] = x.dims();
    let half = head_dim / 2;
    if head_dim == 0
        || !head_dim.is_multiple_of(2)
        || !width.is_multiple_of(head_dim)
        || cos.len() != rows * half
        || sin.len() != cos.len()
    {
        return None;
    }
    let x = x.into_primitive().tensor();
    let xs = values(&x.primitive)?;
    let y = rotate(xs, cos, sin, width, half, 1.0);
    let state = || (cos.to_vec(), sin.to_vec(), width, half);
    record(RopeBackward, [&x], state, tensor(y, vec![rows, width]))
}

/// `[x1 c - x2 s', x2 c + x1 s']` per head with `s' = sign * s` (sign -1: the inverse rotation).
fn rotate(xs: &[f32], cos: &[f32], sin: &[f32], width: usize, half: usize, sign: f32) -> Vec<f32> {
    let mut y = vec![0f32; xs.len()];
    y.par_chunks_mut(width).enumerate().for_each(|(r, out)| {
        let (row, c, s) = (
            &xs[r * width..(r + 1) * width],
            &cos[r * half..(r + 1) * half],
            &sin[r * half..(r + 1) * half],
        );
        for (o, x) in out.chunks_exact_mut(2 * half).zip(row.chunks_exact(2 * half)) {
            for d in 0..half {
                let (x1, x2, s) = (x[d], x[d + half], sign * s[d]);
                o[d] = x1 * c[d] - x2 * s;
                o[d + half] = x2 * c[d] + x1 * s;
            }
        }
    });
    y
}

#[derive(Debug)]
struct RopeBackward;

impl Backward<Cpu, 1> for RopeBackward {
    /// cos, sin, row width, half the head dimension.
    type State = (Vec<f32>, Vec<f32>, usize, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let (cos, sin, width, half) = ops.state;
        let dy = grads.consume::<Cpu>(&ops.node);
        let shape = shape_of(&dy);
        if let Some(node) = node {
            // The rotation's transpose: dx1 = dy1 c + dy2 s, dx2 = dy2 c - dy1 s.
            let dx = rotate(&contiguous(&dy), &cos, &sin, width, half, -1.0);
            grads.register::<Cpu>(node.id, tensor(dx, shape));
        }
    }
}

/// DoRA's output without dropout, `base + base * (scale - 1) + lora * scale * s` (model.rs's
/// `Linear::finish` in the same order), from `base = x W` and `lora = x A B` `[rows, out]` and
/// `scale = m / ||W'||` `[1, out]`; on the training backend, else `None`.
pub fn dora_combine<B: Backend>(
    base: &Tensor<B, 2>,
    lora: &Tensor<B, 2>,
    scale: &Tensor<B, 2>,
    s: f64,
) -> Option<Tensor<B, 2>> {
    let (base, lora, scale) = (as_ad(base)?, as_ad(lora)?, as_ad(scale)?);
    let dims = base.dims();
    if lora.dims() != dims || scale.dims() != [1, dims[1]] || dims[1] == 0 {
        return None;
    }
    let (base, lora, scale) = (
        base.into_primitive().tensor(),
        lora.into_primitive().tensor(),
        scale.into_primitive().tensor(),
    );
    let (bs, ls, ss) = (
        values(&base.primitive)?,
        values(&lora.primitive)?,
        values(&scale.primitive)?,
    );
    let (n, s) = (dims[1], s as f32);
    let mut y = vec![0f32; bs.len()];
    y.par_chunks_mut(n).enumerate().for_each(|(r, out)| {
        let (b, l) = (&bs[r * n..(r + 1) * n], &ls[r * n..(r + 1) * n]);
        for j in 0..n {
            out[j] = (b[j] + b[j] * (ss[j] - 1.0)) + l[j] * ss[j] * s;
        }
    });
    let state = || (base.primitive.clone(), lora.primitive.clone(), ss.to_vec(), s);
    record(DoraBackward, [&base, &lora, &scale], state, tensor(y, dims.to_vec()))
}

#[derive(Debug)]
struct DoraBackward;

impl Backward<Cpu, 3> for DoraBackward {
    /// base, lora, scale, s.
    type State = (FloatTensor<Cpu>, FloatTensor<Cpu>, Vec<f32>, f32);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_base, node_lora, node_scale] = ops.parents;
        let (base, lora, ss, s) = ops.state;
        let dy = grads.consume::<Cpu>(&ops.node);
        let shape = shape_of(&base);
        let (bs, ls, dys) = (contiguous(&base), contiguous(&lora), contiguous(&dy));
        let n = ss.len();
        let per_row = |f: &(dyn Fn(usize, &[f32], &mut [f32]) + Sync)| {
            let mut out = vec![0f32; bs.len()];
            out.par_chunks_mut(n)
                .enumerate()
                .for_each(|(r, o)| f(r, &dys[r * n..(r + 1) * n], o));
            tensor(out, shape.clone())
        };
        if let Some(node) = node_base {
            // base reaches the output twice: dy + dy (scale - 1).
            let g = per_row(&|_, d, o| (0..n).for_each(|j| o[j] = d[j] + d[j] * (ss[j] - 1.0)));
            grads.register::<Cpu>(node.id, g);
        }
        if let Some(node) = node_lora {
            let g = per_row(&|_, d, o| (0..n).for_each(|j| o[j] = d[j] * s * ss[j]));
            grads.register::<Cpu>(node.id, g);
        }
        if let Some(node) = node_scale {
            // d scale = sum over rows of dy base + dy s lora.
            let g = block_sums(bs.len() / n, n, |block| {
                let (mut from_base, mut from_lora) = (vec![0f32; n], vec![0f32; n]);
                for r in block {
                    let at = r * n;
                    for j in 0..n {
                        from_base[j] += dys[at + j] * bs[at + j];
                        from_lora[j] += dys[at + j] * s * ls[at + j];
                    }
                }
                from_base.iter().zip(&from_lora).map(|(a, b)| a + b).collect()
            });
            grads.register::<Cpu>(node.id, tensor(g, vec![1, n]));
        }
    }
}

/// DoRA's column norms `||W + s A B||` over the input dimension, `[1, out]`, detached: one pass
/// over the weight, columns summed in row order, on the training backend (else `None`).
pub fn dora_norm<B: Backend>(w: &Tensor<B, 2>, delta: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let (w, delta) = (as_ad(w)?.inner(), as_ad(delta)?.inner());
    let [rows, n] = w.dims();
    if delta.dims() != [rows, n] {
        return None;
    }
    let (w, delta) = (w.into_primitive().tensor(), delta.into_primitive().tensor());
    let (ws, ds) = (values(&w)?, values(&delta)?);
    // Columns split into fixed chunks over threads; each column summed by one thread in row order.
    const COLS: usize = 64;
    let mut norm = vec![0f32; n];
    norm.par_chunks_mut(COLS).enumerate().for_each(|(c, out)| {
        let j0 = c * COLS;
        for i in 0..rows {
            let (wr, dr) = (
                &ws[i * n + j0..i * n + j0 + out.len()],
                &ds[i * n + j0..i * n + j0 + out.len()],
            );
            for ((o, &a), &b) in out.iter_mut().zip(wr).zip(dr) {
                let v = a + b;
                *o += v * v;
            }
        }
        out.iter_mut().for_each(|o| *o = o.sqrt());
    });
    let t = Tensor::<Cpu, 2>::from_primitive(TensorPrimitive::Float(tensor(norm, vec![1, n])));
    back(Tensor::<Ad, 2>::from_inner(t))
}

/// The op's output `y` as a node of the graph with `parents`; `state` (what its backward keeps) is
/// made only when a parent is tracked.
fn record<B: Backend, O: Backward<Cpu, N>, const N: usize>(
    op: O,
    parents: [&FloatTensor<Ad>; N],
    state: impl FnOnce() -> O::State,
    y: FloatTensor<Cpu>,
) -> Option<Tensor<B, 2>> {
    let out = match op
        .prepare::<NoCheckpointing>(parents.map(|p| p.node.clone()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state(), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    back(Tensor::<Ad, 2>::from_primitive(TensorPrimitive::Float(out)))
}

/// `t` as a tensor of the CPU training backend, when it is one.
fn as_ad<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<Tensor<Ad, D>> {
    (t as &dyn Any).downcast_ref::<Tensor<Ad, D>>().cloned()
}

fn back<B: Backend>(t: Tensor<Ad, 2>) -> Option<Tensor<B, 2>> {
    let boxed: Box<dyn Any> = Box::new(t);
    boxed.downcast::<Tensor<B, 2>>().ok().map(|b| *b)
}

/// The values of a contiguous f32 primitive, in place; `None` otherwise (burn's ops take it).
fn values(p: &FloatTensor<Cpu>) -> Option<&[f32]> {
    match p {
        NdArrayTensor::F32(s) => s.view().to_slice(),
        _ => None,
    }
}

/// Row-major values of an f32 primitive (a copy only when it is strided, as a gradient may be).
fn contiguous(p: &FloatTensor<Cpu>) -> Cow<'_, [f32]> {
    match p {
        NdArrayTensor::F32(s) => match s.view().to_slice() {
            Some(v) => Cow::Borrowed(v),
            None => Cow::Owned(s.view().iter().copied().collect()),
        },
        _ => panic!("tail_cpu: the saved tensor is no longer f32"),
    }
}

fn shape_of(p: &FloatTensor<Cpu>) -> Vec<usize> {
    match p {
        NdArrayTensor::F32(s) => s.view().shape().to_vec(),
        _ => panic!("tail_cpu: the saved tensor is no longer f32"),
    }
}

fn tensor(v: Vec<f32>, shape: Vec<usize>) -> FloatTensor<Cpu> {
    NdArrayTensor::from_data(TensorData::new(v, shape))
}
