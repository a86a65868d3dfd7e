//! Batched sampling with a pre-allocated KV cache, and per-token log-probs of given completions.
//!
//! Prompts are left-padded: padding keys are masked out and position ids count real tokens only,
//! so every row computes exactly what it would alone. Log-probs reported for sampled tokens are the
//! policy's own (`log_softmax(logits)`, before temperature / top-k / top-p), which is what PPO-style
//! ratios need; the sampling distribution itself uses the processed logits.

use crate::model::{Fwd, KvCache, Step, Transformer};
use anyhow::{bail, Result};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recode_core::api::{FinishReason, Generation, SamplingParams, Sequence, TextCodec};

fn to_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    // On the CPU a memcpy; burn-ndarray's into_data walks 8 x 151936 logits one at a time.
    crate::fused::host_vec(&t).unwrap_or_else(|| t.into_data().iter::<f32>().collect())
}

/// Position id of every slot: real tokens count from 0; padding repeats the current count.
fn positions(valid: &[bool]) -> Vec<usize> {
    let mut n = 0;
    valid
        .iter()
        .map(|&v| {
            let p = n;
            if v {
                n += 1;
            }
            p
        })
        .collect()
}

/// Sample one token from `logits`; returns the token and its policy log-prob (pre-temperature).
pub fn sample_token(logits: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> Result<(u32, f32)> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        bail!("non-finite logits during sampling");
    }
    // exp in f32 (2-3x cheaper than f64 over 151936 logits per row and step), summed in f64.
    let e: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let lse = (e.iter().map(|&x| x as f64).sum::<f64>()).ln() as f32 + max;
    let tok = if p.temperature <= 0.0 {
        logits.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |a, (i, &l)| if l > a.1 { (i, l) } else { a }).0
    } else {
        let inv_t = (1.0 / p.temperature) as f32;
        let weight = |l: f32| ((l - max) * inv_t).exp() as f64;
        let filtered = (p.top_k > 0 && p.top_k < logits.len()) || p.top_p < 1.0;
        if !filtered {
            // Weights computed once; at temperature 1 they are the terms of the log-sum-exp.
            let w: Vec<f64> = if inv_t == 1.0 { e.iter().map(|&x| x as f64).collect() } else { logits.iter().map(|&l| weight(l)).collect() };
            let total: f64 = w.iter().sum();
            let mut u = rng.gen::<f64>() * total;
            let mut pick = logits.len() - 1;
            for (i, &x) in w.iter().enumerate() {
                u -= x;
                if u <= 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        } else {
            // HF order: temperature, top-k, then top-p on the renormalised remainder.
            let mut idx: Vec<usize> = (0..logits.len()).collect();
            if p.top_k > 0 && p.top_k < idx.len() {
                idx.select_nth_unstable_by(p.top_k - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
                idx.truncate(p.top_k);
            }
            idx.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            let w: Vec<f64> = idx.iter().map(|&i| weight(logits[i])).collect();
            let total: f64 = w.iter().sum();
            let mut keep = w.len();
            if p.top_p < 1.0 {
                let mut cum = 0.0;
                for (j, &x) in w.iter().enumerate() {
                    cum += x / total;
                    if cum >= p.top_p {
                        keep = j + 1;
                        break;
                    }
                }
            }
            let kept: f64 = w[..keep].iter().sum();
            let mut u = rng.gen::<f64>() * kept;
            let mut pick = idx[keep - 1];
            for j in 0..keep {
                u -= w[j];
                if u <= 0.0 {
                    pick = idx[j];
                    break;
                }
            }
            pick
        }
    };
    Ok((tok as u32, logits[tok] - lse))
}

/// `sample_token` for every row not yet done, rows spread over rayon's workers (each row has its
/// own generator, so the result does not depend on the split). Done rows get `(0, 0.0)`.
fn sample_rows(logits: &[f32], v: usize, done: &[bool], p: &SamplingParams, rngs: &mut [ChaCha8Rng]) -> Result<Vec<(u32, f32)>> {
    use rayon::prelude::*;
    rngs.par_iter_mut()
        .enumerate()
        .map(|(r, rng)| if done[r] { Ok((0, 0.0)) } else { sample_token(&logits[r * v..(r + 1) * v], p, rng) })
        .collect()
}

/// One completion per prompt. `adapters = false` samples from the base model.
pub fn generate<B: Backend>(
    model: &Transformer<B>,
    codec: &dyn TextCodec,
    prompts: &[Vec<u32>],
    p: &SamplingParams,
    adapters: bool,
) -> Result<Vec<Generation>> {
    let b = prompts.len();
    if b == 0 {
        return Ok(vec![]);
    }
    if prompts.iter().any(|x| x.is_empty()) {
        bail!("generate: empty prompt");
    }
    let cfg = &model.cfg;
    let device = model.device();
    let fwd = Fwd { adapters, train: false };
    let pmax = prompts.iter().map(|x| x.len()).max().unwrap();
    if pmax + p.max_new_tokens > cfg.max_positions {
        bail!("prompt ({pmax}) + max_new_tokens ({}) exceeds the model's {} positions", p.max_new_tokens, cfg.max_positions);
    }
    let pad = codec.pad_id();
    let mut stop_ids = codec.eos_ids();
    stop_ids.extend(&p.stop_token_ids);
    let mut ids = Vec::with_capacity(b * pmax);
    let mut valid: Vec<Vec<bool>> = Vec::with_capacity(b);
    let mut pos = Vec::with_capacity(b * pmax);
    for pr in prompts {
        let row: Vec<bool> = (0..pmax).map(|j| j >= pmax - pr.len()).collect();
        ids.extend(std::iter::repeat(pad).take(pmax - pr.len()).chain(pr.iter().copied()));
        pos.extend(positions(&row));
        valid.push(row);
    }
    let cap = pmax + p.max_new_tokens;
    let mut caches: Vec<KvCache<B>> = (0..cfg.num_layers).map(|_| KvCache::new(cfg, b, cap, &device)).collect();
    let st = Step::new(cfg, &pos, &valid, 0, &device);
    let h = model.hidden(&ids, &st, Some(&mut caches), fwd);
    let hs = cfg.hidden_size;
    let last = h.reshape([b, pmax, hs]).slice([0..b, pmax - 1..pmax, 0..hs]).reshape([b, hs]);
    let mut logits = to_f32(model.logits(last));
    let v = cfg.vocab_size;

    let mut rngs: Vec<ChaCha8Rng> = (0..b)
        .map(|r| {
            let mut g = ChaCha8Rng::seed_from_u64(p.seed);
            g.set_stream(r as u64);
            g
        })
        .collect();
    let mut out: Vec<Generation> =
        (0..b).map(|_| Generation { tokens: vec![], text: String::new(), logprobs: vec![], finish: FinishReason::Length }).collect();
    let mut done = vec![false; b];
    let mut next_pos: Vec<usize> = prompts.iter().map(|x| x.len()).collect();
    for step in 0..p.max_new_tokens {
        let mut feed = Vec::with_capacity(b);
        let picks = sample_rows(&logits, v, &done, p, &mut rngs)?;
        for r in 0..b {
            if done[r] {
                feed.push(pad);
                continue;
            }
            let (tok, lp) = picks[r];
            let g = &mut out[r];
            g.tokens.push(tok);
            g.logprobs.push(lp);
            if stop_ids.contains(&tok) {
                g.finish = FinishReason::Eos;
                done[r] = true;
            } else if !p.stop_strings.is_empty() {
                let text = codec.decode(&g.tokens)?;
                if p.stop_strings.iter().any(|s| text.contains(s.as_str())) {
                    g.finish = FinishReason::StopString;
                    done[r] = true;
                }
            }
            feed.push(tok);
        }
        if done.iter().all(|&d| d) || step + 1 == p.max_new_tokens {
            break;
        }
        let past = pmax + step;
        for row in valid.iter_mut() {
            row.push(true);
        }
        let st = Step::new(cfg, &next_pos, &valid, past, &device);
        for np in next_pos.iter_mut() {
            *np += 1;
        }
        let h = model.hidden(&feed, &st, Some(&mut caches), fwd);
        logits = to_f32(model.logits(h));
    }
    for g in out.iter_mut() {
        let body = if g.finish == FinishReason::Eos { &g.tokens[..g.tokens.len() - 1] } else { &g.tokens[..] };
        let mut text = codec.decode(body)?;
        if g.finish == FinishReason::StopString {
            // Keep the stop string, drop whatever its last token carried after it.
            if let Some(end) = p.stop_strings.iter().filter_map(|s| text.find(s.as_str()).map(|i| i + s.len())).min() {
                text.truncate(end);
            }
        }
        g.text = text;
    }
    Ok(out)
}

/// Left-pad prompts to a common length and right-pad completions, so completion token `j` of
/// every row sits at column `pmax + j`. Returns (ids, valid, positions, pmax, cmax).
pub fn pack(seqs: &[Sequence], pad: u32) -> Result<(Vec<u32>, Vec<Vec<bool>>, Vec<usize>, usize, usize)> {
    let pmax = seqs.iter().map(|s| s.prompt.len()).max().unwrap_or(0);
    let cmax = seqs.iter().map(|s| s.completion.len()).max().unwrap_or(0);
    if seqs.iter().any(|s| s.prompt.is_empty()) {
        bail!("log-probs: every sequence needs a non-empty prompt");
    }
    let (mut ids, mut valid, mut pos) = (vec![], vec![], vec![]);
    for s in seqs {
        let lp = pmax - s.prompt.len();
        let rp = cmax - s.completion.len();
        ids.extend(std::iter::repeat(pad).take(lp).chain(s.prompt.iter().copied()).chain(s.completion.iter().copied()));
        ids.extend(std::iter::repeat(pad).take(rp));
        let row: Vec<bool> = (0..pmax + cmax).map(|j| j >= lp && j < pmax + s.completion.len()).collect();
        pos.extend(positions(&row));
        valid.push(row);
    }
    Ok((ids, valid, pos, pmax, cmax))
}

/// Log-probs `[b, cmax]` of each completion token (padding columns hold garbage; callers trim).
pub fn completion_logprobs<B: Backend>(model: &Transformer<B>, seqs: &[Sequence], pad: u32, fwd: Fwd) -> Result<Tensor<B, 2>> {
    let device = model.device();
    let (ids, valid, pos, pmax, cmax) = pack(seqs, pad)?;
    let b = seqs.len();
    let l = pmax + cmax;
    let hs = model.cfg.hidden_size;
    let st = Step::new(&model.cfg, &pos, &valid, 0, &device);
    let h = model.hidden(&ids, &st, None, fwd);
    let h = h.reshape([b, l, hs]).slice([0..b, pmax - 1..pmax - 1 + cmax, 0..hs]).reshape([b * cmax, hs]);
    let lp = log_softmax(model.logits(h), 1);
    let targets: Vec<i64> =
        seqs.iter().flat_map(|s| (0..cmax).map(move |j| s.completion.get(j).copied().unwrap_or(0) as i64)).collect();
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [b * cmax, 1]), &device);
    Ok(lp.gather(1, targets).reshape([b, cmax]))
}

/// Trim a `[b, cmax]` log-prob tensor to per-row completion lengths.
pub fn trim<B: Backend>(lp: Tensor<B, 2>, seqs: &[Sequence]) -> Vec<Vec<f32>> {
    let cmax = lp.dims()[1];
    let flat = to_f32(lp);
    seqs.iter().enumerate().map(|(r, s)| flat[r * cmax..r * cmax + s.completion.len()].to_vec()).collect()
}
