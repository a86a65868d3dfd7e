//! One training step of [`Trainer`]: rollout, scoring, advantages, filtering and the update.

use super::data_order::derive_seed;
use super::schedule::lr_at;
use super::{Metrics, Trainer};
use crate::api::{Generation, LossBatch, RewardInput, SamplingParams, Sequence};
use anyhow::{bail, ensure, Result};
use std::time::Instant;

/// A scored group of completions for one prompt.
struct Group {
    item: usize,
    prompt: Vec<u32>,
    gens: Vec<Generation>,
    totals: Vec<f64>,
    /// Per reward, one score per completion (NaN where the reward did not apply).
    components: Vec<Vec<f64>>,
    /// Extra metrics the rewards returned for this group, by TensorBoard tag.
    reward_metrics: Vec<(String, f64)>,
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64;
    (m, v.sqrt())
}

impl Trainer<'_> {
    /// Token ids of an item's prompt, or None when it exceeds `prompt.max_prompt_tokens`.
    fn prompt_ids(&mut self, item: usize) -> Result<Option<Vec<u32>>> {
        if self.prompt_cache[item].is_none() {
            let ids = self.policy.codec().encode(&self.items[item].prompt)?;
            let max = self.spec.prompt.max_prompt_tokens;
            let keep = if max > 0 && ids.len() > max {
                self.run.log(&format!(
                    "prompt `{}` skipped: {} tokens > {max}",
                    self.items[item].id,
                    ids.len()
                ));
                None
            } else {
                Some(ids)
            };
            self.prompt_cache[item] = Some(keep);
        }
        Ok(self.prompt_cache[item].clone().flatten())
    }

    /// Next `n` usable prompts from the stream.
    pub(super) fn next_prompts(&mut self, n: usize) -> Result<Vec<(usize, Vec<u32>)>> {
        let mut out = Vec::with_capacity(n);
        let mut skipped = 0;
        while out.len() < n {
            let (item, next) = self.order.next(self.state.cursor);
            self.state.cursor = next;
            match self.prompt_ids(item)? {
                Some(ids) => out.push((item, ids)),
                None => {
                    skipped += 1;
                    ensure!(
                        skipped <= self.items.len(),
                        "every prompt is longer than prompt.max_prompt_tokens"
                    );
                }
            }
        }
        Ok(out)
    }

    fn generate_groups(&mut self, prompts: Vec<(usize, Vec<u32>)>, seed: u64) -> Result<Vec<Group>> {
        let g = self.spec.generation.num_generations;
        let flat: Vec<Vec<u32>> = prompts
            .iter()
            .flat_map(|(_, p)| std::iter::repeat_n(p.clone(), g))
            .collect();
        let gen = &self.spec.generation;
        let mut gens = Vec::with_capacity(flat.len());
        let longest = flat.iter().map(Vec::len).max().unwrap_or(0) + gen.max_new_tokens;
        let by_tokens = if gen.batch_tokens > 0 {
            (gen.batch_tokens / longest.max(1)).max(1)
        } else {
            usize::MAX
        };
        for (chunk_no, chunk) in flat.chunks(gen.batch_size.min(by_tokens).max(1)).enumerate() {
            let params = SamplingParams {
                max_new_tokens: gen.max_new_tokens,
                temperature: gen.temperature,
                top_p: gen.top_p,
                top_k: gen.top_k,
                stop_token_ids: vec![],
                stop_strings: gen.stop_strings.clone(),
                seed: derive_seed(seed, &[chunk_no as u64]),
                row_seeds: vec![],
            };
            let out = self.policy.generate(chunk, &params)?;
            ensure!(
                out.len() == chunk.len(),
                "model returned {} completions for {} prompts",
                out.len(),
                chunk.len()
            );
            gens.extend(out);
        }
        let mut groups = Vec::new();
        let mut it = gens.into_iter();
        for (item, prompt) in prompts {
            groups.push(Group {
                item,
                prompt,
                gens: it.by_ref().take(g).collect(),
                totals: vec![],
                components: vec![],
                reward_metrics: vec![],
            });
        }
        Ok(groups)
    }

    fn score(&self, groups: &mut [Group]) -> Result<()> {
        for group in groups.iter_mut() {
            let item = &self.items[group.item];
            let inputs: Vec<RewardInput> = group
                .gens
                .iter()
                .map(|gen| RewardInput {
                    prompt: &item.prompt,
                    completion: &gen.text,
                    target: &item.target,
                    completion_tokens: gen.tokens.len(),
                    completion_ids: &gen.tokens,
                    columns: Some(&item.columns),
                })
                .collect();
            let mut totals = vec![0.0; inputs.len()];
            group.components.clear();
            group.reward_metrics.clear();
            for r in &self.rewards {
                let out = r.reward.score_items(&inputs)?;
                let scores = out.scores;
                ensure!(
                    scores.len() == inputs.len(),
                    "reward `{}` returned {} scores for {} completions",
                    r.label,
                    scores.len(),
                    inputs.len()
                );
                if let Some(bad) = scores.iter().position(|s| s.is_some_and(|s| !s.is_finite())) {
                    bail!(
                        "reward `{}` returned a non-finite score ({:?}) for completion {bad}",
                        r.label,
                        scores[bad]
                    );
                }
                // `None` ("does not apply") leaves the reward out of that item's total, as TRL's
                // nansum does; the component keeps it as NaN, which the means skip.
                for (t, s) in totals.iter_mut().zip(&scores) {
                    *t += s.map_or(0.0, |s| r.weight * s);
                }
                group
                    .components
                    .push(scores.iter().map(|s| s.unwrap_or(f64::NAN)).collect());
                for (k, v) in out.metrics {
                    group.reward_metrics.push((format!("reward/{}/{k}", r.label), v));
                }
            }
            group.totals = totals;
        }
        Ok(())
    }

    pub(super) fn step(&mut self, step: usize) -> Result<Metrics> {
        if self.spec.training.mode == crate::spec::TrainingMode::Sft {
            return self.sft_step(step);
        }
        let spec = self.spec;
        let g = spec.generation.num_generations;
        let want = spec.training.prompts_per_step;
        let mut m = Metrics::new();
        let t_step = Instant::now();
        let (mut t_gen, mut t_score) = (0.0, 0.0);

        // Rollout with dynamic sampling: keep generating until `want` groups pass the filter.
        let mut kept: Vec<Group> = Vec::new();
        let mut seen: Vec<Group> = Vec::new();
        let mut rounds = 0;
        while kept.len() < want {
            let max_rounds = spec.generation.max_num_gen_batches;
            if max_rounds > 0 && rounds >= max_rounds {
                bail!(
                    "dynamic sampling: after {rounds} generation rounds only {} of {want} groups had non-constant \
                     rewards; raise generation.max_num_gen_batches (0 = unlimited) or use easier data",
                    kept.len()
                );
            }
            let prompts = self.next_prompts(want - kept.len())?;
            let t = Instant::now();
            let mut groups =
                self.generate_groups(prompts, derive_seed(spec.run.seed, &[step as u64, rounds as u64]))?;
            t_gen += t.elapsed().as_secs_f64();
            let t = Instant::now();
            self.score(&mut groups)?;
            t_score += t.elapsed().as_secs_f64();
            rounds += 1;
            for group in groups {
                if self.algorithm.keep_group(&group.totals) {
                    kept.push(group);
                } else {
                    seen.push(group);
                }
            }
        }
        kept.truncate(want);

        // Reward and rollout statistics over every generated group (kept or not).
        let all: Vec<&Group> = kept.iter().chain(seen.iter()).collect();
        for (ri, r) in self.rewards.iter().enumerate() {
            let all_xs: Vec<f64> = all.iter().flat_map(|gr| gr.components[ri].iter().copied()).collect();
            let xs: Vec<f64> = all_xs.iter().copied().filter(|x| !x.is_nan()).collect();
            let (mean, std) = mean_std(&xs);
            m.insert(format!("reward/{}/mean", r.label), mean);
            m.insert(format!("reward/{}/std", r.label), std);
            if xs.len() < all_xs.len() {
                let none = (all_xs.len() - xs.len()) as f64 / all_xs.len() as f64;
                m.insert(format!("reward/{}/none_frac", r.label), none);
            }
        }
        let mut extra: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
        for (k, v) in all.iter().flat_map(|gr| gr.reward_metrics.iter()) {
            let e = extra.entry(k.clone()).or_default();
            e.0 += v;
            e.1 += 1.0;
        }
        for (k, (sum, n)) in extra {
            m.insert(k, sum / n);
        }
        let totals_all: Vec<f64> = all.iter().flat_map(|gr| gr.totals.iter().copied()).collect();
        let (mean, std) = mean_std(&totals_all);
        m.insert("reward/total/mean".into(), mean);
        m.insert("reward/total/std".into(), std);
        let zero_var = all.iter().filter(|gr| mean_std(&gr.totals).1 == 0.0).count();
        m.insert("groups/zero_variance_frac".into(), zero_var as f64 / all.len() as f64);
        m.insert("groups/generation_rounds".into(), rounds as f64);
        let lens: Vec<f64> = all
            .iter()
            .flat_map(|gr| gr.gens.iter().map(|x| x.tokens.len() as f64))
            .collect();
        let gen_tokens: f64 = lens.iter().sum();
        m.insert("completion/length_mean".into(), mean_std(&lens).0);
        m.insert("completion/length_max".into(), lens.iter().copied().fold(0.0, f64::max));
        let truncated = all
            .iter()
            .flat_map(|gr| gr.gens.iter())
            .filter(|x| x.finish == crate::api::FinishReason::Length)
            .count();
        m.insert(
            "completion/truncated_frac".into(),
            truncated as f64 / lens.len().max(1) as f64,
        );
        m.insert("throughput/tokens_per_s".into(), gen_tokens / t_gen.max(1e-9));
        m.insert("tokens/generated".into(), gen_tokens);
        m.insert("time/generation_s".into(), t_gen);
        m.insert("time/scoring_s".into(), t_score);
        trl_rollout_metrics(&mut m, &all, &spec.generation);

        // Advantages over the kept groups.
        let totals: Vec<f64> = kept.iter().flat_map(|gr| gr.totals.iter().copied()).collect();
        let lengths: Vec<usize> = kept
            .iter()
            .flat_map(|gr| gr.gens.iter().map(|x| x.tokens.len()))
            .collect();
        let adv = self.algorithm.advantages_with_lengths(&totals, g, &lengths)?;
        ensure!(
            adv.len() == totals.len(),
            "algorithm returned {} advantages for {} rewards",
            adv.len(),
            totals.len()
        );
        if let Some(bad) = adv.iter().position(|a| !a.is_finite()) {
            bail!(
                "algorithm `{}` returned a non-finite advantage at index {bad}",
                self.algorithm.name()
            );
        }
        let (amean, astd) = mean_std(&adv);
        m.insert("advantage/mean".into(), amean);
        m.insert("advantage/std".into(), astd);
        if let Some(b) = self.board.as_mut() {
            b.histogram("reward/total", &totals_all, step);
            b.histogram("advantage", &adv, step);
        }
        self.log_samples(step, &kept);

        let seqs: Vec<Sequence> = kept
            .iter()
            .flat_map(|gr| {
                gr.gens.iter().map(|x| Sequence {
                    prompt: gr.prompt.clone(),
                    completion: x.tokens.clone(),
                })
            })
            .collect();
        // Prompt + completion tokens of one pass over the kept sequences (reference, old policy, update).
        let pass_tokens: usize = seqs.iter().map(|s| s.prompt.len() + s.completion.len()).sum();
        m.insert("tokens/per_pass".into(), pass_tokens as f64);
        let t = Instant::now();
        // No reference pass when the algorithm has no KL term (beta = 0, DAPO).
        let ref_logp = if self.algorithm.needs_reference() {
            Some(self.policy.logprobs(&seqs, false)?)
        } else {
            None
        };
        m.insert("time/reference_s".into(), t.elapsed().as_secs_f64());
        // With one pass per rollout the old policy is the current one (its log-probs detached).
        let t = Instant::now();
        let old_logp = if spec.training.num_iterations > 1 {
            Some(self.policy.logprobs(&seqs, true)?)
        } else {
            None
        };
        m.insert("time/old_logprobs_s".into(), t.elapsed().as_secs_f64());

        let t = Instant::now();
        let adv32: Vec<f32> = adv.iter().map(|&a| a as f32).collect();
        // The sampler's log-probs, for the rollout/train correction (when the policy returned them).
        let kept_gens = || kept.iter().flat_map(|gr| gr.gens.iter());
        let sampler: Option<Vec<Vec<f32>>> = kept_gens()
            .all(|x| x.logprobs.len() == x.tokens.len())
            .then(|| kept_gens().map(|x| x.logprobs.clone()).collect());
        let mut update = UpdateStats::default();
        for _ in 0..spec.training.num_iterations {
            let lp = LogProbs {
                old: old_logp.as_deref(),
                reference: ref_logp.as_deref(),
                sampler: sampler.as_deref(),
            };
            self.update(&seqs, &adv32, lp, &mut update, None)?;
        }
        m.insert("time/update_s".into(), t.elapsed().as_secs_f64());
        let n = update.passes.max(1) as f64;
        m.insert("loss".into(), update.loss / n);
        m.insert("grad_norm".into(), update.grad_norm / n);
        m.insert("lr".into(), update.lr);
        m.insert("update/skipped".into(), update.skipped as f64);
        for (k, (sum, w)) in update.metrics {
            m.insert(k, sum / w.max(1e-12));
        }
        m.insert("time/step_s".into(), t_step.elapsed().as_secs_f64());
        Ok(m)
    }

    /// One optimiser step over the whole rollout batch, in micro-batches; the loss is the
    /// algorithm's, or `loss` when given (supervised fine-tuning's NLL).
    pub(super) fn update(
        &mut self,
        seqs: &[Sequence],
        adv: &[f32],
        lp: LogProbs<'_>,
        stats: &mut UpdateStats,
        loss: Option<&dyn crate::api::Algorithm>,
    ) -> Result<()> {
        let LogProbs {
            old,
            reference,
            sampler,
        } = lp;
        let spec = self.spec;
        let norm_rows = seqs.len();
        let norm_tokens: f64 = seqs.iter().map(|s| s.completion.len() as f64).sum();
        let micro = spec.training.micro_batch_size.max(1);
        let mut loss_sum = 0.0;
        let mut finite = true;
        let mut why = String::new();
        let inject = fault_injection_at().contains(&(self.state.optimizer_step + 1));
        for start in (0..seqs.len()).step_by(micro) {
            let end = (start + micro).min(seqs.len());
            let algorithm = loss.unwrap_or(&*self.algorithm);
            let metrics = &mut stats.metrics;
            let mut closure = |logp: &[Vec<f32>]| -> Result<Vec<Vec<f32>>> {
                ensure!(
                    logp.len() == end - start,
                    "model returned log-probs for {} of {} rows",
                    logp.len(),
                    end - start
                );
                let cols = logp.iter().map(Vec::len).max().unwrap_or(0);
                let rows = logp.len();
                let pad = |src: &[Vec<f32>]| -> Vec<f32> {
                    let mut out = vec![0.0; rows * cols];
                    for (r, row) in src.iter().enumerate() {
                        out[r * cols..r * cols + row.len()].copy_from_slice(row);
                    }
                    out
                };
                let mut cur = pad(logp);
                if inject && start == 0 && !cur.is_empty() {
                    cur[0] = f32::NAN;
                }
                let old_flat = old.map(|o| pad(&o[start..end])).unwrap_or_else(|| cur.clone());
                let ref_flat = reference.map(|r| pad(&r[start..end]));
                let sampler_flat = sampler.map(|s| pad(&s[start..end]));
                let mut mask = vec![0.0f32; rows * cols];
                for (r, row) in logp.iter().enumerate() {
                    ensure!(
                        row.len() == seqs[start + r].completion.len(),
                        "model returned {} log-probs for a completion of {} tokens",
                        row.len(),
                        seqs[start + r].completion.len()
                    );
                    mask[r * cols..r * cols + row.len()].fill(1.0);
                }
                let batch = LossBatch {
                    rows,
                    cols,
                    logp: &cur,
                    old_logp: &old_flat,
                    ref_logp: ref_flat.as_deref(),
                    sampler_logp: sampler_flat.as_deref(),
                    advantages: &adv[start..end],
                    mask: &mask,
                    norm_rows,
                    norm_tokens,
                };
                // A non-finite input never reaches the algorithm: the whole update is skipped.
                let bad_input = [
                    ("current", Some(&cur[..])),
                    ("old", Some(&old_flat[..])),
                    ("reference", ref_flat.as_deref()),
                    ("sampler", sampler_flat.as_deref()),
                ]
                .into_iter()
                .find_map(|(name, v)| v.and_then(|v| first_non_finite(v, &mask)).map(|i| (name, i)));
                if let Some((name, i)) = bad_input {
                    finite = false;
                    why = format!(
                        "non-finite {name} log-prob at row {}, token {}",
                        start + i / cols.max(1),
                        i % cols.max(1)
                    );
                }
                let out = if finite {
                    algorithm.loss(&batch)?
                } else {
                    crate::api::LossOutput::non_finite(rows * cols)
                };
                ensure!(
                    out.grad.len() == rows * cols,
                    "algorithm returned {} gradients for {} tokens",
                    out.grad.len(),
                    rows * cols
                );
                let tokens: f64 = mask.iter().map(|&x| x as f64).sum();
                if !out.loss.is_finite() || out.grad.iter().any(|x| !x.is_finite()) {
                    if finite {
                        why = format!(
                            "algorithm `{}` returned a non-finite loss or gradient",
                            algorithm.name()
                        );
                    }
                    finite = false;
                } else {
                    loss_sum += out.loss;
                    for (k, v) in &out.metrics {
                        let e = metrics.entry(k.clone()).or_insert((0.0, 0.0));
                        e.0 += v * tokens;
                        e.1 += tokens;
                    }
                }
                Ok(logp
                    .iter()
                    .enumerate()
                    .map(|(r, row)| {
                        if finite {
                            out.grad[r * cols..r * cols + row.len()].to_vec()
                        } else {
                            vec![0.0; row.len()]
                        }
                    })
                    .collect())
            };
            self.policy.accumulate_gradients(&seqs[start..end], &mut closure)?;
        }
        let total_opt = spec.training.steps * spec.training.num_iterations;
        let lr = lr_at(&spec.training, self.state.optimizer_step, total_opt);
        self.state.optimizer_step += 1;
        stats.lr = lr;
        stats.passes += 1;
        if !finite {
            self.policy.discard_gradients()?;
            self.state.skipped_updates += 1;
            stats.skipped += 1;
            self.run.log(&format!(
                "optimiser step {}: {why}: update skipped, weights and optimiser state kept",
                self.state.optimizer_step
            ));
            return Ok(());
        }
        let clip = (spec.training.max_grad_norm > 0.0).then_some(spec.training.max_grad_norm);
        let o = self.policy.optimizer_step(lr, clip)?;
        if !o.applied {
            self.state.skipped_updates += 1;
            stats.skipped += 1;
            self.run.log("non-finite gradient norm: update skipped");
        }
        stats.loss += loss_sum;
        stats.grad_norm += o.grad_norm;
        Ok(())
    }

    fn log_samples(&mut self, step: usize, groups: &[Group]) {
        let every = self.spec.logging.sample_every;
        if every == 0 || !step.is_multiple_of(every) && step != 1 {
            return;
        }
        let mut text = String::new();
        for (gi, gr) in groups.iter().enumerate() {
            for (ci, gen) in gr.gens.iter().enumerate().take(self.spec.logging.samples) {
                let item = &self.items[gr.item];
                text.push_str(&format!(
                    "### {} (group {gi}, sample {ci}, reward {:.3})\n\n```\n{}\n```\n\n",
                    item.id, gr.totals[ci], gen.text
                ));
            }
            if gi + 1 >= self.spec.logging.samples {
                break;
            }
        }
        self.run.log(&format!("samples at step {step}:\n{text}"));
        if let Some(b) = self.board.as_mut() {
            b.text("samples", &text, step);
        }
    }
}

/// The log-probs of one update besides the current ones: old policy, reference, sampler.
#[derive(Clone, Copy)]
pub(super) struct LogProbs<'a> {
    pub(super) old: Option<&'a [Vec<f32>]>,
    pub(super) reference: Option<&'a [Vec<f32>]>,
    pub(super) sampler: Option<&'a [Vec<f32>]>,
}

/// The rollout scalars under the names TRL's GRPOTrainer logs, so a run can sit beside a TRL run in
/// one TensorBoard: `reward` (mean total reward), `reward_std` (mean of the groups' unbiased std),
/// `frac_reward_zero_std`, `completions/mean_length` (tokens), `completions/clipped_ratio` (stopped
/// by `max_new_tokens`), and `entropy`. Generation returns only the sampled tokens' log-probs, not
/// the distributions, so `entropy` is the Monte-Carlo estimate −mean log π(yₜ) (its expectation
/// is the mean per-token entropy TRL computes exactly); it is logged only when the sampler draws
/// from π itself (temperature 1, no top-p/top-k) and the policy returned its log-probs.
fn trl_rollout_metrics(m: &mut Metrics, all: &[&Group], gen: &crate::spec::GenerationSpec) {
    let totals: Vec<f64> = all.iter().flat_map(|gr| gr.totals.iter().copied()).collect();
    m.insert("reward".into(), mean_std(&totals).0);
    let stds: Vec<f64> = all.iter().map(|gr| crate::algo::std_unbiased(&gr.totals)).collect();
    m.insert("reward_std".into(), mean_std(&stds).0);
    let zero = stds.iter().filter(|s| **s == 0.0).count();
    m.insert("frac_reward_zero_std".into(), zero as f64 / stds.len().max(1) as f64);
    let gens: Vec<&Generation> = all.iter().flat_map(|gr| gr.gens.iter()).collect();
    let lens: Vec<f64> = gens.iter().map(|x| x.tokens.len() as f64).collect();
    m.insert("completions/mean_length".into(), mean_std(&lens).0);
    let clipped = gens
        .iter()
        .filter(|x| x.finish == crate::api::FinishReason::Length)
        .count();
    m.insert(
        "completions/clipped_ratio".into(),
        clipped as f64 / gens.len().max(1) as f64,
    );
    let from_policy = gen.temperature == 1.0 && gen.top_p >= 1.0 && gen.top_k == 0;
    let tokens: usize = gens.iter().map(|x| x.tokens.len()).sum();
    if from_policy && tokens > 0 && gens.iter().all(|x| x.logprobs.len() == x.tokens.len()) {
        let sum: f64 = gens.iter().flat_map(|x| x.logprobs.iter()).map(|&l| l as f64).sum();
        m.insert("entropy".into(), -sum / tokens as f64);
    }
}

#[derive(Default)]
pub(super) struct UpdateStats {
    pub(super) loss: f64,
    pub(super) grad_norm: f64,
    pub(super) lr: f64,
    pub(super) passes: usize,
    pub(super) skipped: usize,
    pub(super) metrics: std::collections::BTreeMap<String, (f64, f64)>,
}

/// Index of the first unmasked non-finite value.
fn first_non_finite(v: &[f32], mask: &[f32]) -> Option<usize> {
    v.iter().zip(mask).position(|(x, m)| *m != 0.0 && !x.is_finite())
}

/// Optimiser steps (1-based, comma-separated) whose current log-probs get a NaN injected, from
/// `RECODE_INJECT_NONFINITE`: a fault injection for testing the non-finite guard on real runs.
fn fault_injection_at() -> Vec<usize> {
    std::env::var("RECODE_INJECT_NONFINITE")
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default()
}
