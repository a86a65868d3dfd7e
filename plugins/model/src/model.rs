//! The decoder shared by Qwen2 and Llama (they differ only in q/k/v biases and defaults, see
//! `config.rs`): token embedding, N x [RMSNorm, GQA attention with RoPE, RMSNorm, SwiGLU MLP],
//! final RMSNorm, output projection (tied or not). Linear weights are stored pre-transposed
//! `[in, out]` and contiguous so that `x @ W` needs no copy. Activations are 2-D `[rows, features]`
//! except inside attention.

use crate::config::ModelConfig;
use crate::flash::{self, AttentionMode};
use crate::fused::{self, HostKv, StepHost};
use crate::gemm_cpu::matmul;
use crate::tail_cpu;
use burn::module::{Module, Param, ParamId};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, FloatDType, Int, Tensor, TensorData};
use std::cell::OnceCell;

/// Per-call switches.
#[derive(Debug, Clone, Copy)]
pub struct Fwd {
    /// Apply LoRA/DoRA adapters (false = the base/reference model).
    pub adapters: bool,
    /// Training mode: adapter dropout is active.
    pub train: bool,
}

/// A projection `y = x W (+ b)` with an optional LoRA (and DoRA magnitude) adapter.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[in, out]` (HF stores `[out, in]`).
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// LoRA A, stored `[in, r]` (PEFT `lora_A.weight` is `[r, in]`).
    pub lora_a: Option<Param<Tensor<B, 2>>>,
    /// LoRA B, stored `[r, out]` (PEFT `lora_B.weight` is `[out, r]`).
    pub lora_b: Option<Param<Tensor<B, 2>>>,
    /// DoRA magnitude m `[out]`.
    pub magnitude: Option<Param<Tensor<B, 1>>>,
    pub scaling: f64,
    pub dropout: f64,
}

impl<B: Backend> Linear<B> {
    pub fn forward(&self, x: Tensor<B, 2>, fwd: Fwd) -> Tensor<B, 2> {
        Self::forward_many(&[self], x, fwd).pop().expect("one projection")
    }

    /// Several projections of the same input (q/k/v, gate/up): on the CPU decode path their base
    /// matmuls share one pass of the kernel.
    pub fn forward_many(lins: &[&Self], x: Tensor<B, 2>, fwd: Fwd) -> Vec<Tensor<B, 2>> {
        // Every product runs in the input's (compute) dtype; f32 masters (adapters, full
        // fine-tuning weights) are cast on use. A cast to the same dtype is no op and no graph node.
        let dt = x.dtype();
        let ws: Vec<Tensor<B, 2>> = lins.iter().map(|l| l.weight.val().cast(dt)).collect();
        let refs: Vec<&Tensor<B, 2>> = ws.iter().collect();
        let bases = crate::cpu::small_matmul_many(&x, &refs)
            .unwrap_or_else(|| ws.iter().map(|w| matmul(x.clone(), w.clone())).collect());
        lins.iter()
            .zip(bases)
            .map(|(l, base)| l.finish(x.clone(), base, fwd))
            .collect()
    }

    /// Adapter and bias on top of the base projection `x W`.
    fn finish(&self, x: Tensor<B, 2>, base: Tensor<B, 2>, fwd: Fwd) -> Tensor<B, 2> {
        let dt = x.dtype();
        let out = match (&self.lora_a, &self.lora_b, fwd.adapters) {
            (Some(a), Some(b), true) => {
                let dropped = fwd.train && self.dropout > 0.0;
                let xd = if dropped {
                    let keep = x.random_like(Distribution::Bernoulli(1.0 - self.dropout));
                    x.clone() * keep / (1.0 - self.dropout)
                } else {
                    x
                };
                let (a, b) = (a.val().cast(dt), b.val().cast(dt));
                let lora = matmul(matmul(xd.clone(), a.clone()), b.clone());
                match &self.magnitude {
                    None => base + lora * self.scaling,
                    Some(m) => {
                        // DoRA (PEFT): W' = W + s·BA; scale = m / ||W'|| per output feature (norm over
                        // the input dim), the norm detached. out = base(x) + (scale-1)·xd W + scale·s·lora.
                        // The scale is formed in f32 against the f32 master m, and scale-1 is cast
                        // to the compute dtype on its own: a 5e-5 move of m survives f16/bf16.
                        let w = self.weight.val().cast(dt);
                        let delta = matmul(a, b).detach() * self.scaling;
                        let norm = tail_cpu::dora_norm(&w, &delta)
                            .unwrap_or_else(|| (w.clone().detach() + delta).powi_scalar(2).sum_dim(0).sqrt().detach());
                        let scale = m.val().unsqueeze::<2>() / norm.cast(m.val().dtype()); // [1, out]
                        if !dropped {
                            if let Some(out) = tail_cpu::dora_combine(&base, &lora, &scale, self.scaling) {
                                return self.add_bias(out);
                            }
                        }
                        let base_d = if dropped { matmul(xd, w) } else { base.clone() };
                        base + base_d * (scale.clone() - 1.0).cast(dt) + lora * scale.cast(dt) * self.scaling
                    }
                }
            }
            _ => base,
        };
        self.add_bias(out)
    }

    fn add_bias(&self, out: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.bias {
            Some(b) => {
                let dt = out.dtype();
                out + b.val().cast(dt).unsqueeze::<2>()
            }
            None => out,
        }
    }
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
}

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub input_layernorm: Param<Tensor<B, 1>>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: Param<Tensor<B, 1>>,
    pub mlp: Mlp<B>,
}

#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    /// `[vocab, hidden]`
    pub embed_tokens: Param<Tensor<B, 2>>,
    pub layers: Vec<Block<B>>,
    pub norm: Param<Tensor<B, 1>>,
    /// `None` when the output projection is tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    #[module(skip)]
    pub cfg: ModelConfig,
    /// Plain or blockwise attention in the training forward (`[model.options] attention`).
    #[module(skip)]
    pub attention: AttentionMode,
    /// The dtype of activations and frozen weights (`[backend] precision`). Trainable parameters
    /// stay f32 masters whatever this is (`load.rs`); log-probs are made in f32 (`generate.rs`).
    #[module(skip)]
    pub compute: FloatDType,
    /// The dtype of trainable parameters, gradients and log-probs: the device's default (f32;
    /// f64 in the gradient checks).
    #[module(skip)]
    pub master: FloatDType,
}

/// Pre-allocated keys/values of one layer, `[batch, kv_heads, capacity, head_dim]`, written in place.
/// On the CPU backend the cache lives on the host, for the fused attention.
pub struct KvCache<B: Backend> {
    k: Option<Tensor<B, 4>>,
    v: Option<Tensor<B, 4>>,
    host: Option<HostKv>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(cfg: &ModelConfig, batch: usize, capacity: usize, device: &B::Device) -> Self {
        if crate::host::is_cpu::<B>() {
            return Self {
                k: None,
                v: None,
                host: Some(HostKv::new(cfg, batch, capacity)),
            };
        }
        let shape = [batch, cfg.num_key_value_heads, capacity, cfg.head_dim];
        Self {
            k: Some(Tensor::zeros(shape, device)),
            v: Some(Tensor::zeros(shape, device)),
            host: None,
        }
    }
    /// A cache whose row `i` is a copy of this cache's row `rows[i]` (prefill shared by a group).
    pub fn gather_rows(&self, rows: &[usize], device: &B::Device) -> Self {
        if let Some(h) = &self.host {
            return Self {
                k: None,
                v: None,
                host: Some(h.gather_rows(rows)),
            };
        }
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [rows.len()]), device);
        let pick = |t: &Option<Tensor<B, 4>>| Some(t.clone().expect("cache").select(0, idx.clone()));
        Self {
            k: pick(&self.k),
            v: pick(&self.v),
            host: None,
        }
    }

    /// Write `[b, kvh, t, hd]` at `past..past+t` and return views of `0..past+t`.
    fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>, past: usize) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, h, t, d] = k.dims();
        // `take` keeps the buffer uniquely owned so the backend can write in place. The buffer is
        // made in the device's default dtype; the first write under f16/bf16 converts it once.
        let dt = k.dtype();
        let kc = self
            .k
            .take()
            .expect("cache")
            .cast(dt)
            .slice_assign([0..b, 0..h, past..past + t, 0..d], k);
        let vc = self
            .v
            .take()
            .expect("cache")
            .cast(dt)
            .slice_assign([0..b, 0..h, past..past + t, 0..d], v);
        let ks = kc.clone().slice([0..b, 0..h, 0..past + t, 0..d]);
        let vs = vc.clone().slice([0..b, 0..h, 0..past + t, 0..d]);
        self.k = Some(kc);
        self.v = Some(vc);
        (ks, vs)
    }
}

/// Host-side attention inputs for one forward of `t` new tokens after `past` cached ones.
pub struct Step<B: Backend> {
    pub batch: usize,
    pub t: usize,
    pub past: usize,
    /// RoPE tables `[b, 1, t, head_dim/2]`.
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
    /// `[b, past+t]`: 1 for a real key, 0 for padding. The masks below are made from it on first
    /// use, so the blockwise attention (which masks block by block) never makes an [t, s] one.
    key_ok: Tensor<B, 2>,
    valid: Vec<Vec<bool>>,
    /// Additive mask `[b, 1, 1, t, past+t]` (0 or -1e9), made on the device in the scores' dtype.
    mask: OnceCell<Tensor<B, 5>>,
    /// The RoPE tables and the mask on the host (for the fused CPU attention).
    cos_h: Vec<f32>,
    sin_h: Vec<f32>,
    mask_h: OnceCell<Vec<f32>>,
}

impl<B: Backend> Step<B> {
    /// `positions`: `[b*t]` position ids of the new tokens. `valid`: per row, whether each of the
    /// `past+t` key positions is a real token (false = padding). A query always sees itself so
    /// that rows of padding stay finite.
    pub fn new(cfg: &ModelConfig, positions: &[usize], valid: &[Vec<bool>], past: usize, device: &B::Device) -> Self {
        let b = valid.len();
        let t = positions.len() / b;
        let s = past + t;
        let half = cfg.head_dim / 2;
        // Checked when the model was loaded (`check_decoder`).
        let rope_scale = cfg.linear_rope_scale().unwrap_or(1.0);
        let mut cos = Vec::with_capacity(b * t * half);
        let mut sin = Vec::with_capacity(b * t * half);
        for &p in positions {
            let p = p as f64 / rope_scale;
            for i in 0..half {
                let inv = cfg.rope_theta.powf(-((2 * i) as f64) / cfg.head_dim as f64);
                let a = p * inv;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        for row in valid {
            assert_eq!(row.len(), s, "valid flags must cover past+t keys");
        }
        Step {
            batch: b,
            t,
            past,
            cos: Tensor::from_data(TensorData::new(cos.clone(), [b, 1, t, half]), device),
            sin: Tensor::from_data(TensorData::new(sin.clone(), [b, 1, t, half]), device),
            key_ok: Tensor::from_data(
                TensorData::new(
                    valid
                        .iter()
                        .flatten()
                        .map(|&ok| if ok { 1.0f32 } else { 0.0 })
                        .collect::<Vec<_>>(),
                    [b, s],
                ),
                device,
            ),
            valid: valid.to_vec(),
            mask: OnceCell::new(),
            cos_h: cos,
            sin_h: sin,
            mask_h: OnceCell::new(),
        }
    }

    /// The additive mask on the device, `[b, 1, 1, t, past+t]`, in the scores' dtype: made and
    /// cast once per step, not once per layer (one model, so one dtype, uses a step).
    fn mask(&self, dt: DType) -> Tensor<B, 5> {
        let s = self.past + self.t;
        self.mask
            .get_or_init(|| flash::bias(&self.key_ok, self.past, 0..self.t, 0..s).cast(dt))
            .clone()
    }

    /// The same mask on the host, `[b*t, past+t]` row-major. A query sees key j when j <= its
    /// position and the key is real or its own.
    fn host_mask(&self) -> &[f32] {
        self.mask_h.get_or_init(|| {
            let (t, past) = (self.t, self.past);
            let mut mask = Vec::with_capacity(self.batch * t * (past + t));
            for row in &self.valid {
                for i in 0..t {
                    for (j, &ok) in row.iter().enumerate() {
                        let allowed = j <= past + i && (ok || j == past + i);
                        mask.push(if allowed { 0.0f32 } else { -1e9 });
                    }
                }
            }
            mask
        })
    }

    fn host(&self) -> StepHost<'_> {
        StepHost {
            batch: self.batch,
            t: self.t,
            past: self.past,
            cos: &self.cos_h,
            sin: &self.sin_h,
            mask: self.host_mask(),
        }
    }

    fn rope(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        // Rotate-half RoPE (HF Qwen2/Llama layout; GGUF loaders undo llama.cpp's interleaving).
        let ([b, h, t, d], dt) = (x.dims(), x.dtype());
        let half = d / 2;
        let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
        let x2 = x.slice([0..b, 0..h, 0..t, half..d]);
        let (c, s) = (self.cos.clone().cast(dt), self.sin.clone().cast(dt));
        Tensor::cat(
            vec![x1.clone() * c.clone() - x2.clone() * s.clone(), x2 * c + x1 * s],
            3,
        )
    }
}

/// f16/bf16 widened to f32 for the reductions that overflow or lose too much in them; f32 and
/// f64 kept (the gradient checks run in f64).
pub(crate) fn widened(dt: DType) -> DType {
    match dt {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

fn rms_norm<B: Backend>(x: Tensor<B, 2>, w: &Param<Tensor<B, 1>>, eps: f64) -> Tensor<B, 2> {
    let fast = fused::rms_norm(&x, &w.val(), eps).or_else(|| tail_cpu::rms_norm(&x, &w.val(), eps));
    if let Some(y) = fast {
        return y;
    }
    // Normalised in f32 (as HF's Qwen2RMSNorm): x² overflows f16 for |x| > 256.
    let dt = x.dtype();
    let x = x.cast(widened(dt));
    let var = x.clone().powi_scalar(2).mean_dim(1);
    (x * (var + eps).sqrt().recip()).cast(dt) * w.val().cast(dt).unsqueeze::<2>()
}

impl<B: Backend> Attention<B> {
    fn forward(
        &self,
        x: Tensor<B, 2>,
        cfg: &ModelConfig,
        st: &Step<B>,
        cache: Option<&mut KvCache<B>>,
        fwd: Fwd,
        mode: AttentionMode,
    ) -> Tensor<B, 2> {
        let (b, t) = (st.batch, st.t);
        let (nh, kvh, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let g = nh / kvh;
        let [q, k, v]: [Tensor<B, 2>; 3] = Linear::forward_many(&[&self.q_proj, &self.k_proj, &self.v_proj], x, fwd)
            .try_into()
            .expect("q, k, v");
        if crate::host::is_cpu::<B>() {
            let cache = cache.map(|c| c.host.as_mut().expect("a CPU cache is on the host"));
            let out = fused::attention(&q, &k, &v, cfg, &st.host(), cache).expect("CPU tensors");
            return self.o_proj.forward(out, fwd);
        }
        // Training on the CPU rotates the projections' rows in one pass each (tail_cpu.rs).
        let rows = |x: &Tensor<B, 2>| tail_cpu::rope(x, &st.cos_h, &st.sin_h, hd);
        let heads = |x: Tensor<B, 2>, n: usize| x.reshape([b, t, n, hd]).swap_dims(1, 2);
        let (q, k) = match (rows(&q), rows(&k)) {
            (Some(q), Some(k)) => (heads(q, nh), heads(k, kvh)),
            _ => (st.rope(heads(q, nh)), st.rope(heads(k, kvh))),
        };
        let v = heads(v, kvh);
        let (k, v) = match cache {
            Some(c) => c.append(k, v, st.past),
            None => (k, v),
        };
        let s = k.dims()[2];
        let dt = q.dtype();
        if mode.blockwise_for(t, s) {
            // Its online softmax and log-sum-exp need f32 (a hidden block's -inf would give NaN
            // in f16); q, k, v are cast for it and the output back.
            let spec = flash::Spec::for_shapes(b, nh, t, s, hd, st.past, g);
            let wide = |x: &Tensor<B, 4>| x.clone().cast(widened(dt));
            if let Some(out) = flash::try_attention(&wide(&q), &wide(&k), &wide(&v), &st.key_ok, spec) {
                return self
                    .o_proj
                    .forward(out.cast(dt).swap_dims(1, 2).reshape([b * t, nh * hd]), fwd);
            }
        }
        // GQA without copying K/V: query heads of one kv group are stacked along the row axis.
        let q = q.reshape([b, kvh, g * t, hd]);
        let scores = matmul(q, k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt());
        let scores = scores.reshape([b, kvh, g, t, s]) + st.mask(dt);
        let probs = softmax(scores, 4).reshape([b, kvh, g * t, s]);
        let out = matmul(probs, v)
            .reshape([b, nh, t, hd])
            .swap_dims(1, 2)
            .reshape([b * t, nh * hd]);
        self.o_proj.forward(out, fwd)
    }
}

impl<B: Backend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 2>, fwd: Fwd) -> Tensor<B, 2> {
        let [gate, up]: [Tensor<B, 2>; 2] = Linear::forward_many(&[&self.gate_proj, &self.up_proj], x, fwd)
            .try_into()
            .expect("gate, up");
        let h = fused::swiglu(&gate, &up)
            .or_else(|| tail_cpu::swiglu(&gate, &up))
            .unwrap_or_else(|| silu(gate) * up);
        self.down_proj.forward(h, fwd)
    }
}

impl<B: Backend> Transformer<B> {
    /// Final-normed hidden states `[b*t, hidden]` of `ids` (`[b*t]`, row-major).
    pub fn hidden(&self, ids: &[u32], st: &Step<B>, mut caches: Option<&mut [KvCache<B>]>, fwd: Fwd) -> Tensor<B, 2> {
        let device = self.embed_tokens.val().device();
        let idx: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [ids.len()]), &device);
        let mut x = self.embed_tokens.val().select(0, idx).cast(self.compute);
        let eps = self.cfg.rms_norm_eps;
        for (i, layer) in self.layers.iter().enumerate() {
            let cache = caches.as_mut().map(|c| &mut c[i]);
            let h = layer.self_attn.forward(
                rms_norm(x.clone(), &layer.input_layernorm, eps),
                &self.cfg,
                st,
                cache,
                fwd,
                self.attention,
            );
            x = x + h;
            let h = layer
                .mlp
                .forward(rms_norm(x.clone(), &layer.post_attention_layernorm, eps), fwd);
            x = x + h;
        }
        rms_norm(x, &self.norm, eps)
    }

    /// Logits `[rows, vocab]` of final hidden states.
    pub fn logits(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.lm_head {
            Some(l) => l.forward(
                h,
                Fwd {
                    adapters: false,
                    train: false,
                },
            ),
            None => {
                let e = self.embed_tokens.val().cast(h.dtype());
                crate::cpu::small_matmul_nt(&h, &e).unwrap_or_else(|| matmul(h, e.transpose()))
            }
        }
    }

    /// Whether the output projection's weights train (full fine-tuning; adapters never touch it).
    pub fn head_trains(&self) -> bool {
        match &self.lm_head {
            Some(l) => l.weight.val().is_require_grad(),
            None => self.embed_tokens.val().is_require_grad(),
        }
    }

    /// The output projection's row of each token id, `[n, hidden]` (detached).
    pub fn head_rows(&self, ids: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        match &self.lm_head {
            Some(l) => l.weight.val().detach().select(1, ids).transpose(),
            None => self.embed_tokens.val().detach().select(0, ids),
        }
    }

    /// `p W_out^T`: per row, the output rows averaged under the weights `p` (`[rows, vocab]` ->
    /// `[rows, hidden]`, detached). With `p = softmax(logits)` this is the gradient of the
    /// log-sum-exp with respect to the hidden state.
    pub fn head_expect(&self, p: Tensor<B, 2>) -> Tensor<B, 2> {
        // p (f32 from the log-softmax) in the weights' dtype: mixed operands are an error on the
        // CPU and silently wrong on wgpu/cuda.
        match &self.lm_head {
            // W is [hidden, vocab]: W p^T keeps the big operand contiguous.
            Some(l) => {
                let w = l.weight.val().detach();
                let p = p.cast(w.dtype());
                matmul(w, p.transpose()).transpose()
            }
            None => {
                let e = self.embed_tokens.val().detach();
                matmul(p.cast(e.dtype()), e)
            }
        }
    }

    pub fn device(&self) -> B::Device {
        self.embed_tokens.val().device()
    }
}

/// A parameter by its (HF/PEFT-style) name, for traversal.
pub enum ParamMut<'a, B: Backend> {
    D1(&'a mut Param<Tensor<B, 1>>),
    D2(&'a mut Param<Tensor<B, 2>>),
}

impl<B: Backend> ParamMut<'_, B> {
    pub fn id(&self) -> ParamId {
        match self {
            ParamMut::D1(p) => p.id,
            ParamMut::D2(p) => p.id,
        }
    }
    pub fn require_grad(&self) -> bool {
        match self {
            ParamMut::D1(p) => p.val().is_require_grad(),
            ParamMut::D2(p) => p.val().is_require_grad(),
        }
    }
    pub fn shape(&self) -> Vec<usize> {
        match self {
            ParamMut::D1(p) => p.val().dims().to_vec(),
            ParamMut::D2(p) => p.val().dims().to_vec(),
        }
    }
    pub fn to_vec(&self) -> Vec<f32> {
        let data = match self {
            ParamMut::D1(p) => p.val().into_data(),
            ParamMut::D2(p) => p.val().into_data(),
        };
        data.iter::<f32>().collect()
    }
    /// Replace the value (same id and gradient requirement).
    pub fn set(&mut self, vals: Vec<f32>) {
        let shape = self.shape();
        match self {
            ParamMut::D1(p) => {
                let (rg, dev, dt) = (p.val().is_require_grad(), p.val().device(), p.val().dtype());
                let t = Tensor::from_data(TensorData::new(vals, [shape[0]]), (&dev, dt)).set_require_grad(rg);
                **p = Param::initialized(p.id, t);
            }
            ParamMut::D2(p) => {
                let (rg, dev, dt) = (p.val().is_require_grad(), p.val().device(), p.val().dtype());
                let t = Tensor::from_data(TensorData::new(vals, [shape[0], shape[1]]), (&dev, dt)).set_require_grad(rg);
                **p = Param::initialized(p.id, t);
            }
        }
    }
}

impl<B: Backend> Linear<B> {
    fn visit(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, B>)) {
        f(&format!("{prefix}.weight"), ParamMut::D2(&mut self.weight));
        if let Some(p) = &mut self.bias {
            f(&format!("{prefix}.bias"), ParamMut::D1(p));
        }
        if let Some(p) = &mut self.lora_a {
            f(&format!("{prefix}.lora_A.weight"), ParamMut::D2(p));
        }
        if let Some(p) = &mut self.lora_b {
            f(&format!("{prefix}.lora_B.weight"), ParamMut::D2(p));
        }
        if let Some(p) = &mut self.magnitude {
            f(&format!("{prefix}.lora_magnitude_vector"), ParamMut::D1(p));
        }
    }
}

impl<B: Backend> Transformer<B> {
    /// Every parameter under its HF name (adapter tensors under PEFT-style suffixes, in our layout).
    pub fn visit_params(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, B>)) {
        f("model.embed_tokens.weight", ParamMut::D2(&mut self.embed_tokens));
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            f(
                &format!("{p}.input_layernorm.weight"),
                ParamMut::D1(&mut l.input_layernorm),
            );
            for (n, lin) in l.self_attn.linears_mut() {
                lin.visit(&format!("{p}.self_attn.{n}"), f);
            }
            f(
                &format!("{p}.post_attention_layernorm.weight"),
                ParamMut::D1(&mut l.post_attention_layernorm),
            );
            for (n, lin) in l.mlp.linears_mut() {
                lin.visit(&format!("{p}.mlp.{n}"), f);
            }
        }
        f("model.norm.weight", ParamMut::D1(&mut self.norm));
        if let Some(h) = &mut self.lm_head {
            h.visit("lm_head", f);
        }
    }

    /// Every adaptable projection with its PEFT module name (`q_proj`, ...) and full path.
    pub fn linears_mut(&mut self) -> Vec<(&'static str, String, &mut Linear<B>)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            for (n, lin) in l.self_attn.linears_mut() {
                out.push((n, format!("model.layers.{i}.self_attn.{n}"), lin));
            }
            for (n, lin) in l.mlp.linears_mut() {
                out.push((n, format!("model.layers.{i}.mlp.{n}"), lin));
            }
        }
        out
    }
}

impl<B: Backend> Attention<B> {
    fn linears_mut(&mut self) -> [(&'static str, &mut Linear<B>); 4] {
        [
            ("q_proj", &mut self.q_proj),
            ("k_proj", &mut self.k_proj),
            ("v_proj", &mut self.v_proj),
            ("o_proj", &mut self.o_proj),
        ]
    }
}

impl<B: Backend> Mlp<B> {
    fn linears_mut(&mut self) -> [(&'static str, &mut Linear<B>); 3] {
        [
            ("gate_proj", &mut self.gate_proj),
            ("up_proj", &mut self.up_proj),
            ("down_proj", &mut self.down_proj),
        ]
    }
}
