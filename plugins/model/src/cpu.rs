//! CPU fast path for `x @ W` with few rows (decoding): burn-ndarray's GEMM packs the whole weight
//! matrix on every call, tripling memory traffic when `x` has 1-16 rows. This streams `W` once
//! with AVX-512 (or AVX2) FMAs, split over rayon's persistent workers by columns. Used only on
//! `NdArray<f32>` outside autodiff (the inference model); everything else takes burn's matmul.

use crate::host::{slice_of, Cpu};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use std::any::Any;

const MAX_ROWS: usize = 16;
/// Below this many weight elements a call stays on one thread (dispatch would cost more).
const PARALLEL_WORK: usize = 1 << 18;

/// `Some(x @ w)` when the fast path applies, else `None`.
pub fn small_matmul<B: Backend>(x: &Tensor<B, 2>, w: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    small_matmul_many(x, &[w]).and_then(|mut v| v.pop())
}

/// `Some([x @ w for w in ws])` when the fast path applies to all of them, else `None`. One
/// parallel pass over all the weights' columns: q/k/v (or gate/up) share one dispatch, and the
/// narrow ones are not split on their own. Every output is summed in the same order (one fused
/// multiply-add per row of `W`, in row order) whatever the split, so results are bit-identical to
/// `small_matmul` on each weight and do not depend on the thread count.
pub fn small_matmul_many<B: Backend>(x: &Tensor<B, 2>, ws: &[&Tensor<B, 2>]) -> Option<Vec<Tensor<B, 2>>> {
    let xa = (x as &dyn Any).downcast_ref::<Tensor<Cpu, 2>>()?;
    let [m, k] = xa.dims();
    if m > MAX_ROWS || !has_avx2() {
        return None;
    }
    let mut wps = Vec::with_capacity(ws.len());
    for w in ws {
        let wa = (*w as &dyn Any).downcast_ref::<Tensor<Cpu, 2>>()?;
        if wa.dims()[0] != k {
            return None;
        }
        wps.push(wa.clone().into_primitive());
    }
    let xp = xa.clone().into_primitive();
    let xs = slice_of(&xp)?;
    let mut mats = Vec::with_capacity(ws.len());
    for p in &wps {
        mats.push(Mat {
            w: slice_of(p)?,
            n: ws[mats.len()].dims()[1],
        });
    }
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|mt| vec![0f32; m * mt.n]).collect();
    let out_ptrs: Vec<SendPtr> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();
    let total: usize = mats.iter().map(|mt| mt.n).sum();
    let threads = if k * total < PARALLEL_WORK { 1 } else { pool_threads() };
    let parts = split_columns(&mats, threads);
    // SAFETY: the parts cover disjoint column ranges, so threads write disjoint parts of `outs`.
    let run = |part: &[(usize, usize, usize)]| {
        for &(i, j0, j1) in part {
            unsafe { block(xs, mats[i].w, out_ptrs[i], m, k, mats[i].n, j0, j1) }
        }
    };
    if parts.len() <= 1 {
        if let Some(p) = parts.first() {
            run(p)
        }
    } else {
        // The caller takes the first part, the pool's persistent workers the rest (no thread spawn:
        // a decode step makes ~100 of these calls).
        rayon::in_place_scope(|s| {
            for p in &parts[1..] {
                s.spawn(move |_| run(p));
            }
            run(&parts[0]);
        });
    }
    outs.into_iter()
        .zip(&mats)
        .map(|(o, mt)| crate::host::from_host(o, [m, mt.n]))
        .collect()
}

/// `Some(x @ e^T)` for `x` `[m, k]` (m <= 16) and `e` `[n, k]` row-major: a tied output head
/// (`e` is the token embedding) without transposing `e`. burn's matmul of the transposed view
/// copies and packs the whole embedding at every decode step (SmolLM2: 49152 x 576, 12 tok/s at
/// batch 8). Each output is one `dot` of a row of `x` and a row of `e`, summed in the same order
/// whatever the split over threads.
pub fn small_matmul_nt<B: Backend>(x: &Tensor<B, 2>, e: &Tensor<B, 2>) -> Option<Tensor<B, 2>> {
    let xa = (x as &dyn Any).downcast_ref::<Tensor<Cpu, 2>>()?;
    let ea = (e as &dyn Any).downcast_ref::<Tensor<Cpu, 2>>()?;
    let ([m, k], [n, k2]) = (xa.dims(), ea.dims());
    if m > MAX_ROWS || k != k2 {
        return None;
    }
    let (xp, ep) = (xa.clone().into_primitive(), ea.clone().into_primitive());
    let (xs, es) = (slice_of(&xp)?, slice_of(&ep)?);
    let mut out = vec![0f32; m * n];
    let ptr = SendPtr(out.as_mut_ptr());
    let threads = if k * n < PARALLEL_WORK { 1 } else { pool_threads() };
    let per = n.div_ceil(threads);
    // SAFETY: each part writes the columns j0..j1 of every row only.
    let run = |j0: usize, j1: usize| {
        for j in j0..j1 {
            let row = &es[j * k..(j + 1) * k];
            for r in 0..m {
                unsafe { *ptr.at(r * n + j) = dot(&xs[r * k..(r + 1) * k], row) };
            }
        }
    };
    if threads <= 1 {
        run(0, n);
    } else {
        rayon::in_place_scope(|s| {
            for t in 1..threads {
                let (j0, j1) = (t * per, ((t + 1) * per).min(n));
                s.spawn(move |_| run(j0, j1));
            }
            run(0, per.min(n));
        });
    }
    crate::host::from_host(out, [m, n])
}

/// One weight `[k, n]`, row-major.
struct Mat<'a> {
    w: &'a [f32],
    n: usize,
}

fn pool_threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Cuts the weights' columns, laid end to end, into `threads` parts of about equal width, as
/// `(weight, j0, j1)` ranges; cuts inside a weight fall on multiples of 32 (a whole AVX-512 tile).
fn split_columns(mats: &[Mat], threads: usize) -> Vec<Vec<(usize, usize, usize)>> {
    let total: usize = mats.iter().map(|mt| mt.n).sum();
    let per = total.div_ceil(threads.max(1)).max(32);
    let mut parts = vec![Vec::new()];
    let mut filled = 0;
    for (i, mt) in mats.iter().enumerate() {
        let mut j = 0;
        while j < mt.n {
            let mut end = (j + per - filled).min(mt.n);
            if end < mt.n {
                end = (end.div_ceil(32) * 32).min(mt.n);
            }
            parts.last_mut().unwrap().push((i, j, end));
            filled += end - j;
            j = end;
            if filled >= per && parts.len() < threads {
                parts.push(Vec::new());
                filled = 0;
            }
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
impl SendPtr {
    /// The element `i` places on (a method, so closures capture the whole Sync wrapper).
    unsafe fn at(&self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}
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

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows of `W` per pass: a pass sweeps `KC` rows of `W` side by side across a block of columns,
/// rather than walking down a whole column tile `n * 4` bytes at a time (a new page every row).
/// The hardware prefetcher does not follow `KC` interleaved streams, so each tile prefetches the
/// same spot of the next pass, `KC * n` floats ahead.
/// 8 rather than 16: the 8-row kernel read the 896x151936 weight from DRAM at 32-39 GB/s with 8,
/// 22-28 with 16 (4: 28-31, 12: 28-35, 32: 24-32); end to end at batch 8, alternated runs,
/// 74-80 tok/s vs 61-70.
const KC: usize = 8;
/// Columns per block: all passes over `k` finish one block before the next, so the block's
/// outputs (8 rows x 1024 x 4 B = 32 KiB) stay in L1/L2 between passes instead of streaming
/// through L3 (a 151936-column output is 4.8 MB at 8 rows). Measured on a 2-core EPYC with KC = 16, 8 rows,
/// GB/s of weights: 896x151936 (from DRAM) 11 unblocked, 23 blocked, ~25 unblocked with a
/// prefetch 512 floats ahead in the row (the previous scheme); 16 rows x 151936: 9 / 29 / -;
/// weights in L3: 896x1152 30 / 54, 4864x896 27 / 53. End to end at batch 8 (best of 5 decode
/// runs, alternated with the previous scheme): 81-88 tok/s vs 76-86, within the host's noise.
const COLUMN_BLOCK: usize = 1024;

/// out[r, j0..j1] = x[r, :] @ w[:, j0..j1] for all rows r. Columns go in tiles of 32 (AVX-512,
/// up to 8 rows at once: each load of `W` feeds 8 rows' FMAs), then 16 (AVX2, 4 rows), then one
/// at a time; all three sum each output with one FMA per row of `W`, in row order.
#[allow(clippy::too_many_arguments)]
unsafe fn block(x: &[f32], w: &[f32], out: SendPtr, m: usize, k: usize, n: usize, j0: usize, j1: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let wide = if has_avx512() { j0 + (j1 - j0) / 32 * 32 } else { j0 };
        let mid = wide + (j1 - wide) / 16 * 16;
        let ahead = KC * n;
        let mut c0 = j0;
        while c0 < mid {
            let c1 = (c0 + COLUMN_BLOCK).min(mid);
            for i0 in (0..k).step_by(KC) {
                let i1 = (i0 + KC).min(k);
                let mut j = c0;
                while j + 32 <= c1.min(wide) {
                    let mut r = 0;
                    while r < m {
                        let t = Tile {
                            r0: r,
                            k,
                            n,
                            j,
                            i0,
                            i1,
                            ahead,
                        };
                        match (m - r).min(8) {
                            1 => tile32::<1>(x, w, out, t),
                            2 => tile32::<2>(x, w, out, t),
                            3 => tile32::<3>(x, w, out, t),
                            4 => tile32::<4>(x, w, out, t),
                            5 => tile32::<5>(x, w, out, t),
                            6 => tile32::<6>(x, w, out, t),
                            7 => tile32::<7>(x, w, out, t),
                            _ => tile32::<8>(x, w, out, t),
                        }
                        r += 8;
                    }
                    j += 32;
                }
                while j < c1 {
                    // All row blocks reuse this KC x 16 tile of W from L1.
                    let mut r = 0;
                    while r < m {
                        let t = Tile {
                            r0: r,
                            k,
                            n,
                            j,
                            i0,
                            i1,
                            ahead,
                        };
                        match (m - r).min(4) {
                            1 => tile16::<1>(x, w, out, t),
                            2 => tile16::<2>(x, w, out, t),
                            3 => tile16::<3>(x, w, out, t),
                            _ => tile16::<4>(x, w, out, t),
                        }
                        r += 4;
                    }
                    j += 16;
                }
            }
            c0 = c1;
        }
        tail(x, w, out, m, k, n, mid, j1);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, out, m, k, n, j0, j1);
        unreachable!()
    }
}

/// The last < 16 columns, one output at a time (fused multiply-adds, as in the tiles).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tail(x: &[f32], w: &[f32], out: SendPtr, m: usize, k: usize, n: usize, j0: usize, j1: usize) {
    for r in 0..m {
        for j in j0..j1 {
            let mut acc = 0f32;
            for i in 0..k {
                acc = x[r * k + i].mul_add(w[i * n + j], acc);
            }
            *out.0.add(r * n + j) = acc;
        }
    }
}

/// Where one register tile works: rows r0.., columns j.., the W rows i0..i1 of this pass.
#[derive(Clone, Copy)]
struct Tile {
    r0: usize,
    k: usize,
    n: usize,
    j: usize,
    i0: usize,
    i1: usize,
    /// Prefetch distance in floats.
    ahead: usize,
}

/// R rows x 32 columns over W rows i0..i1, added to what earlier passes left in `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile32<const R: usize>(x: &[f32], w: &[f32], out: SendPtr, t: Tile) {
    use std::arch::x86_64::*;
    let Tile {
        r0,
        k,
        n,
        j,
        i0,
        i1,
        ahead,
    } = t;
    let mut a0 = [_mm512_setzero_ps(); R];
    let mut a1 = [_mm512_setzero_ps(); R];
    if i0 > 0 {
        for r in 0..R {
            let o = out.0.add((r0 + r) * n + j);
            a0[r] = _mm512_loadu_ps(o);
            a1[r] = _mm512_loadu_ps(o.add(16));
        }
    }
    let wp = w.as_ptr();
    let xp = x.as_ptr();
    for i in i0..i1 {
        let row = wp.add(i * n + j);
        // A prefetch never faults, even past the end of `w`. 32 floats span two cache lines.
        _mm_prefetch(row.wrapping_add(ahead) as *const i8, _MM_HINT_T0);
        _mm_prefetch(row.wrapping_add(ahead + 16) as *const i8, _MM_HINT_T0);
        let w0 = _mm512_loadu_ps(row);
        let w1 = _mm512_loadu_ps(row.add(16));
        for r in 0..R {
            let xv = _mm512_set1_ps(*xp.add((r0 + r) * k + i));
            a0[r] = _mm512_fmadd_ps(xv, w0, a0[r]);
            a1[r] = _mm512_fmadd_ps(xv, w1, a1[r]);
        }
    }
    for r in 0..R {
        let o = out.0.add((r0 + r) * n + j);
        _mm512_storeu_ps(o, a0[r]);
        _mm512_storeu_ps(o.add(16), a1[r]);
    }
}

/// R rows x 16 columns over W rows i0..i1, added to what earlier passes left in `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile16<const R: usize>(x: &[f32], w: &[f32], out: SendPtr, t: Tile) {
    use std::arch::x86_64::*;
    let Tile {
        r0,
        k,
        n,
        j,
        i0,
        i1,
        ahead,
    } = t;
    let mut a0 = [_mm256_setzero_ps(); R];
    let mut a1 = [_mm256_setzero_ps(); R];
    if i0 > 0 {
        for r in 0..R {
            let o = out.0.add((r0 + r) * n + j);
            a0[r] = _mm256_loadu_ps(o);
            a1[r] = _mm256_loadu_ps(o.add(8));
        }
    }
    let wp = w.as_ptr();
    let xp = x.as_ptr();
    for i in i0..i1 {
        let row = wp.add(i * n + j);
        // A prefetch never faults, even past the end of `w`.
        _mm_prefetch(row.wrapping_add(ahead) as *const i8, _MM_HINT_T0);
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

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight lanes so that the compiler vectorises the sum.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}
