//! Built-in model plugin "transformer": Qwen2 and Llama decoders in burn, loaded from a Hugging Face
//! folder (config.json + safetensors) or a GGUF file, with LoRA/DoRA adapters, batched sampling with
//! a KV cache, log-probs with autodiff, AdamW, and a run-time choice of backend (cpu/wgpu/cuda).

pub mod bench;
pub mod byte_codec;
pub mod config;
pub mod cpu;
pub mod flash;
pub mod fused;
pub mod gemm_cpu;
pub mod generate;
pub mod host;
pub mod load;
pub mod logsoftmax_cpu;
pub mod loss_scale;
pub mod merge;
pub mod model;
pub mod policy;
pub mod random;
pub mod tail_cpu;
pub mod weights;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType};
use recode_core::api::{Policy, TextCodec};
use recode_core::registry::{ModelContext, Registry};
use recode_core::spec::{BackendKind, Precision};
use std::path::{Path, PathBuf};

pub use config::{Architecture, ModelConfig};
pub use policy::TransformerPolicy;

pub fn register(reg: &mut Registry) {
    reg.add_model(
        "transformer",
        "Qwen2 / Llama decoder in burn (HF safetensors or GGUF), LoRA/DoRA/full fine-tuning, cpu/wgpu/cuda",
        factory,
    );
}

/// Weights, config and tokenizer of a model, whatever format they came in.
pub struct ModelFiles {
    pub config: ModelConfig,
    pub weights: Box<dyn weights::WeightSource>,
    pub codec: Box<dyn TextCodec>,
}

/// Open an HF folder (config.json, *.safetensors, tokenizer.json) or a .gguf file.
pub fn open_model(path: &Path, arch: &str, tokenizer: &str) -> Result<ModelFiles> {
    if path.extension().is_some_and(|e| e == "gguf") {
        return gguf::open(path, arch, tokenizer);
    }
    let cfg_path = path.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?;
    let config = ModelConfig::from_hf_json_as(&text, arch).with_context(|| format!("{}", cfg_path.display()))?;
    let weights = Box::new(weights::SafetensorsSource::from_dir(path)?);
    let tok: PathBuf = if tokenizer.is_empty() {
        path.join("tokenizer.json")
    } else {
        PathBuf::from(tokenizer)
    };
    let codec = Box::new(recode_model_formats::Codec::from_tokenizer_json(&tok)?);
    Ok(ModelFiles { config, weights, codec })
}

mod gguf;

fn model_path(ctx: &ModelContext<'_>) -> Result<PathBuf> {
    if !ctx.spec.path.is_empty() {
        return Ok(PathBuf::from(&ctx.spec.path));
    }
    if !ctx.spec.id.is_empty() {
        return gguf::resolve_id(&ctx.spec.id);
    }
    bail!("model: set `path` (HF folder or .gguf) or `id`")
}

/// `[model.options]` of the built-in transformer.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformerOptions {
    /// Attention in the training forward: "auto" (default; blockwise from 512 x 512 scores),
    /// "plain" (keeps the [b, heads, t, s] probabilities for backward) or "blockwise" (keeps the
    /// output and row log-sum-exp only and recomputes the probabilities in backward).
    pub attention: flash::AttentionMode,
}

/// Load a policy on backend `B`.
pub fn build_policy<B: Backend>(ctx: &ModelContext<'_>, device: &B::Device) -> Result<TransformerPolicy<B>> {
    let path = model_path(ctx)?;
    let files = open_model(&path, &ctx.spec.architecture, &ctx.spec.tokenizer)?;
    let options: TransformerOptions = recode_core::registry::decode_options("transformer", &ctx.spec.options)?;
    // The backend's element type is the masters' dtype (f32); `precision` is the compute dtype of
    // activations and frozen weights, chosen at run time (`load_transformer_in`).
    let master = <B::FloatElem as burn::tensor::Element>::dtype();
    let compute = match ctx.backend.precision {
        Precision::F32 => master.into(),
        Precision::F16 => FloatDType::F16,
        Precision::Bf16 => FloatDType::BF16,
    };
    if DType::from(compute) != master && !B::supports_dtype(device, compute.into()) {
        bail!(
            "precision {:?} is not supported by this {:?} device; use f32, or f16/bf16 where the device has it",
            ctx.backend.precision,
            ctx.backend.kind
        );
    }
    let mut model = load::load_transformer_in::<burn::backend::Autodiff<B>>(
        &files.config,
        files.weights.as_ref(),
        &ctx.spec.adapter,
        ctx.seed,
        device,
        compute,
    )
    .with_context(|| format!("loading {}", path.display()))?;
    model.attention = options.attention;
    drop(files.weights);
    // burn 0.21 fixes one default float dtype per device type for the whole process, set by the
    // first backend that makes a tensor there: an f64 backend after an f32 one on the same device
    // would silently keep f32 masters.
    let got = DType::from(model.master);
    if master != got {
        bail!("the {master:?} backend was built with {got:?} tensors: this process already used the same device with another element type, and burn keeps one per device; use one precision per process");
    }
    TransformerPolicy::new(model, files.codec, ctx.spec.adapter.clone(), ctx.training)
}

/// GPU runtimes panic when their driver is missing; turn that into an error.
#[cfg_attr(not(feature = "gpu"), allow(dead_code))]
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            bail!(
                "{what} backend failed to start: {}",
                msg.unwrap_or_else(|| "panic".into())
            )
        }
    }
}

fn factory(ctx: &ModelContext<'_>) -> Result<Box<dyn Policy>> {
    use burn::backend::NdArray;
    let b = ctx.backend;
    match (b.kind, b.precision) {
        (BackendKind::Cpu, Precision::F32) => Ok(Box::new(build_policy::<NdArray<f32>>(ctx, &Default::default())?)),
        (BackendKind::Cpu, p) => {
            bail!("the cpu backend supports f32 only (precision = {p:?}); use wgpu or cuda for f16/bf16")
        }
        _ => gpu_factory(ctx),
    }
}

#[cfg(feature = "gpu")]
fn gpu_factory(ctx: &ModelContext<'_>) -> Result<Box<dyn Policy>> {
    use burn::backend::{cuda::CudaDevice, wgpu::WgpuDevice, Cuda, Wgpu};
    let b = ctx.backend;
    let wdev = if b.device == 0 {
        WgpuDevice::DefaultDevice
    } else {
        WgpuDevice::DiscreteGpu(b.device)
    };
    let cdev = CudaDevice::new(b.device);
    fn boxed<B: Backend>(p: TransformerPolicy<B>) -> Box<dyn Policy> {
        Box::new(p)
    }
    // f32 backends at every precision: f16/bf16 is the compute dtype inside (build_policy).
    match (b.kind, b.precision) {
        (BackendKind::Wgpu, Precision::Bf16) => bail!("bf16 is not supported by the wgpu backend (its WGSL compiler has no bf16; lavapipe reports it unsupported); use f16 or cuda"),
        (BackendKind::Wgpu, _) => guarded("wgpu", || Ok(boxed(build_policy::<Wgpu<f32, i32>>(ctx, &wdev)?))),
        (BackendKind::Cuda, _) => guarded("cuda", || Ok(boxed(build_policy::<Cuda<f32, i32>>(ctx, &cdev)?))),
        (BackendKind::Cpu, _) => unreachable!("handled by factory"),
    }
}

#[cfg(not(feature = "gpu"))]
fn gpu_factory(ctx: &ModelContext<'_>) -> Result<Box<dyn Policy>> {
    bail!(
        "backend {:?}: recode-model was built without its `gpu` feature",
        ctx.backend.kind
    )
}
