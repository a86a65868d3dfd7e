//! Build a `Transformer` from a `WeightSource`, adding LoRA/DoRA adapters as the spec asks.

use crate::config::ModelConfig;
use crate::model::{Attention, Block, Linear, Mlp, Transformer};
use crate::weights::WeightSource;
use anyhow::{bail, Result};
use burn::module::{Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recode_core::spec::{AdapterKind, AdapterSpec};

pub const ALL_LINEAR: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Target module names after applying PEFT defaults ("all-linear", empty = q_proj + v_proj).
pub fn resolve_targets(spec: &AdapterSpec) -> Result<Vec<String>> {
    if spec.target_modules.is_empty() {
        return Ok(vec!["q_proj".into(), "v_proj".into()]);
    }
    if spec.target_modules.iter().any(|t| t == "all-linear") {
        return Ok(ALL_LINEAR.iter().map(|s| s.to_string()).collect());
    }
    for t in &spec.target_modules {
        if !ALL_LINEAR.contains(&t.as_str()) {
            bail!("adapter target module `{t}` is unknown (expected one of {ALL_LINEAR:?} or \"all-linear\")");
        }
    }
    Ok(spec.target_modules.clone())
}

struct Loader<'a, B: Backend> {
    src: &'a dyn WeightSource,
    device: B::Device,
    next_id: u64,
    /// Base weights get gradients (full fine-tuning).
    train_base: bool,
    /// The dtype of frozen weights; trained ones are masters in the device's default dtype.
    compute: DType,
}

impl<B: Backend> Loader<'_, B> {
    /// Deterministic ids, so a saved optimiser state maps onto a freshly loaded model.
    fn id(&mut self) -> ParamId {
        self.next_id += 1;
        ParamId::from(self.next_id)
    }
    fn param<const D: usize>(&mut self, vals: Vec<f32>, shape: [usize; D], grad: bool) -> Param<Tensor<B, D>> {
        let data = TensorData::new(vals, shape);
        let t = if grad {
            Tensor::from_data(data, &self.device)
        } else {
            Tensor::from_data(data, (&self.device, self.compute))
        };
        let t = t.set_require_grad(grad);
        Param::initialized(self.id(), t)
    }
    fn get(&self, name: &str, expect: &[usize]) -> Result<Vec<f32>> {
        let (shape, vals) = self.src.tensor(name)?;
        if shape != expect {
            bail!("tensor `{name}`: shape {shape:?}, expected {expect:?}");
        }
        Ok(vals)
    }
    fn vector(&mut self, name: &str, n: usize) -> Result<Param<Tensor<B, 1>>> {
        let v = self.get(name, &[n])?;
        let g = self.train_base;
        Ok(self.param(v, [n], g))
    }
    /// HF `[out, in]` -> stored `[in, out]`, transposed once here.
    fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>> {
        let w = self.get(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let mut t = vec![0f32; w.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                t[i * d_out + o] = w[o * d_in + i];
            }
        }
        let g = self.train_base;
        let weight = self.param(t, [d_in, d_out], g);
        let bias = if bias {
            Some(self.vector(&format!("{prefix}.bias"), d_out)?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            lora_a: None,
            lora_b: None,
            magnitude: None,
            scaling: 1.0,
            dropout: 0.0,
        })
    }
}

/// A model whose every tensor has the device's default float dtype.
pub fn load_transformer<B: Backend>(
    cfg: &ModelConfig,
    src: &dyn WeightSource,
    adapter: &AdapterSpec,
    seed: u64,
    device: &B::Device,
) -> Result<Transformer<B>> {
    load_transformer_in(cfg, src, adapter, seed, device, default_dtype::<B>(device))
}

/// The device's default float dtype (burn fixes it per device type and process): the masters'.
fn default_dtype<B: Backend>(device: &B::Device) -> FloatDType {
    Tensor::<B, 1>::zeros([1], device).dtype().into()
}

/// Mixed precision: frozen weights and activations in `compute`; trainable parameters (adapters,
/// or every weight under full fine-tuning) stay masters in the device's default dtype (f32), so
/// AdamW's moments and the gradients are f32 too and a 5e-5 step of a DoRA magnitude near 1.0 is
/// not rounded away (bf16's spacing there is 7.8e-3, f16's 9.8e-4).
pub fn load_transformer_in<B: Backend>(
    cfg: &ModelConfig,
    src: &dyn WeightSource,
    adapter: &AdapterSpec,
    seed: u64,
    device: &B::Device,
    compute: FloatDType,
) -> Result<Transformer<B>> {
    cfg.check_decoder()?;
    let train_base = adapter.kind == AdapterKind::Full;
    let mut ld = Loader::<B> {
        src,
        device: device.clone(),
        next_id: 0,
        train_base,
        compute: compute.into(),
    };
    let (h, i, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    let ev = ld.get("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
    let embed_tokens = ld.param(ev, [cfg.vocab_size, h], adapter.kind == AdapterKind::Full);
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        layers.push(Block {
            input_layernorm: ld.vector(&format!("{p}.input_layernorm.weight"), h)?,
            self_attn: Attention {
                q_proj: ld.linear(&format!("{p}.self_attn.q_proj"), h, q, cfg.attention_bias)?,
                k_proj: ld.linear(&format!("{p}.self_attn.k_proj"), h, kv, cfg.attention_bias)?,
                v_proj: ld.linear(&format!("{p}.self_attn.v_proj"), h, kv, cfg.attention_bias)?,
                o_proj: ld.linear(&format!("{p}.self_attn.o_proj"), q, h, false)?,
            },
            post_attention_layernorm: ld.vector(&format!("{p}.post_attention_layernorm.weight"), h)?,
            mlp: Mlp {
                gate_proj: ld.linear(&format!("{p}.mlp.gate_proj"), h, i, false)?,
                up_proj: ld.linear(&format!("{p}.mlp.up_proj"), h, i, false)?,
                down_proj: ld.linear(&format!("{p}.mlp.down_proj"), i, h, false)?,
            },
        });
    }
    let norm = ld.vector("model.norm.weight", h)?;
    let tied = cfg.tie_word_embeddings || !src.contains("lm_head.weight");
    let lm_head = if tied {
        None
    } else {
        Some(ld.linear("lm_head", h, cfg.vocab_size, false)?)
    };
    let mut model = Transformer {
        embed_tokens,
        layers,
        norm,
        lm_head,
        cfg: cfg.clone(),
        attention: Default::default(),
        compute,
        master: default_dtype::<B>(device),
    };
    model.cfg.tie_word_embeddings = tied;
    if matches!(adapter.kind, AdapterKind::Lora | AdapterKind::Dora) {
        add_adapters(&mut model, adapter, seed, &mut ld.next_id)?;
    }
    Ok(model)
}

/// PEFT initialisation: A ~ kaiming-uniform(a=sqrt 5) i.e. U(±1/sqrt(in)), B = 0, DoRA m = ||W|| per
/// output feature, so the adapted model starts exactly equal to the base.
fn add_adapters<B: Backend>(
    model: &mut Transformer<B>,
    spec: &AdapterSpec,
    seed: u64,
    next_id: &mut u64,
) -> Result<()> {
    if spec.rank == 0 {
        bail!("adapter rank must be > 0");
    }
    if !(0.0..1.0).contains(&spec.dropout) {
        bail!("adapter dropout {} must be in [0, 1)", spec.dropout);
    }
    let targets = resolve_targets(spec)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = spec.rank;
    let mut id = || {
        *next_id += 1;
        ParamId::from(*next_id)
    };
    for (name, _, lin) in model.linears_mut() {
        if !targets.iter().any(|t| t == name) {
            continue;
        }
        let w = lin.weight.val();
        let device = w.device();
        let [d_in, d_out] = w.dims();
        let bound = 1.0 / (d_in as f32).sqrt();
        let a: Vec<f32> = (0..d_in * r).map(|_| rng.gen_range(-bound..bound)).collect();
        // f32 masters (the device's default dtype), whatever the frozen weight's dtype.
        let a = Tensor::<B, 2>::from_data(TensorData::new(a, [d_in, r]), &device).set_require_grad(true);
        let b = Tensor::<B, 2>::zeros([r, d_out], &device).set_require_grad(true);
        let master = b.dtype();
        lin.lora_a = Some(Param::initialized(id(), a));
        lin.lora_b = Some(Param::initialized(id(), b));
        if spec.kind == AdapterKind::Dora {
            // Same expression as the forward's norm (in the weight's dtype, then to the master's),
            // so m / ||W|| is exactly 1 at init.
            let m = w
                .detach()
                .powi_scalar(2)
                .sum_dim(0)
                .sqrt()
                .cast(master)
                .reshape([d_out])
                .set_require_grad(true);
            lin.magnitude = Some(Param::initialized(id(), m));
        }
        lin.scaling = spec.alpha / r as f64;
        lin.dropout = spec.dropout;
    }
    Ok(())
}
