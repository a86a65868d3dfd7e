//! 2-D matrix products on the CPU through the `gemm` crate, whose kernels are chosen at run time:
//! AVX-512 where the CPU has it (the `x86-v4` feature), AVX2+FMA, NEON, or portable code.
//! burn-ndarray's own matmul (matrixmultiply) has AVX2 kernels only: about 100 GFLOP/s on two
//! AVX-512 cores, where torch's oneDNN runs near 155 (docs/design/gemm-kernels.md).
//!
//! [`matmul`] is `x.matmul(w)` for every backend: on `NdArray` (f32 or f64 tensors) it runs gemm;
//! on `Autodiff<NdArray>` it is a custom autodiff op whose backward (`dy wᵀ`, `xᵀ dy`) runs gemm
//! too; anything else (GPU backends, mixed dtypes, negative strides) goes to burn's matmul, so a
//! missing cast still reaches burn's error. Transposed operands are strided views: no copy.
//!
//! Determinism: gemm splits each k block's output tiles over threads but never splits a k sum,
//! and its block sizes come from the cache geometry, not the thread count, so every output is the
//! same sum for any thread count (tests/threads.rs). The count is `MATMUL_NUM_THREADS` when set
//! (as matrixmultiply reads it), else every core.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use gemm::Parallelism;
use std::any::Any;
use std::sync::OnceLock;

/// Threads for every gemm call of this process: `MATMUL_NUM_THREADS` if set, else all cores.
pub fn threads() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("MATMUL_NUM_THREADS")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    })
}

/// `x w` on any backend (see the module comment for which path runs). Tensors of more than two
/// dimensions are batches of matrices with the same leading dimensions (no broadcasting on the
/// gemm path: burn's matmul takes those).
pub fn matmul<B: Backend, const D: usize>(x: Tensor<B, D>, w: Tensor<B, D>) -> Tensor<B, D> {
    matmul_threads(x, w, threads())
}

/// [`matmul`] with an explicit thread count (tests: the result must not depend on it).
pub fn matmul_threads<B: Backend, const D: usize>(x: Tensor<B, D>, w: Tensor<B, D>, threads: usize) -> Tensor<B, D> {
    macro_rules! inner {
        ($($e:ty),*) => { $( if let Some(out) = on_inner::<B, NdArray<$e>, D>(&x, &w, threads) { return out; } )* };
    }
    macro_rules! tracked {
        ($($e:ty),*) => { $( if let Some(out) = on_autodiff::<B, NdArray<$e>, D>(&x, &w, threads) { return out; } )* };
    }
    inner!(f32, f64);
    tracked!(f32, f64);
    x.matmul(w)
}

fn on_inner<B: Backend, X: Backend, const D: usize>(
    x: &Tensor<B, D>,
    w: &Tensor<B, D>,
    threads: usize,
) -> Option<Tensor<B, D>> {
    let cast = |t: &Tensor<B, D>| (t as &dyn Any).downcast_ref::<Tensor<X, D>>().cloned();
    let (x, w) = (cast(x)?, cast(w)?);
    let (x, w) = (x.into_primitive().tensor(), w.into_primitive().tensor());
    let out: FloatTensor<X> = host_mm::<X>(&x, false, &w, false, threads)?;
    let out: Box<dyn Any> = Box::new(Tensor::<X, D>::from_primitive(TensorPrimitive::Float(out)));
    out.downcast::<Tensor<B, D>>().ok().map(|b| *b)
}

fn on_autodiff<B: Backend, X: Backend, const D: usize>(
    x: &Tensor<B, D>,
    w: &Tensor<B, D>,
    threads: usize,
) -> Option<Tensor<B, D>> {
    type Ad<X> = Autodiff<X, NoCheckpointing>;
    let cast = |t: &Tensor<B, D>| (t as &dyn Any).downcast_ref::<Tensor<Ad<X>, D>>().cloned();
    let (x, w) = (cast(x)?, cast(w)?);
    let out: Box<dyn Any> = Box::new(tracked_matmul::<X, NoCheckpointing, D>(x, w, threads)?);
    out.downcast::<Tensor<B, D>>().ok().map(|b| *b)
}

/// The product as an autodiff op: keeps `x` only when `w` needs a gradient and `w` only when `x`
/// does (as burn's matmul does). `None` when gemm cannot take the operands.
fn tracked_matmul<X: Backend, C: CheckpointStrategy, const D: usize>(
    x: Tensor<Autodiff<X, C>, D>,
    w: Tensor<Autodiff<X, C>, D>,
    threads: usize,
) -> Option<Tensor<Autodiff<X, C>, D>> {
    let (x, w) = (x.into_primitive().tensor(), w.into_primitive().tensor());
    let out = host_mm::<X>(&x.primitive, false, &w.primitive, false, threads)?;
    let (x_tracked, w_tracked) = (x.is_tracked(), w.is_tracked());
    let out = match (MatmulBackward { threads })
        .prepare::<C>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            (
                w_tracked.then(|| x.primitive.clone()),
                x_tracked.then(|| w.primitive.clone()),
            ),
            out,
        ),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

#[derive(Debug)]
struct MatmulBackward {
    threads: usize,
}

impl<B: Backend> Backward<B, 2> for MatmulBackward {
    /// `x` (kept when `w` is tracked) and `w` (kept when `x` is tracked).
    type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let (x, w) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let mm = |a: &FloatTensor<B>, ta: bool, b: &FloatTensor<B>, tb: bool| {
            host_mm::<B>(a, ta, b, tb, self.threads).unwrap_or_else(|| {
                // float_transpose swaps the last two dimensions, as `ta`/`tb` mean.
                let t = |p: &FloatTensor<B>, yes: bool| if yes { B::float_transpose(p.clone()) } else { p.clone() };
                B::float_matmul(t(a, ta), t(b, tb))
            })
        };
        if let (Some(n), Some(w)) = (node_x, w) {
            grads.register::<B>(n.id, mm(&dy, false, &w, true));
        }
        if let (Some(n), Some(x)) = (node_w, x) {
            grads.register::<B>(n.id, mm(&x, true, &dy, false));
        }
    }
}

/// `op(a) op(b)` with gemm, where `op` transposes the last two dimensions when asked; `None`
/// unless both are NdArray primitives of the same float dtype (f32 or f64), of the same rank >= 2
/// with the same leading (batch) dimensions, non-empty, with non-negative strides.
fn host_mm<X: Backend>(
    a: &FloatTensor<X>,
    ta: bool,
    b: &FloatTensor<X>,
    tb: bool,
    threads: usize,
) -> Option<FloatTensor<X>> {
    let a = (a as &dyn Any).downcast_ref::<NdArrayTensor>()?;
    let b = (b as &dyn Any).downcast_ref::<NdArrayTensor>()?;
    // The storage type is private to burn-ndarray, so each dtype's arm takes its views here.
    macro_rules! on_views {
        ($a:expr, $b:expr) => {{
            let (a, b) = ($a.view(), $b.view());
            product(
                (a.as_ptr(), a.shape(), a.strides()),
                ta,
                (b.as_ptr(), b.shape(), b.strides()),
                tb,
                threads,
            )?
        }};
    }
    let out = match (a, b) {
        (NdArrayTensor::F32(a), NdArrayTensor::F32(b)) => on_views!(a, b),
        (NdArrayTensor::F64(a), NdArrayTensor::F64(b)) => on_views!(a, b),
        _ => return None,
    };
    let out: Box<dyn Any> = Box::new(out);
    out.downcast::<FloatTensor<X>>().ok().map(|b| *b)
}

/// A view's data pointer, shape and strides (in elements).
type View<'a, E> = (*const E, &'a [usize], &'a [isize]);

/// The matrices of a strided view: (rows, cols, row stride, col stride), transposed on request.
fn matrix(shape: &[usize], strides: &[isize], transpose: bool) -> Option<(usize, usize, isize, isize)> {
    let d = shape.len();
    if d < 2 || strides.iter().any(|&s| s < 0) || shape.contains(&0) {
        return None;
    }
    let l = (shape[d - 2], shape[d - 1], strides[d - 2], strides[d - 1]);
    Some(if transpose { (l.1, l.0, l.3, l.2) } else { l })
}

fn product<E: burn::tensor::Element>(
    a: View<'_, E>,
    ta: bool,
    b: View<'_, E>,
    tb: bool,
    threads: usize,
) -> Option<NdArrayTensor> {
    let (zero, one) = (E::from_elem(0.0), E::from_elem(1.0));
    let (m, k, a_rs, a_cs) = matrix(a.1, a.2, ta)?;
    let (k2, n, b_rs, b_cs) = matrix(b.1, b.2, tb)?;
    let d = a.1.len();
    let batch = &a.1[..d - 2];
    if k != k2 || b.1.len() != d || &b.1[..d - 2] != batch {
        return None; // burn's matmul broadcasts, or names the shapes
    }
    let count: usize = batch.iter().product();
    let mut dst = vec![zero; count * m * n];
    for i in 0..count {
        // The i-th matrix's offset in each operand: its batch index (row-major) times the strides.
        let (mut rest, mut off_a, mut off_b) = (i, 0isize, 0isize);
        for j in (0..d - 2).rev() {
            let idx = (rest % batch[j]) as isize;
            rest /= batch[j];
            off_a += idx * a.2[j];
            off_b += idx * b.2[j];
        }
        // SAFETY: the views outlive the call; their shapes and strides describe valid memory, so
        // the offsets stay inside them; dst is a fresh row-major buffer of `count` m x n
        // matrices. alpha 0 with read_dst false: dst := lhs·rhs.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr().add(i * m * n),
                1,
                n as isize,
                false,
                a.0.offset(off_a),
                a_cs,
                a_rs,
                b.0.offset(off_b),
                b_cs,
                b_rs,
                zero,
                one,
                false,
                false,
                false,
                Parallelism::Rayon(threads),
            );
        }
    }
    let mut shape = batch.to_vec();
    shape.extend([m, n]);
    Some(NdArrayTensor::from_data(TensorData::new(dst, shape)))
}
