//! Blockwise attention for training (FlashAttention-2's algorithm written with burn tensor ops, so
//! it runs on every backend): the forward keeps only the output and each row's log-sum-exp, and
//! the backward recomputes the probabilities a block of queries at a time. Nothing of size
//! [t, s] outlives a block, so the memory kept for backward grows linearly with the length,
//! where the plain path keeps the [b, heads, t, s] probabilities of every layer.
//!
//! Semantics are the plain path's (`Attention::forward` in model.rs): query i (after `past`
//! cached keys) sees key j when j <= past + i and the key is real or is the query's own; hidden
//! keys get an additive -1e9 (finite, so a block that is all hidden rescales away instead of
//! giving NaN). GQA keeps the plain path's layout: the g query heads of one kv head are stacked
//! along the row axis, so K and V are never copied. Design notes: docs/design/blockwise-attention.md.

use crate::gemm_cpu::matmul;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Int, Tensor, TensorPrimitive};
use std::any::Any;
use std::ops::Range;

/// Which attention the training forward uses (`[model.options] attention`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionMode {
    /// The default. Blockwise when a layer's score matrix has at least `AUTO_MIN_SCORES` entries
    /// per head and sequence (where it starts to matter for memory), plain below. Measured on idle
    /// CPU cores (0.5B, 576 tokens): blockwise no slower than plain (30.9 s against 32.4 s) and
    /// 1.3 GB lighter; below the threshold the plain path's one matmul pair is kept.
    #[default]
    Auto,
    /// Keeps the [b, heads, t, s] probabilities for backward (the runs in docs/results.md used it).
    Plain,
    Blockwise,
}

/// t * s at which `Auto` switches to blockwise: 512 x 512 scores per head and row.
pub const AUTO_MIN_SCORES: usize = 512 * 512;

/// Bytes one block's transient scores may take (scores, probabilities and their gradient are
/// alive together in backward). Depends only on shapes, so CPU runs stay bit-reproducible.
const BLOCK_BUDGET_BYTES: usize = 64 << 20;

impl AttentionMode {
    pub fn blockwise_for(self, t: usize, s: usize) -> bool {
        match self {
            Self::Auto => t * s >= AUTO_MIN_SCORES,
            Self::Plain => false,
            Self::Blockwise => true,
        }
    }
}

/// Shapes and sizes of one call.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Keys before the first query (the shared prompt when scoring completions).
    pub past: usize,
    /// Query heads per kv head.
    pub groups: usize,
    /// Queries per block.
    pub bq: usize,
    /// Keys per block (the whole visible range by default: then each block's softmax is exact).
    pub bk: usize,
    /// 1 / sqrt(head_dim).
    pub scale: f64,
}

impl Spec {
    /// Blocks from the shapes: all keys at once, and as many queries as fit the budget.
    pub fn for_shapes(b: usize, nh: usize, t: usize, s: usize, hd: usize, past: usize, groups: usize) -> Self {
        let per_query = 3 * 4 * b * nh * s.max(1);
        let bq = (BLOCK_BUDGET_BYTES / per_query).max(16).min(t.max(1));
        Spec {
            past,
            groups,
            bq,
            bk: s.max(1),
            scale: 1.0 / (hd as f64).sqrt(),
        }
    }
}

/// Additive bias of queries `i` (after `past` keys) against keys `j`, [b, 1, 1, queries, keys]:
/// 0 where visible, -1e9 where hidden. Built on the device from two ranges and the per-key flags
/// (also the plain path's mask, so both mask exactly alike).
pub fn bias<B: Backend>(key_ok: &Tensor<B, 2>, past: usize, i: Range<usize>, j: Range<usize>) -> Tensor<B, 5> {
    let (dev, b) = (key_ok.device(), key_ok.dims()[0]);
    let shape = [b, 1, 1, i.len(), j.len()];
    // Integer positions and 0/1 integer flags: exact at any length, also under f16 (whose
    // integers stop being exact above 2048, and whose 1e9 is inf).
    let qi = Tensor::<B, 1, Int>::arange((past + i.start) as i64..(past + i.end) as i64, &dev)
        .reshape([1, 1, 1, i.len(), 1])
        .expand(shape);
    let kj = Tensor::<B, 1, Int>::arange(j.start as i64..j.end as i64, &dev)
        .reshape([1, 1, 1, 1, j.len()])
        .expand(shape);
    let causal = kj.clone().lower_equal(qi.clone()).int();
    let own = kj.equal(qi).int();
    let ok = key_ok
        .clone()
        .slice([0..b, j.clone()])
        .greater_elem(0.5)
        .int()
        .reshape([b, 1, 1, 1, j.len()])
        .expand(shape);
    let hidden = (causal * (ok + own).clamp_max(1)).equal_elem(0);
    Tensor::<B, 5>::zeros(shape, &dev).mask_fill(hidden, -1e9)
}

/// Scores of a stacked, pre-scaled query block [b, kvh, g*nq, hd] against keys [b, kvh, nk, hd].
fn scores<B: Backend>(qb: &Tensor<B, 4>, kb: Tensor<B, 4>, bias: Tensor<B, 5>, g: usize) -> Tensor<B, 4> {
    let ([b, kvh, r, _], nk) = (qb.dims(), kb.dims()[2]);
    let s = matmul(qb.clone(), kb.swap_dims(2, 3)).reshape([b, kvh, g, r / g, nk]);
    let bias = bias.cast(s.dtype());
    (s + bias.expand([b, kvh, g, r / g, nk])).reshape([b, kvh, r, nk])
}

/// Keys visible to some query of block `i0..i1`: everything up to the block's last query.
fn key_end(sp: &Spec, i1: usize, s: usize) -> usize {
    (sp.past + i1).min(s)
}

/// Forward on any backend: the output [b, nh, t, hd] and each row's log-sum-exp [b, nh, t, 1].
/// `q` [b, nh, t, hd], `k`/`v` [b, kvh, s, hd], `key_ok` [b, s] (1 real key, 0 padding).
pub fn forward<B: Backend>(
    q: Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    key_ok: &Tensor<B, 2>,
    sp: &Spec,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let ([b, nh, t, hd], [_, kvh, s, _], g) = (q.dims(), k.dims(), sp.groups);
    let q5 = (q * sp.scale).reshape([b, kvh, g, t, hd]);
    let (mut outs, mut lses) = (Vec::new(), Vec::new());
    for i0 in (0..t).step_by(sp.bq) {
        let i1 = (i0 + sp.bq).min(t);
        let (nq, kend) = (i1 - i0, key_end(sp, i1, s));
        let qb = q5
            .clone()
            .slice([0..b, 0..kvh, 0..g, i0..i1, 0..hd])
            .reshape([b, kvh, g * nq, hd]);
        // Running max, running sum and unnormalised output (the online softmax).
        let opts = (&qb.device(), qb.dtype());
        let mut m = Tensor::<B, 4>::full([b, kvh, g * nq, 1], -1e30, opts);
        let mut l = Tensor::<B, 4>::zeros([b, kvh, g * nq, 1], opts);
        let mut acc = Tensor::<B, 4>::zeros([b, kvh, g * nq, hd], opts);
        for j0 in (0..kend).step_by(sp.bk) {
            let j1 = (j0 + sp.bk).min(kend);
            let kb = k.clone().slice([0..b, 0..kvh, j0..j1, 0..hd]);
            let sc = scores(&qb, kb, bias(key_ok, sp.past, i0..i1, j0..j1), g);
            let m2 = m.clone().max_pair(sc.clone().max_dim(3));
            let p = (sc - m2.clone()).exp();
            let alpha = (m - m2.clone()).exp();
            l = l * alpha.clone() + p.clone().sum_dim(3);
            acc = acc * alpha + matmul(p, v.clone().slice([0..b, 0..kvh, j0..j1, 0..hd]));
            m = m2;
        }
        outs.push((acc / l.clone()).reshape([b, kvh, g, nq, hd]));
        lses.push((m + l.log()).reshape([b, kvh, g, nq, 1]));
    }
    (
        Tensor::cat(outs, 3).reshape([b, nh, t, hd]),
        Tensor::cat(lses, 3).reshape([b, nh, t, 1]),
    )
}

#[derive(Debug)]
struct BlockwiseBackward;

/// What backward needs: the inputs, the output and the row log-sum-exp, all linear in length.
#[derive(Clone, Debug)]
struct Saved<B: Backend> {
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    o: Tensor<B, 4>,
    lse: Tensor<B, 4>,
    key_ok: Tensor<B, 2>,
    sp: Spec,
}

fn wrap<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

impl<B: Backend> Backward<B, 3> for BlockwiseBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Saved<B>, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let Saved {
            q,
            k,
            v,
            o,
            lse,
            key_ok,
            sp,
        } = ops.state;
        let d_o: Tensor<B, 4> = wrap(grads.consume::<B>(&ops.node));
        let ([b, nh, t, hd], [_, kvh, s, _], g) = (q.dims(), k.dims(), sp.groups);
        let q5 = (q * sp.scale).reshape([b, kvh, g, t, hd]);
        // D = rowsum(dO * O): the softmax backward's per-row term.
        let dsum5 = (d_o.clone() * o).sum_dim(3).reshape([b, kvh, g, t, 1]);
        let do5 = d_o.reshape([b, kvh, g, t, hd]);
        let lse5 = lse.reshape([b, kvh, g, t, 1]);
        let (mut dk, mut dv, mut dqs) = (k.zeros_like(), v.zeros_like(), Vec::new());
        for i0 in (0..t).step_by(sp.bq) {
            let i1 = (i0 + sp.bq).min(t);
            let (nq, kend) = (i1 - i0, key_end(&sp, i1, s));
            let block = |x: &Tensor<B, 5>, d: usize| {
                x.clone()
                    .slice([0..b, 0..kvh, 0..g, i0..i1, 0..d])
                    .reshape([b, kvh, g * nq, d])
            };
            let (qb, dob, lb, db) = (block(&q5, hd), block(&do5, hd), block(&lse5, 1), block(&dsum5, 1));
            let mut dqb = qb.zeros_like();
            for j0 in (0..kend).step_by(sp.bk) {
                let j1 = (j0 + sp.bk).min(kend);
                let kb = k.clone().slice([0..b, 0..kvh, j0..j1, 0..hd]);
                let vb = v.clone().slice([0..b, 0..kvh, j0..j1, 0..hd]);
                let p = (scores(&qb, kb.clone(), bias(&key_ok, sp.past, i0..i1, j0..j1), g) - lb.clone()).exp();
                // dS = P * (dO V^T - D), the gradient of the scaled scores.
                let ds = p.clone() * (matmul(dob.clone(), vb.swap_dims(2, 3)) - db.clone());
                dqb = dqb + matmul(ds.clone(), kb);
                let rows = [0..b, 0..kvh, j0..j1, 0..hd];
                if node_v.is_some() {
                    let cur = dv.clone().slice(rows.clone());
                    dv = dv.slice_assign(rows.clone(), cur + matmul(p.swap_dims(2, 3), dob.clone()));
                }
                if node_k.is_some() {
                    let cur = dk.clone().slice(rows.clone());
                    dk = dk.slice_assign(rows, cur + matmul(ds.swap_dims(2, 3), qb.clone()));
                }
            }
            dqs.push((dqb * sp.scale).reshape([b, kvh, g, nq, hd]));
        }
        if let Some(n) = node_q {
            grads.register::<B>(
                n.id,
                Tensor::cat(dqs, 3).reshape([b, nh, t, hd]).into_primitive().tensor(),
            );
        }
        if let Some(n) = node_k {
            grads.register::<B>(n.id, dk.into_primitive().tensor());
        }
        if let Some(n) = node_v {
            grads.register::<B>(n.id, dv.into_primitive().tensor());
        }
    }
}

/// Differentiable blockwise attention on `Autodiff<B, C>`; keeps q, k, v, the output and the row
/// log-sum-exp for backward. Shapes as [`forward`]; `key_ok` is not differentiated.
pub fn attention<B: Backend, C: CheckpointStrategy>(
    q: Tensor<Autodiff<B, C>, 4>,
    k: Tensor<Autodiff<B, C>, 4>,
    v: Tensor<Autodiff<B, C>, 4>,
    key_ok: Tensor<Autodiff<B, C>, 2>,
    sp: Spec,
) -> Tensor<Autodiff<B, C>, 4> {
    let key_ok = key_ok.inner();
    let (q, k, v) = (
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
    );
    let (qi, ki, vi): (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) = (
        wrap(q.primitive.clone()),
        wrap(k.primitive.clone()),
        wrap(v.primitive.clone()),
    );
    let out = match BlockwiseBackward
        .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (o, lse) = forward(qi.clone(), &ki, &vi, &key_ok, &sp);
            let prim = o.clone().into_primitive().tensor();
            prep.finish(
                Saved {
                    q: qi,
                    k: ki,
                    v: vi,
                    o,
                    lse,
                    key_ok,
                    sp,
                },
                prim,
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(qi, &ki, &vi, &key_ok, &sp).0.into_primitive().tensor()),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// [`attention`] when `B` is one of the autodiff backends this crate trains on; `None` otherwise
/// (an inference backend, where the plain path keeps nothing for backward anyway).
pub fn try_attention<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    key_ok: &Tensor<B, 2>,
    sp: Spec,
) -> Option<Tensor<B, 4>> {
    macro_rules! first_of {
        ($($x:ty),* $(,)?) => { $( if let Some(out) = on::<B, $x>(q, k, v, key_ok, sp) { return Some(out); } )* };
    }
    first_of!(burn::backend::NdArray<f32>, burn::backend::NdArray<f64>);
    #[cfg(feature = "gpu")]
    {
        use burn::backend::{Cuda, Wgpu};
        use burn::tensor::{bf16, f16};
        first_of!(Wgpu<f32, i32>, Wgpu<f16, i32>, Cuda<f32, i32>, Cuda<f16, i32>, Cuda<bf16, i32>);
    }
    None
}

fn on<B: Backend, X: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    key_ok: &Tensor<B, 2>,
    sp: Spec,
) -> Option<Tensor<B, 4>> {
    type Ad<X> = Autodiff<X, NoCheckpointing>;
    let cast4 = |t: &Tensor<B, 4>| (t as &dyn Any).downcast_ref::<Tensor<Ad<X>, 4>>().cloned();
    let (q, k, v) = (cast4(q)?, cast4(k)?, cast4(v)?);
    let key_ok = (key_ok as &dyn Any).downcast_ref::<Tensor<Ad<X>, 2>>()?.clone();
    let out: Box<dyn Any> = Box::new(attention::<X, NoCheckpointing>(q, k, v, key_ok, sp));
    out.downcast::<Tensor<B, 4>>().ok().map(|b| *b)
}
