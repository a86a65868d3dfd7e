//! The log-prob head's softmax on the CPU: one pass per row, rows spread over rayon's workers.
//! burn's `log_softmax` + `gather` + `exp` walk a chunk's [rows, vocab] logits six times on one
//! core; this reads them once to find the maximum and once more to exponentiate, and each row is
//! summed by one thread in index order, so the result does not depend on the thread count.

use crate::host::{self, Cpu};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use std::any::Any;

/// For f32 logits `[rows, vocab]` on the CPU (plain or autodiff backend, where they are
/// detached): each row's `log_softmax[target]` as `[rows, 1]`, and the softmax itself when
/// `want_probs`. `None` elsewhere (other backends or dtypes), where burn's ops run.
pub fn selected<B: Backend>(
    logits: &Tensor<B, 2>,
    targets: &[i64],
    want_probs: bool,
) -> Option<(Tensor<B, 2>, Option<Tensor<B, 2>>)> {
    let inner = cpu_tensor(logits)?;
    let [rows, vocab] = inner.dims();
    let prim = inner.into_primitive();
    let x = host::slice_of(&prim)?;
    if targets.len() != rows || targets.iter().any(|&t| t < 0 || t as usize >= vocab) {
        return None;
    }
    let mut probs = if want_probs {
        vec![0f32; rows * vocab]
    } else {
        Vec::new()
    };
    let mut values = vec![0f32; rows];
    let row = |r: usize, out: &mut [f32]| -> f32 {
        let xs = &x[r * vocab..(r + 1) * vocab];
        let max = xs.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0f64; // 152k terms: f64 keeps the log-sum-exp to f32 precision
        if out.is_empty() {
            for &v in xs {
                sum += (v - max).exp() as f64;
            }
        } else {
            for (o, &v) in out.iter_mut().zip(xs) {
                *o = (v - max).exp();
                sum += *o as f64;
            }
            let inv = (1.0 / sum) as f32;
            out.iter_mut().for_each(|o| *o *= inv);
        }
        xs[targets[r] as usize] - max - sum.ln() as f32
    };
    if want_probs {
        values
            .par_iter_mut()
            .zip(probs.par_chunks_mut(vocab))
            .enumerate()
            .for_each(|(r, (v, out))| *v = row(r, out));
    } else {
        values
            .par_iter_mut()
            .enumerate()
            .for_each(|(r, v)| *v = row(r, &mut []));
    }
    let values = wrap::<B>(values, [rows, 1])?;
    let probs = if want_probs {
        Some(wrap::<B>(probs, [rows, vocab])?)
    } else {
        None
    };
    Some((values, probs))
}

/// The plain CPU tensor behind `t` (its value, detached, on the autodiff backend); f32 only.
fn cpu_tensor<B: Backend>(t: &Tensor<B, 2>) -> Option<Tensor<Cpu, 2>> {
    let any = t as &dyn Any;
    let inner = match any.downcast_ref::<Tensor<Cpu, 2>>() {
        Some(c) => c.clone(),
        None => any.downcast_ref::<Tensor<Autodiff<Cpu>, 2>>()?.clone().inner(),
    };
    (inner.dtype() == burn::tensor::DType::F32).then_some(inner)
}

/// Row-major values as a tensor of `B` (the plain or autodiff CPU backend, untracked).
fn wrap<B: Backend>(v: Vec<f32>, shape: [usize; 2]) -> Option<Tensor<B, 2>> {
    if host::is_cpu::<B>() {
        return host::from_host(v, shape);
    }
    let t = Tensor::<Cpu, 2>::from_data(TensorData::new(v, shape), &Default::default());
    let boxed: Box<dyn Any> = Box::new(Tensor::<Autodiff<Cpu>, 2>::from_inner(t));
    boxed.downcast::<Tensor<B, 2>>().ok().map(|b| *b)
}
