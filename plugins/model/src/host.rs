//! Moving CPU tensors to and from plain `Vec<f32>` without burn's per-element paths, for the
//! CPU fast paths (`cpu.rs`, `fused.rs`) and the sampler. Every function is a no-op (`None`/false)
//! on other backends.

use burn::backend::ndarray::NdArrayTensor;
use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use std::any::{Any, TypeId};

pub(crate) type Cpu = NdArray<f32>;

/// Whether `B` is the plain CPU backend (where these ops apply).
pub fn is_cpu<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Cpu>()
}

/// The values of a CPU tensor, row-major; `None` on other backends. A contiguous tensor is one
/// memcpy (burn-ndarray's `into_data` walks element by element, ~50x slower).
pub fn host_vec<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<Vec<f32>> {
    let c = (t as &dyn Any).downcast_ref::<Tensor<Cpu, D>>()?;
    let p = c.clone().into_primitive();
    match slice_of(&p) {
        Some(s) => Some(s.to_vec()),
        // Strided, or another dtype (burn's device settings may say f64, see tests/gradcheck.rs).
        None => c.clone().into_data().convert::<f32>().into_vec::<f32>().ok(),
    }
}

/// A CPU tensor from row-major values; `None` unless `B` is the CPU backend.
pub fn from_host<B: Backend, const D: usize>(v: Vec<f32>, shape: [usize; D]) -> Option<Tensor<B, D>> {
    let t = Tensor::<Cpu, D>::from_data(TensorData::new(v, shape), &Default::default());
    let boxed: Box<dyn Any> = Box::new(t);
    boxed.downcast::<Tensor<B, D>>().ok().map(|b| *b)
}

/// The values of a contiguous f32 CPU tensor, without copying.
pub(crate) fn slice_of(p: &TensorPrimitive<Cpu>) -> Option<&[f32]> {
    match p {
        TensorPrimitive::Float(NdArrayTensor::F32(s)) => s.view().to_slice(),
        _ => None,
    }
}
