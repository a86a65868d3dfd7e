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
    crate::host::host_vec(&t).unwrap_or_else(|| t.into_data().iter::<f32>().collect())
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
        logits
            .iter()
            .enumerate()
            .fold(
                (0usize, f32::NEG_INFINITY),
                |a, (i, &l)| if l > a.1 { (i, l) } else { a },
            )
            .0
    } else {
        let inv_t = (1.0 / p.temperature) as f32;
        let weight = |l: f32| ((l - max) * inv_t).exp() as f64;
        let filtered = (p.top_k > 0 && p.top_k < logits.len()) || p.top_p < 1.0;
        if !filtered {
            // Weights computed once; at temperature 1 they are the terms of the log-sum-exp.
            let w: Vec<f64> = if inv_t == 1.0 {
                e.iter().map(|&x| x as f64).collect()
            } else {
                logits.iter().map(|&l| weight(l)).collect()
            };
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

/// `sample_token` for each `(i, r)` of `todo`: logits row i, prompt row r (which owns its
/// generator), rows spread over rayon's workers, so the result does not depend on the split.
fn sample_rows(
    logits: &[f32],
    v: usize,
    todo: &[(usize, usize)],
    p: &SamplingParams,
    rngs: &mut [ChaCha8Rng],
) -> Result<Vec<(u32, f32)>> {
    use rayon::prelude::*;
    let mut mine: Vec<Option<&mut ChaCha8Rng>> = rngs.iter_mut().map(Some).collect();
    let picked: Vec<(usize, &mut ChaCha8Rng)> = todo
        .iter()
        .map(|&(i, r)| (i, mine[r].take().expect("each row once")))
        .collect();
    picked
        .into_par_iter()
        .map(|(i, rng)| sample_token(&logits[i * v..(i + 1) * v], p, rng))
        .collect()
}

/// The logits of the last position of each row: on the host (the CPU backend, or top-k / top-p
/// sampling, which sorts) or left on the device, where only the sampled ids and their log-probs
/// come back (`sample_on_device`): a GPU copies 8 bytes a row per token, not the vocabulary.
enum Logits<B: Backend> {
    Host(Vec<f32>),
    Device(Tensor<B, 2>),
}

impl<B: Backend> Logits<B> {
    fn new(t: Tensor<B, 2>, on_device: bool) -> Self {
        if on_device {
            Logits::Device(t)
        } else {
            Logits::Host(to_f32(t))
        }
    }
}

/// Whether sampling runs on the device: a GPU backend and no top-k / top-p filter.
fn samples_on_device<B: Backend>(p: &SamplingParams, vocab: usize) -> bool {
    let filtered = (p.top_k > 0 && p.top_k < vocab) || p.top_p < 1.0;
    !crate::host::is_cpu::<B>() && !filtered
}

/// `sample_token` on the device for each `(i, r)` of `todo` (logits row i, prompt row r): the
/// same inverse-CDF draw with the same uniform from row r's generator, the weights summed by a
/// cumulative sum in f32 (the host sums in f64, so a draw within rounding of a boundary can pick
/// the neighbour). Unfiltered sampling and greedy only.
fn sample_on_device<B: Backend>(
    logits: &Tensor<B, 2>,
    todo: &[(usize, usize)],
    p: &SamplingParams,
    rngs: &mut [ChaCha8Rng],
) -> Result<Vec<(u32, f32)>> {
    let device = logits.device();
    let (m, v) = (todo.len(), logits.dims()[1]);
    let rows: Vec<i64> = todo.iter().map(|&(i, _)| i as i64).collect();
    let x = logits
        .clone()
        .select(0, Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [m]), &device))
        .cast(crate::model::widened(logits.dtype()));
    let max = x.clone().max_dim(1);
    let e = (x.clone() - max.clone()).exp();
    let lse = e.clone().sum_dim(1).log() + max.clone();
    let tok = if p.temperature <= 0.0 {
        x.clone().argmax(1)
    } else {
        let inv_t = 1.0 / p.temperature;
        let w = if inv_t == 1.0 {
            e
        } else {
            ((x.clone() - max) * inv_t).exp()
        };
        let c = w.cumsum(1);
        let total = c.clone().slice([0..m, v - 1..v]);
        let u: Vec<f32> = todo.iter().map(|&(_, r)| rngs[r].gen::<f64>() as f32).collect();
        let u = Tensor::<B, 2>::from_data(TensorData::new(u, [m, 1]), (&device, total.dtype())) * total;
        // The first index whose cumulative weight reaches u: the count of those below it.
        c.lower(u.expand([m, v])).int().sum_dim(1).clamp_max((v - 1) as i64)
    };
    let lp = x.gather(1, tok.clone()) - lse;
    let ids: Vec<i64> = tok
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .map_err(|e| anyhow::anyhow!("sampled ids: {e:?}"))?;
    let lps = to_f32(lp);
    if lps.iter().any(|l| !l.is_finite()) {
        bail!("non-finite logits during sampling");
    }
    Ok(ids.into_iter().zip(lps).map(|(t, l)| (t as u32, l)).collect())
}

/// Left-padded prefill of `prompts`: the KV caches (capacity `cap`) and the last position's
/// logits `[b, vocab]`. Identical prompts (a group's G rows) are computed once and their cache
/// rows copied: each row's values do not depend on the other rows of the batch.
fn prefill<B: Backend>(
    model: &Transformer<B>,
    prompts: &[Vec<u32>],
    pmax: usize,
    cap: usize,
    fwd: Fwd,
    pad: u32,
    on_device: bool,
) -> Result<(Vec<KvCache<B>>, Logits<B>)> {
    let cfg = &model.cfg;
    let device = model.device();
    let mut unique: Vec<&Vec<u32>> = vec![];
    let row_of: Vec<usize> = prompts
        .iter()
        .map(|pr| match unique.iter().position(|u| *u == pr) {
            Some(i) => i,
            None => {
                unique.push(pr);
                unique.len() - 1
            }
        })
        .collect();
    let nu = unique.len();
    let (mut ids, mut valid, mut pos) = (
        Vec::with_capacity(nu * pmax),
        Vec::with_capacity(nu),
        Vec::with_capacity(nu * pmax),
    );
    for pr in &unique {
        let row: Vec<bool> = (0..pmax).map(|j| j >= pmax - pr.len()).collect();
        ids.extend(std::iter::repeat_n(pad, pmax - pr.len()).chain(pr.iter().copied()));
        pos.extend(positions(&row));
        valid.push(row);
    }
    let mut caches: Vec<KvCache<B>> = (0..cfg.num_hidden_layers)
        .map(|_| KvCache::new(cfg, nu, cap, &device))
        .collect();
    let st = Step::new(cfg, &pos, &valid, 0, &device);
    let h = model.hidden(&ids, &st, Some(&mut caches), fwd);
    let hs = cfg.hidden_size;
    let last = h
        .reshape([nu, pmax, hs])
        .slice([0..nu, pmax - 1..pmax, 0..hs])
        .reshape([nu, hs]);
    let logits = Logits::new(model.logits(last), on_device);
    if nu == prompts.len() {
        return Ok((caches, logits));
    }
    let v = cfg.vocab_size;
    let caches = caches.iter().map(|c| c.gather_rows(&row_of, &device)).collect();
    let logits = match logits {
        Logits::Host(l) => Logits::Host(
            row_of
                .iter()
                .flat_map(|&u| l[u * v..(u + 1) * v].iter().copied())
                .collect(),
        ),
        Logits::Device(t) => {
            let idx: Vec<i64> = row_of.iter().map(|&u| u as i64).collect();
            Logits::Device(t.select(
                0,
                Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [row_of.len()]), &device),
            ))
        }
    };
    Ok((caches, logits))
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
    if pmax + p.max_new_tokens > cfg.max_position_embeddings {
        bail!(
            "prompt ({pmax}) + max_new_tokens ({}) exceeds the model's {} positions",
            p.max_new_tokens,
            cfg.max_position_embeddings
        );
    }
    let pad = codec.pad_id();
    let mut stop_ids = codec.eos_ids();
    stop_ids.extend(&p.stop_token_ids);
    let mut valid: Vec<Vec<bool>> = prompts
        .iter()
        .map(|pr| (0..pmax).map(|j| j >= pmax - pr.len()).collect())
        .collect();
    let cap = pmax + p.max_new_tokens;
    let v = cfg.vocab_size;
    let on_device = samples_on_device::<B>(p, v);
    let (mut caches, mut logits) = prefill(model, prompts, pmax, cap, fwd, pad, on_device)?;

    let mut rngs: Vec<ChaCha8Rng> = (0..b)
        .map(|r| {
            let rs = p.row_seed(r, b)?;
            let mut g = ChaCha8Rng::seed_from_u64(rs.seed);
            g.set_stream(rs.stream);
            Ok(g)
        })
        .collect::<Result<_>>()?;
    let mut out: Vec<Generation> = (0..b)
        .map(|_| Generation {
            tokens: vec![],
            text: String::new(),
            logprobs: vec![],
            finish: FinishReason::Length,
        })
        .collect();
    // A stop string of n bytes lies within the last n tokens once it appears; one more token
    // absorbs a character split across tokens, so only that tail is decoded at each step.
    let stop_window = p.stop_strings.iter().map(|s| s.len()).max().unwrap_or(0) + 2;
    // `live[i]`: the prompt row at batch position i; `valid` and `next_pos` are indexed by batch
    // position too. Finished rows leave the batch (their cache rows are dropped) once a quarter
    // of it has finished.
    let mut live: Vec<usize> = (0..b).collect();
    let mut done = vec![false; b];
    let mut next_pos: Vec<usize> = prompts.iter().map(|x| x.len()).collect();
    for step in 0..p.max_new_tokens {
        let todo: Vec<(usize, usize)> = live.iter().copied().enumerate().filter(|&(_, r)| !done[r]).collect();
        let picks = match &logits {
            Logits::Host(l) => sample_rows(l, v, &todo, p, &mut rngs)?,
            Logits::Device(t) => sample_on_device(t, &todo, p, &mut rngs)?,
        };
        for (&(_, r), &(tok, lp)) in todo.iter().zip(&picks) {
            let g = &mut out[r];
            g.tokens.push(tok);
            g.logprobs.push(lp);
            if stop_ids.contains(&tok) {
                g.finish = FinishReason::Eos;
                done[r] = true;
            } else if !p.stop_strings.is_empty() {
                let tail = codec.decode(&g.tokens[g.tokens.len().saturating_sub(stop_window)..])?;
                if p.stop_strings.iter().any(|s| tail.contains(s.as_str())) {
                    g.finish = FinishReason::StopString;
                    done[r] = true;
                }
            }
        }
        let active = live.iter().filter(|&&r| !done[r]).count();
        if active == 0 || step + 1 == p.max_new_tokens {
            break;
        }
        if active * 4 <= live.len() * 3 {
            let keep: Vec<usize> = (0..live.len()).filter(|&i| !done[live[i]]).collect();
            caches = caches.iter().map(|c| c.gather_rows(&keep, &device)).collect();
            live = keep.iter().map(|&i| live[i]).collect();
            valid = keep.iter().map(|&i| std::mem::take(&mut valid[i])).collect();
            next_pos = keep.iter().map(|&i| next_pos[i]).collect();
        }
        let feed: Vec<u32> = live
            .iter()
            .map(|&r| {
                if done[r] {
                    pad
                } else {
                    *out[r].tokens.last().expect("sampled")
                }
            })
            .collect();
        let past = pmax + step;
        for row in valid.iter_mut() {
            row.push(true);
        }
        let st = Step::new(cfg, &next_pos, &valid, past, &device);
        for np in next_pos.iter_mut() {
            *np += 1;
        }
        let h = model.hidden(&feed, &st, Some(&mut caches), fwd);
        logits = Logits::new(model.logits(h), on_device);
    }
    for g in out.iter_mut() {
        let body = if g.finish == FinishReason::Eos {
            &g.tokens[..g.tokens.len() - 1]
        } else {
            &g.tokens[..]
        };
        let mut text = codec.decode(body)?;
        if g.finish == FinishReason::StopString {
            // Keep the stop string, drop whatever its last token carried after it.
            if let Some(end) = p
                .stop_strings
                .iter()
                .filter_map(|s| text.find(s.as_str()).map(|i| i + s.len()))
                .min()
            {
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
        ids.extend(
            std::iter::repeat_n(pad, lp)
                .chain(s.prompt.iter().copied())
                .chain(s.completion.iter().copied()),
        );
        ids.extend(std::iter::repeat_n(pad, rp));
        let row: Vec<bool> = (0..pmax + cmax)
            .map(|j| j >= lp && j < pmax + s.completion.len())
            .collect();
        pos.extend(positions(&row));
        valid.push(row);
    }
    Ok((ids, valid, pos, pmax, cmax))
}

/// Log-probs `[b, cmax]` of each completion token (padding columns hold garbage; callers trim).
/// Rows that share a prompt (a GRPO group) run the prompt once: its keys and values are copied
/// to the group's rows and only the completions run per row, which cuts the work of the
/// reference, old-policy and update passes by up to G x (prompt tokens) with the same result.
pub fn completion_logprobs<B: Backend>(
    model: &Transformer<B>,
    seqs: &[Sequence],
    pad: u32,
    fwd: Fwd,
) -> Result<Tensor<B, 2>> {
    let groups = prompt_groups(seqs);
    if groups.len() == seqs.len() {
        return packed_logprobs(model, seqs, pad, fwd);
    }
    let device = model.device();
    let cmax = seqs.iter().map(|s| s.completion.len()).max().unwrap_or(0);
    let mut parts = Vec::with_capacity(groups.len());
    let mut order: Vec<usize> = Vec::with_capacity(seqs.len());
    for rows in &groups {
        let group: Vec<&Sequence> = rows.iter().map(|&r| &seqs[r]).collect();
        let lp = shared_prompt_logprobs(model, &group, pad, fwd)?;
        let [g, c] = lp.dims();
        parts.push(if c < cmax {
            Tensor::cat(vec![lp, Tensor::zeros([g, cmax - c], &device)], 1)
        } else {
            lp
        });
        order.extend(rows);
    }
    // Back to the callers' row order.
    let mut inverse = vec![0i64; seqs.len()];
    for (k, &r) in order.iter().enumerate() {
        inverse[r] = k as i64;
    }
    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(inverse, [seqs.len()]), &device);
    Ok(Tensor::cat(parts, 0).select(0, idx))
}

/// Row indices grouped by identical prompt, groups in order of first appearance.
fn prompt_groups(seqs: &[Sequence]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = vec![];
    for (r, s) in seqs.iter().enumerate() {
        match groups.iter_mut().find(|g| seqs[g[0]].prompt == s.prompt) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups
}

/// Log-probs `[g, cmax]` of a group's completions after their common prompt: the prompt runs once
/// (batch 1, filling a KV cache), the cache rows are copied to the g rows, then the completions run
/// (right-padded) after it. Completion token j is predicted by position prompt-1+j.
fn shared_prompt_logprobs<B: Backend>(
    model: &Transformer<B>,
    group: &[&Sequence],
    pad: u32,
    fwd: Fwd,
) -> Result<Tensor<B, 2>> {
    let cfg = &model.cfg;
    let device = model.device();
    let prompt = &group[0].prompt;
    if prompt.is_empty() {
        bail!("log-probs: every sequence needs a non-empty prompt");
    }
    let (g, lp) = (group.len(), prompt.len());
    let cmax = group.iter().map(|s| s.completion.len()).max().unwrap_or(0).max(1);
    let hs = cfg.hidden_size;
    let mut caches: Vec<KvCache<B>> = (0..cfg.num_hidden_layers)
        .map(|_| KvCache::new(cfg, 1, lp + cmax, &device))
        .collect();
    let st = Step::new(cfg, &(0..lp).collect::<Vec<_>>(), &[vec![true; lp]], 0, &device);
    let last = model
        .hidden(prompt, &st, Some(&mut caches), fwd)
        .slice([lp - 1..lp, 0..hs]);
    let mut h = Tensor::cat(vec![last; g], 0).reshape([g, 1, hs]);
    if cmax > 1 {
        // Only the first cmax-1 completion tokens are inputs: the last one is only predicted.
        let t = cmax - 1;
        let rows = vec![0usize; g];
        let mut caches: Vec<KvCache<B>> = caches.iter().map(|c| c.gather_rows(&rows, &device)).collect();
        let mut ids = Vec::with_capacity(g * t);
        let mut valid = Vec::with_capacity(g);
        let mut pos = Vec::with_capacity(g * t);
        for s in group {
            let n = s.completion.len();
            ids.extend((0..t).map(|j| if j < n { s.completion[j] } else { pad }));
            valid.push((0..lp + t).map(|j| j < lp + n).collect::<Vec<bool>>());
            pos.extend((0..t).map(|j| lp + j.min(n)));
        }
        let st = Step::new(cfg, &pos, &valid, lp, &device);
        let hc = model.hidden(&ids, &st, Some(&mut caches), fwd).reshape([g, t, hs]);
        h = Tensor::cat(vec![h, hc], 1);
    }
    Ok(token_logprobs(
        model,
        h.reshape([g * cmax, hs]),
        group.iter().map(|s| &s.completion[..]),
        cmax,
    ))
}

/// Log-probs `[rows, cmax]` of each row's completion tokens from the hidden states that predict
/// them (`[rows * cmax, hidden]`); columns past a row's completion hold garbage.
fn token_logprobs<'a, B: Backend>(
    model: &Transformer<B>,
    h: Tensor<B, 2>,
    completions: impl Iterator<Item = &'a [u32]>,
    cmax: usize,
) -> Tensor<B, 2> {
    let targets: Vec<i64> = completions
        .flat_map(|c| (0..cmax).map(move |j| c.get(j).copied().unwrap_or(0) as i64))
        .collect();
    let rows = targets.len() / cmax;
    selected_logprobs(model, h, &targets, LOGIT_CHUNK).reshape([rows, cmax])
}

/// Logits computed at a time by `selected_logprobs`: 2^24 values (64 MiB in f32), 110 rows of
/// Qwen2.5's 152k vocabulary.
pub const LOGIT_CHUNK: usize = 1 << 24;

/// `log_softmax(h W_out)[i, targets[i]]` as `[rows, 1]`, the logits made `chunk` values at a time.
/// With a frozen output projection (LoRA, DoRA, and every no-grad pass) the autodiff graph keeps
/// no `[rows, vocab]` tensor: the gradient with respect to `h`, `W[target] - softmax(h W) W^T`, is
/// computed chunk by chunk in the forward pass and attached through a `[rows, hidden]` product
/// whose value is zero (the idea behind fused linear cross-entropy; TRL's selective log-softmax
/// saves only the second `[rows, vocab]` tensor). Full fine-tuning trains the head itself and
/// keeps the plain graph.
pub fn selected_logprobs<B: Backend>(
    model: &Transformer<B>,
    h: Tensor<B, 2>,
    targets: &[i64],
    chunk: usize,
) -> Tensor<B, 2> {
    let device = model.device();
    let [rows, hs] = h.dims();
    assert_eq!(targets.len(), rows, "one target per hidden row");
    let ids =
        |a: usize, b: usize| Tensor::<B, 1, Int>::from_data(TensorData::new(targets[a..b].to_vec(), [b - a]), &device);
    if rows == 0 || model.head_trains() {
        return log_softmax(model.logits(h).cast(model.master), 1).gather(1, ids(0, rows).reshape([rows, 1]));
    }
    // The autodiff backend runs only the training pass (no-grad passes use the inner backend).
    // `h.is_require_grad()` would not do: it is false for an intermediate tracked tensor.
    let tracked = B::ad_enabled(&device);
    let detached = h.clone().detach();
    let step = (chunk / model.cfg.vocab_size.max(1)).max(1);
    let (mut values, mut expected) = (vec![], vec![]);
    for a in (0..rows).step_by(step) {
        let b = (a + step).min(rows);
        // In the masters' dtype (f32) whatever the compute dtype: log-probs feed the ratios
        // exp(lp - lp_old) and the KL, and the loss gradient comes in f32.
        let logits = model.logits(detached.clone().slice([a..b, 0..hs])).cast(model.master);
        let (value, probs) = match crate::logsoftmax_cpu::selected(&logits, &targets[a..b], tracked) {
            Some(host) => host,
            None => {
                let lsm = log_softmax(logits, 1);
                let value = lsm.clone().gather(1, ids(a, b).reshape([b - a, 1]));
                (value, tracked.then(|| lsm.exp()))
            }
        };
        values.push(value);
        if let Some(p) = probs {
            expected.push(model.head_expect(p));
        }
    }
    let value = Tensor::cat(values, 0);
    if !tracked {
        return value;
    }
    // d value / d h = W[target] - E_softmax[W]; `lin - lin.detach()` carries it with value 0.
    let direction = model.head_rows(ids(0, rows)) - Tensor::cat(expected, 0);
    let lin = (h * direction).sum_dim(1).cast(model.master);
    lin.clone() - lin.detach() + value
}

/// Every row packed into one batch (prompts left-padded, completions right-padded).
pub fn packed_logprobs<B: Backend>(
    model: &Transformer<B>,
    seqs: &[Sequence],
    pad: u32,
    fwd: Fwd,
) -> Result<Tensor<B, 2>> {
    let device = model.device();
    let (ids, valid, pos, pmax, cmax) = pack(seqs, pad)?;
    let b = seqs.len();
    let l = pmax + cmax;
    let hs = model.cfg.hidden_size;
    let st = Step::new(&model.cfg, &pos, &valid, 0, &device);
    let h = model.hidden(&ids, &st, None, fwd);
    let h = h
        .reshape([b, l, hs])
        .slice([0..b, pmax - 1..pmax - 1 + cmax, 0..hs])
        .reshape([b * cmax, hs]);
    Ok(token_logprobs(model, h, seqs.iter().map(|s| &s.completion[..]), cmax))
}

/// Trim a `[b, cmax]` log-prob tensor to per-row completion lengths.
pub fn trim<B: Backend>(lp: Tensor<B, 2>, seqs: &[Sequence]) -> Vec<Vec<f32>> {
    let cmax = lp.dims()[1];
    let flat = to_f32(lp);
    seqs.iter()
        .enumerate()
        .map(|(r, s)| flat[r * cmax..r * cmax + s.completion.len()].to_vec())
        .collect()
}
