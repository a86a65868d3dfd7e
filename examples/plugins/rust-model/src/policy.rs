//! `Policy` over the window MLP: sampling, log-probs with autodiff, AdamW, checkpoints.
//! The reference policy (for a KL term) is a frozen copy of the initial weights.

use crate::model::{window, WindowMlp};
use crate::Options;
use anyhow::{anyhow, bail, Context, Result};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recode_core::api::{FinishReason, Generation, OptimStats, Policy, SamplingParams, Sequence, TextCodec};
use recode_core::spec::TrainingSpec;
use recode_model_formats::Codec;
use std::path::Path;

type AD<B> = Autodiff<B>;

pub struct WindowPolicy<B: Backend> {
    model: Option<WindowMlp<AD<B>>>,
    reference: WindowMlp<B>,
    optim: OptimizerAdaptor<AdamW, WindowMlp<AD<B>>, AD<B>>,
    accum: GradientsAccumulator<WindowMlp<AD<B>>>,
    pending: usize,
    codec: Codec,
}

impl<B: Backend> WindowPolicy<B> {
    pub fn new(codec: Codec, o: &Options, t: &TrainingSpec, seed: u64, device: &B::Device) -> Result<Self> {
        if t.optimizer != "adamw" {
            bail!(
                "training.optimizer `{}`: the window-mlp plugin supports adamw only",
                t.optimizer
            );
        }
        AD::<B>::seed(device, seed);
        let model = WindowMlp::<AD<B>>::new(codec.vocab_size(), o.context, o.embedding, o.hidden, device);
        let optim = AdamWConfig::new()
            .with_beta_1(t.adam_beta1 as f32)
            .with_beta_2(t.adam_beta2 as f32)
            .with_epsilon(t.adam_epsilon as f32)
            .with_weight_decay(t.weight_decay as f32)
            .init();
        Ok(Self {
            reference: model.valid(),
            model: Some(model),
            optim,
            accum: GradientsAccumulator::new(),
            pending: 0,
            codec,
        })
    }

    fn model(&self) -> &WindowMlp<AD<B>> {
        self.model.as_ref().expect("model present")
    }

    /// Log-probs `[rows, cmax]` of each completion token (0 past a row's end).
    fn completion_logprobs<M: Backend>(m: &WindowMlp<M>, seqs: &[Sequence], pad: u32) -> Tensor<M, 2> {
        let cmax = seqs.iter().map(|s| s.completion.len()).max().unwrap_or(0).max(1);
        let (mut windows, mut targets) = (vec![], vec![]);
        for s in seqs {
            let all: Vec<u32> = s.prompt.iter().chain(&s.completion).copied().collect();
            for j in 0..cmax {
                let end = s.prompt.len() + j.min(s.completion.len());
                windows.extend(window(&all, end, m.context(), pad));
                targets.push(s.completion.get(j).copied().unwrap_or(pad) as i64);
            }
        }
        let lp = log_softmax(m.logits(&windows), 1);
        let targets = Tensor::<M, 2, Int>::from_data(TensorData::new(targets, [seqs.len() * cmax, 1]), &lp.device());
        lp.gather(1, targets).reshape([seqs.len(), cmax])
    }
}

fn to_rows<M: Backend>(lp: Tensor<M, 2>, seqs: &[Sequence]) -> Result<Vec<Vec<f32>>> {
    let cmax = lp.dims()[1];
    let flat: Vec<f32> = lp
        .into_data()
        .to_vec()
        .map_err(|e| anyhow!("reading log-probs: {e:?}"))?;
    Ok(seqs
        .iter()
        .enumerate()
        .map(|(r, s)| flat[r * cmax..r * cmax + s.completion.len()].to_vec())
        .collect())
}

/// Sample one token from raw logits; returns (token, its log-prob under the raw logits).
fn sample(logits: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> (u32, f32) {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let log_z = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let pick = if p.temperature <= 0.0 {
        (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap_or(0)
    } else {
        let t = p.temperature as f32;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let weights: Vec<f64> = order.iter().map(|&i| (((logits[i] - max) / t) as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        // Smallest prefix of the sorted tokens whose probability reaches top_p.
        let (mut keep, mut acc) = (0, 0.0);
        while keep < order.len() && (keep == 0 || acc < p.top_p * total) {
            acc += weights[keep];
            keep += 1;
        }
        let mut u = rng.gen::<f64>() * acc;
        let mut chosen = order[keep - 1];
        for (k, w) in weights[..keep].iter().enumerate() {
            if u < *w {
                chosen = order[k];
                break;
            }
            u -= w;
        }
        chosen
    };
    (pick as u32, logits[pick] - log_z)
}

impl<B: Backend> Policy for WindowPolicy<B> {
    fn codec(&self) -> &dyn TextCodec {
        &self.codec
    }

    fn generate(&mut self, prompts: &[Vec<u32>], p: &SamplingParams) -> Result<Vec<Generation>> {
        let m = self.model().valid();
        let (pad, mut stop) = (self.codec.pad_id(), self.codec.eos_ids());
        stop.extend(&p.stop_token_ids);
        let vocab = self.codec.vocab_size();
        // Without row seeds, row r uses seed + r; with them, the named seed and stream.
        let mut rngs: Vec<ChaCha8Rng> = (0..prompts.len())
            .map(|r| {
                if p.row_seeds.is_empty() {
                    return Ok(ChaCha8Rng::seed_from_u64(p.seed.wrapping_add(r as u64)));
                }
                let rs = p.row_seed(r, prompts.len())?;
                let mut g = ChaCha8Rng::seed_from_u64(rs.seed);
                g.set_stream(rs.stream);
                Ok(g)
            })
            .collect::<Result<_>>()?;
        let mut out: Vec<Generation> = prompts
            .iter()
            .map(|_| Generation {
                tokens: vec![],
                text: String::new(),
                logprobs: vec![],
                finish: FinishReason::Length,
            })
            .collect();
        let mut active: Vec<usize> = (0..prompts.len()).collect();
        for _ in 0..p.max_new_tokens {
            if active.is_empty() {
                break;
            }
            let mut windows = vec![];
            for &r in &active {
                let all: Vec<u32> = prompts[r].iter().chain(&out[r].tokens).copied().collect();
                windows.extend(window(&all, all.len(), m.context(), pad));
            }
            let logits: Vec<f32> = m
                .logits(&windows)
                .into_data()
                .to_vec()
                .map_err(|e| anyhow!("reading logits: {e:?}"))?;
            let mut still = vec![];
            for (k, &r) in active.iter().enumerate() {
                let (tok, lp) = sample(&logits[k * vocab..(k + 1) * vocab], p, &mut rngs[r]);
                let g = &mut out[r];
                g.tokens.push(tok);
                g.logprobs.push(lp);
                if stop.contains(&tok) {
                    g.finish = FinishReason::Eos;
                    continue;
                }
                g.text = self.codec.decode(&g.tokens)?;
                if p.stop_strings.iter().any(|s| g.text.contains(s.as_str())) {
                    g.finish = FinishReason::StopString;
                    continue;
                }
                still.push(r);
            }
            active = still;
        }
        for g in &mut out {
            // The text excludes a final EOS token, as the built-in model's does.
            let n = g.tokens.len() - usize::from(g.finish == FinishReason::Eos);
            g.text = self.codec.decode(&g.tokens[..n])?;
        }
        Ok(out)
    }

    fn logprobs(&mut self, seqs: &[Sequence], adapters: bool) -> Result<Vec<Vec<f32>>> {
        let pad = self.codec.pad_id();
        if adapters {
            to_rows(Self::completion_logprobs(&self.model().valid(), seqs, pad), seqs)
        } else {
            to_rows(Self::completion_logprobs(&self.reference, seqs, pad), seqs)
        }
    }

    fn accumulate_gradients(
        &mut self,
        seqs: &[Sequence],
        loss_grad: &mut recode_core::api::LossGradFn<'_>,
    ) -> Result<()> {
        if seqs.iter().all(|s| s.completion.is_empty()) {
            return Ok(());
        }
        let model = self.model.as_ref().expect("model present");
        let lp = Self::completion_logprobs(model, seqs, self.codec.pad_id());
        let [rows, cmax] = lp.dims();
        let grads = loss_grad(&to_rows(lp.clone().detach(), seqs)?)?;
        let mut g = vec![0f32; rows * cmax];
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
        let g = Tensor::<AD<B>, 2>::from_data(TensorData::new(g, [rows, cmax]), &lp.device());
        // d(sum(g * logp))/d(theta) = sum_t g_t * d(logp_t)/d(theta): the algorithm's loss gradient.
        let grads = GradientsParams::from_grads((lp * g).sum().backward(), model);
        self.accum.accumulate(model, grads);
        self.pending += 1;
        Ok(())
    }

    fn optimizer_step(&mut self, lr: f64, max_grad_norm: Option<f64>) -> Result<OptimStats> {
        let mut grads = self.accum.grads();
        let had = std::mem::take(&mut self.pending) > 0;
        let norm = burn::global_norm::clip::<B>(&mut grads, &self.model().param_ids(), max_grad_norm);
        if !had || !norm.is_finite() {
            return Ok(OptimStats {
                grad_norm: norm,
                lr,
                applied: false,
            });
        }
        let model = self.model.take().expect("model present");
        self.model = Some(self.optim.step(lr, model, grads));
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
        self.model().num_params()
    }

    fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        rec.record(self.model().clone().into_record(), dir.join("model"))
            .map_err(|e| anyhow!("saving weights to {}: {e}", dir.display()))?;
        rec.record(self.optim.to_record(), dir.join("optimizer"))
            .map_err(|e| anyhow!("saving optimizer state to {}: {e}", dir.display()))
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let device = Default::default();
        let weights = rec
            .load(dir.join("model"), &device)
            .map_err(|e| anyhow!("loading weights from {}: {e}", dir.display()))?;
        let optim = rec
            .load(dir.join("optimizer"), &device)
            .map_err(|e| anyhow!("loading optimizer state from {}: {e}", dir.display()))?;
        self.model = Some(self.model.take().expect("model present").load_record(weights));
        self.optim = std::mem::replace(&mut self.optim, AdamWConfig::new().init()).load_record(optim);
        Ok(())
    }
}
