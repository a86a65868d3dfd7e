//! `Policy` over a `Transformer` kept on the autodiff backend. Inference (sampling, reference and
//! old-policy log-probs) runs on `model.valid()`, the same weights on the inner backend (no copy,
//! no graph); the reference policy is the same model with adapters switched off. Rollout and the
//! old-policy log-probs use a copy with the adapters merged into the weights (`merge.rs`), made
//! once per optimiser step.

use crate::generate::{completion_logprobs, generate, trim};
use crate::load::resolve_targets;
use crate::loss_scale::LossScaler;
use crate::model::{Fwd, ParamMut, Transformer};
use crate::weights::{write_safetensors, SafetensorsSource, WeightSource};
use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use recode_core::api::{Generation, OptimStats, Policy, SamplingParams, Sequence, TextCodec};
use recode_core::spec::{AdapterKind, AdapterSpec, TrainingSpec};
use std::path::Path;

type AD<B> = Autodiff<B>;
type Optim<B> = OptimizerAdaptor<AdamW, Transformer<AD<B>>, AD<B>>;

pub struct TransformerPolicy<B: Backend> {
    model: Option<Transformer<AD<B>>>,
    codec: Box<dyn TextCodec>,
    optim: Option<Optim<B>>,
    accum: GradientsAccumulator<Transformer<AD<B>>>,
    pending: usize,
    adapter: AdapterSpec,
    /// The inference model with adapters merged; dropped whenever the weights change.
    merged: Option<Transformer<B>>,
    /// Full fine-tuning: the initial weights, the reference policy. It shares tensors with the
    /// live model until the first update replaces them, then costs one copy of the weights.
    frozen: Option<Transformer<B>>,
    /// Rows per forward in `logprobs` (bounds activation memory).
    pub logprob_chunk: usize,
    /// Dynamic loss scaling, when the model computes in f16.
    pub scaler: Option<LossScaler>,
}

/// The full fine-tuning reference in the compute dtype: its f32 masters are only read, so a
/// bf16/f16 copy computes the same forward (every product casts to the compute dtype anyway) in
/// half the memory. No copy at f32.
fn in_compute_dtype<B: Backend>(mut m: Transformer<B>) -> Transformer<B> {
    let dt = m.compute;
    if DType::from(dt) == DType::from(m.master) {
        return m;
    }
    m.visit_params(&mut |_, p| match p {
        ParamMut::D1(q) => *q = burn::module::Param::initialized(q.id, q.val().cast(dt)),
        ParamMut::D2(q) => *q = burn::module::Param::initialized(q.id, q.val().cast(dt)),
    });
    m
}

/// The f16 loss scaler's state in a checkpoint, so that a resume continues with the same scale.
const LOSS_SCALE_FILE: &str = "loss_scale.json";
/// The adapter weights of a PEFT folder (`export_peft`, or PEFT's own `save_pretrained`).
const PEFT_WEIGHTS: &str = "adapter_model.safetensors";

/// How trainable tensors are named and laid out in a file.
#[derive(Clone, Copy, PartialEq)]
enum TensorLayout {
    /// A checkpoint: our names, LoRA A as `[in, r]` and B as `[r, out]`.
    Ours,
    /// PEFT: `base_model.model.` + our names, matrices in nn.Linear layout (transposed).
    Peft,
}

fn adamw(t: &TrainingSpec) -> AdamWConfig {
    AdamWConfig::new()
        .with_beta_1(t.adam_beta1 as f32)
        .with_beta_2(t.adam_beta2 as f32)
        .with_epsilon(t.adam_epsilon as f32)
        .with_weight_decay(t.weight_decay as f32)
}

impl<B: Backend> TransformerPolicy<B> {
    /// Sets every trainable tensor from `src`; each must be there with the right shape, and every
    /// tensor of `src` must be used (a file of another adapter kind, rank or target set is an error,
    /// not a partial load).
    fn set_trainable(&mut self, src: &SafetensorsSource, dir: &Path, layout: TensorLayout) -> Result<()> {
        let mut err: Option<anyhow::Error> = None;
        let mut used = std::collections::HashSet::new();
        self.model_mut().visit_params(&mut |n, mut p| {
            if !p.require_grad() || err.is_some() {
                return;
            }
            let key = match layout {
                TensorLayout::Ours => n.to_string(),
                TensorLayout::Peft => format!("base_model.model.{n}"),
            };
            let want = p.shape();
            match src.tensor(&key) {
                Ok((shape, vals)) if layout == TensorLayout::Peft && want.len() == 2 && shape == [want[1], want[0]] => {
                    // PEFT [out, in] back to our [in, r] / [r, out].
                    let (r, c) = (want[0], want[1]);
                    let mut t = vec![0f32; vals.len()];
                    for i in 0..r {
                        for j in 0..c {
                            t[i * c + j] = vals[j * r + i];
                        }
                    }
                    used.insert(key);
                    p.set(t)
                }
                // Vectors (DoRA magnitudes) are stored alike in both layouts.
                Ok((shape, vals)) if shape == want && (layout == TensorLayout::Ours || want.len() != 2) => {
                    used.insert(key);
                    p.set(vals)
                }
                Ok((shape, _)) => {
                    err = Some(anyhow::anyhow!(
                        "{}: tensor `{key}` has shape {shape:?}, this policy's `{n}` is {want:?} (another rank?)",
                        dir.display()
                    ))
                }
                Err(e) => {
                    err = Some(e.context(format!(
                        "{} lacks trainable tensor `{key}` (another adapter kind or target_modules?)",
                        dir.display()
                    )))
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        let mut unused: Vec<&str> = src.names().filter(|k| !used.contains(*k)).collect();
        if !unused.is_empty() {
            unused.sort();
            bail!(
                "{}: {} tensor(s) this policy does not train, e.g. `{}` (another adapter kind or target_modules?)",
                dir.display(),
                unused.len(),
                unused[0]
            );
        }
        Ok(())
    }

    pub fn new(
        model: Transformer<AD<B>>,
        codec: Box<dyn TextCodec>,
        adapter: AdapterSpec,
        training: &TrainingSpec,
    ) -> Result<Self> {
        if training.optimizer != "adamw" {
            bail!("optimizer `{}` is not built in (only adamw)", training.optimizer);
        }
        let frozen = (adapter.kind == AdapterKind::Full).then(|| in_compute_dtype(model.valid()));
        let scaler = (model.compute == FloatDType::F16).then(LossScaler::default);
        Ok(Self {
            model: Some(model),
            codec,
            optim: Some(adamw(training).init()),
            accum: GradientsAccumulator::new(),
            pending: 0,
            adapter,
            merged: None,
            frozen,
            logprob_chunk: 8,
            scaler,
        })
    }

    pub fn model(&self) -> &Transformer<AD<B>> {
        self.model.as_ref().expect("model present")
    }
    pub fn model_mut(&mut self) -> &mut Transformer<AD<B>> {
        self.merged = None;
        self.model.as_mut().expect("model present")
    }
    /// The model on the inner backend (shares weights).
    pub fn inference_model(&self) -> Transformer<B> {
        self.model().valid()
    }

    fn has_adapters(&self) -> bool {
        matches!(self.adapter.kind, AdapterKind::Lora | AdapterKind::Dora)
    }

    /// The inference model for `adapters`: with adapters on, the merged copy (cached until the
    /// weights change); off, the reference: the base model without its adapters, or for full
    /// fine-tuning the frozen initial weights.
    pub fn inference_model_for(&mut self, adapters: bool) -> Transformer<B> {
        if let (false, Some(f)) = (adapters, &self.frozen) {
            return f.clone();
        }
        if !(adapters && self.has_adapters()) {
            return self.inference_model();
        }
        if self.merged.is_none() {
            self.merged = Some(self.inference_model().with_adapters_merged());
        }
        self.merged.clone().expect("just merged")
    }

    /// (name, shape, values) of every trainable parameter, in our storage layout.
    pub fn trainable_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut m = self.model().clone();
        let mut out = vec![];
        m.visit_params(&mut |n, p| {
            if p.require_grad() {
                out.push((n.to_string(), p.shape(), p.to_vec()));
            }
        });
        out
    }

    /// Ids of trainable parameters with their rank.
    fn trainable_ids(&self) -> Vec<(ParamId, usize)> {
        let mut m = self.model().clone();
        let mut out = vec![];
        m.visit_params(&mut |_, p| {
            if p.require_grad() {
                out.push((p.id(), p.shape().len()));
            }
        });
        out
    }
}

impl<B: Backend> Policy for TransformerPolicy<B> {
    fn codec(&self) -> &dyn TextCodec {
        self.codec.as_ref()
    }

    fn generate(&mut self, prompts: &[Vec<u32>], params: &SamplingParams) -> Result<Vec<Generation>> {
        let m = self.inference_model_for(true);
        generate(&m, self.codec.as_ref(), prompts, params, true)
    }

    fn logprobs(&mut self, seqs: &[Sequence], adapters: bool) -> Result<Vec<Vec<f32>>> {
        let m = self.inference_model_for(adapters);
        let pad = self.codec.pad_id();
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(self.logprob_chunk.max(1)) {
            if chunk.iter().all(|s| s.completion.is_empty()) {
                out.extend(chunk.iter().map(|_| vec![]));
                continue;
            }
            let lp = completion_logprobs(&m, chunk, pad, Fwd { adapters, train: false })?;
            out.extend(trim(lp, chunk));
        }
        Ok(out)
    }

    fn accumulate_gradients(
        &mut self,
        seqs: &[Sequence],
        loss_grad: &mut recode_core::api::LossGradFn<'_>,
    ) -> Result<()> {
        if seqs.is_empty() || seqs.iter().all(|s| s.completion.is_empty()) {
            return Ok(());
        }
        if self.trainable_parameters() == 0 {
            bail!("this policy has no trainable parameters (adapter kind `none`)");
        }
        let pad = self.codec.pad_id();
        let model = self.model.as_ref().expect("model present");
        let lp = completion_logprobs(
            model,
            seqs,
            pad,
            Fwd {
                adapters: true,
                train: true,
            },
        )?;
        let [b, cmax] = lp.dims();
        let values = trim(lp.clone().detach(), seqs);
        let grads = loss_grad(&values)?;
        if grads.len() != seqs.len() {
            bail!("loss gradient has {} rows, expected {}", grads.len(), seqs.len());
        }
        let mut g = vec![0f32; b * cmax];
        for (r, (row, s)) in grads.iter().zip(seqs).enumerate() {
            if row.len() != s.completion.len() {
                bail!(
                    "loss gradient row {r} has {} values, expected {}",
                    row.len(),
                    s.completion.len()
                );
            }
            g[r * cmax..r * cmax + row.len()].copy_from_slice(row);
        }
        if let Some(sc) = &self.scaler {
            let scale = sc.scale as f32;
            g.iter_mut().for_each(|x| *x *= scale);
        }
        let g = Tensor::<AD<B>, 2>::from_data(TensorData::new(g, [b, cmax]), (&lp.device(), lp.dtype()));
        let surrogate = (lp * g).sum();
        let grads = GradientsParams::from_grads(surrogate.backward(), model);
        self.accum.accumulate(model, grads);
        self.pending += 1;
        Ok(())
    }

    fn optimizer_step(&mut self, lr: f64, max_grad_norm: Option<f64>) -> Result<OptimStats> {
        let mut grads = self.accum.grads();
        let had = std::mem::take(&mut self.pending) > 0;
        // Global-norm clipping as torch.nn.utils.clip_grad_norm_ (TRL's max_grad_norm), the loss
        // scale divided out in the same pass.
        let inv_scale = self.scaler.as_ref().map_or(1.0, |s| 1.0 / s.scale);
        let norm = burn::global_norm::clip_scaled::<B>(&mut grads, &self.trainable_ids(), max_grad_norm, inv_scale);
        if !had || !norm.is_finite() {
            if let (true, Some(sc)) = (had, self.scaler.as_mut()) {
                sc.backoff();
            }
            return Ok(OptimStats {
                grad_norm: norm,
                lr,
                applied: false,
            });
        }
        if let Some(sc) = self.scaler.as_mut() {
            sc.grow();
        }
        self.merged = None;
        let model = self.model.take().expect("model present");
        let optim = self.optim.as_mut().expect("optimizer present");
        self.model = Some(optim.step(lr, model, grads));
        Ok(OptimStats {
            grad_norm: norm,
            lr,
            applied: true,
        })
    }

    fn discard_gradients(&mut self) -> Result<()> {
        let _ = self.accum.grads();
        self.pending = 0;
        Ok(())
    }

    fn trainable_parameters(&self) -> usize {
        // Shapes only: no values leave the device (this runs before every backward pass).
        let mut m = self.model().clone();
        let mut n = 0;
        m.visit_params(&mut |_, p| {
            if p.require_grad() {
                n += p.shape().iter().product::<usize>();
            }
        });
        n
    }

    fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_safetensors(&dir.join("trainable.safetensors"), &self.trainable_tensors())?;
        let rec = self.optim.as_ref().expect("optimizer present").to_record();
        NamedMpkFileRecorder::<FullPrecisionSettings>::new()
            .record(rec, dir.join("optimizer"))
            .map_err(|e| anyhow::anyhow!("saving optimizer state to {}: {e}", dir.display()))?;
        if let Some(sc) = &self.scaler {
            std::fs::write(dir.join(LOSS_SCALE_FILE), serde_json::to_string(sc)?)
                .with_context(|| format!("writing {}", dir.join(LOSS_SCALE_FILE).display()))?;
        }
        Ok(())
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        let src = SafetensorsSource::from_files(&[dir.join("trainable.safetensors")])?;
        self.set_trainable(&src, dir, TensorLayout::Ours)?;
        let device = self.model().device();
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new()
            .load(dir.join("optimizer"), &device)
            .map_err(|e| anyhow::anyhow!("loading optimizer state from {}: {e}", dir.display()))?;
        let optim = self.optim.take().expect("optimizer present");
        self.optim = Some(optim.load_record(rec));
        if self.scaler.is_some() {
            let path = dir.join(LOSS_SCALE_FILE);
            // A checkpoint saved at another precision has none: start from the initial scale.
            if path.exists() {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                self.scaler =
                    Some(serde_json::from_str(&text).with_context(|| {
                        format!("{}: expected {{\"scale\": number, \"good\": count}}", path.display())
                    })?);
            }
        }
        Ok(())
    }

    fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        let ours = dir.join("trainable.safetensors");
        let peft = dir.join(PEFT_WEIGHTS);
        if ours.exists() {
            let src = SafetensorsSource::from_files(&[ours])?;
            self.set_trainable(&src, dir, TensorLayout::Ours)
        } else if peft.exists() {
            let src = SafetensorsSource::from_files(&[peft])?;
            self.set_trainable(&src, dir, TensorLayout::Peft)
        } else {
            bail!(
                "{}: neither trainable.safetensors (a checkpoint's policy folder) nor {PEFT_WEIGHTS} (a PEFT folder)",
                dir.display()
            )
        }
    }

    fn export_peft(&self, dir: &Path) -> Result<()> {
        if !self.has_adapters() {
            bail!(
                "this policy has no adapters to export (adapter kind {:?})",
                self.adapter.kind
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut out = vec![];
        for (name, shape, vals) in self.trainable_tensors() {
            let key = format!("base_model.model.{name}");
            if shape.len() == 2 {
                // Stored [in, r] / [r, out]; PEFT wants nn.Linear layout [out, in].
                let (r, c) = (shape[0], shape[1]);
                let mut t = vec![0f32; vals.len()];
                for i in 0..r {
                    for j in 0..c {
                        t[j * r + i] = vals[i * c + j];
                    }
                }
                out.push((key, vec![c, r], t));
            } else {
                out.push((key, shape, vals));
            }
        }
        write_safetensors(&dir.join(PEFT_WEIGHTS), &out)?;
        let cfg = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.adapter.rank,
            "lora_alpha": self.adapter.alpha,
            "lora_dropout": self.adapter.dropout,
            "target_modules": resolve_targets(&self.adapter)?,
            "use_dora": self.adapter.kind == AdapterKind::Dora,
            "use_rslora": false,
            "bias": "none",
            "fan_in_fan_out": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "modules_to_save": null,
            "base_model_name_or_path": null,
        });
        std::fs::write(dir.join("adapter_config.json"), serde_json::to_string_pretty(&cfg)?)?;
        Ok(())
    }
}

/// `f(name, shape)`: new values for a parameter, or None to keep it.
pub type ParamValues<'a> = dyn FnMut(&str, &[usize]) -> Option<Vec<f32>> + 'a;

/// Test/diagnostic hook: overwrite parameters by name (our layout) with `f(name, shape) -> values`.
pub fn set_params<B: Backend>(policy: &mut TransformerPolicy<B>, f: &mut ParamValues<'_>) {
    policy.model_mut().visit_params(&mut |n, mut p: ParamMut<'_, AD<B>>| {
        if let Some(v) = f(n, &p.shape()) {
            p.set(v);
        }
    });
}
