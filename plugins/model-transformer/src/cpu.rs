//! CPU fast path for `x @ W` with few rows (decoding): burn-ndarray's GEMM packs the whole weight
//! matrix on every call, tripling memory traffic when `x` has 1-16 rows. This streams `W` once per
//! block of rows with AVX2/FMA, split over threads by columns. Used only on `NdArray<f32>` outside
//! autodiff (the inference model); everything else takes burn's matmul.

use burn::backend::ndarray::NdArrayTensor;
use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use std::any::Any;

type Cpu = NdArray<f32>;

const MAX_ROWS: usize = 16;

fn slice_of(p: &TensorPrimitive<Cpu>) -> Option<&[f32]> {
    match p {
        TensorPrimitive::Float(NdArrayTensor::F32(s)) => s.view().to_slice(),
        _ => None,
    }
}

/// `Some(x @ w)` when the fast path applies, else `None`.
pub fn small_matmul<B: Backend>(x: &Tensor<B, 2>, w: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let xa = (x as &dyn Any).downcast_ref::<Tensor<Cpu, 2>>()?;
    let wa = (w as &dyn Any).downcast_ref::<Tensor<Cpu, 2>>()?;
    let ([m, k], [k2, n]) = (xa.dims(), wa.dims());
    if m > MAX_ROWS || k != k2 || !has_avx2() {
        return None;
    }
    let (xp, wp) = (xa.clone().into_primitive(), wa.clone().into_primitive());
    let (xs, ws) = (slice_of(&xp)?, slice_of(&wp)?);
    let mut out = vec![0f32; m * n];
    // Column blocks of 256 per task keep each task's W strip in L2.
    let cols = 256usize;
    let tasks = n.div_ceil(cols);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let run = |t: usize| {
        let (j0, j1) = (t * cols, ((t + 1) * cols).min(n));
        // SAFETY: tasks write disjoint column ranges of `out`.
        unsafe { block(xs, ws, out_ptr, m, k, n, j0, j1) }
    };
    let threads = std::thread::available_parallelism().map_or(1, |v| v.get()).min(tasks);
    if threads <= 1 || m * k * n < 1 << 16 {
        (0..tasks).for_each(run);
    } else {
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let t = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if t >= tasks {
                        break;
                    }
                    run(t);
                });
            }
        });
    }
    let device = xa.device();
    let res = Tensor::<Cpu, 2>::from_data(TensorData::new(out, [m, n]), &device);
    let boxed: Box<dyn Any> = Box::new(res);
    boxed.downcast::<Tensor<B, 2>>().ok().map(|b| *b)
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// out[r, j0..j1] = x[r, :] @ w[:, j0..j1] for all rows r.
#[allow(clippy::too_many_arguments)]
unsafe fn block(x: &[f32], w: &[f32], out: SendPtr, m: usize, k: usize, n: usize, j0: usize, j1: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut r = 0;
        while r < m {
            let rows = (m - r).min(4);
            let mut j = j0;
            while j + 16 <= j1 {
                match rows {
                    1 => tile::<1>(x, w, out, r, k, n, j),
                    2 => tile::<2>(x, w, out, r, k, n, j),
                    3 => tile::<3>(x, w, out, r, k, n, j),
                    _ => tile::<4>(x, w, out, r, k, n, j),
                }
                j += 16;
            }
            for rr in r..r + rows {
                for jj in j..j1 {
                    let mut acc = 0f32;
                    for i in 0..k {
                        acc += x[rr * k + i] * w[i * n + jj];
                    }
                    *out.0.add(rr * n + jj) = acc;
                }
            }
            r += rows;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, out, m, k, n, j0, j1);
        unreachable!()
    }
}

/// R rows x 16 columns, accumulated over all of k in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize>(x: &[f32], w: &[f32], out: SendPtr, r0: usize, k: usize, n: usize, j: usize) {
    use std::arch::x86_64::*;
    let mut a0 = [_mm256_setzero_ps(); R];
    let mut a1 = [_mm256_setzero_ps(); R];
    let wp = w.as_ptr();
    let xp = x.as_ptr();
    for i in 0..k {
        let row = wp.add(i * n + j);
        let w0 = _mm256_loadu_ps(row);
        let w1 = _mm256_loadu_ps(row.add(8));
        for r in 0..R {
            let xv = _mm256_set1_ps(*xp.add((r0 + r) * k + i));
            a0[r] = _mm256_fmadd_ps(xv, w0, a0[r]);
            a1[r] = _mm256_fmadd_ps(xv, w1, a1[r]);
        }
    }
    for r in 0..R {
        let o = out.0.add((r0 + r) * n + j);
        _mm256_storeu_ps(o, a0[r]);
        _mm256_storeu_ps(o.add(8), a1[r]);
    }
}
