//! Supervised fine-tuning as a step of the same trainer (`training.mode = "sft"`): no rollout; each
//! row's `[sft] target` is the completion, and the loss is its token-mean negative log-likelihood
//! given the prompt (prompt tokens are never in the loss: the policy returns log-probs of the
//! completion only). Everything around the step (schedule, micro-batches, gradient accumulation,
//! checkpoints, resume, held-out scoring, TensorBoard) is the RL run's own.

use super::step::{LogProbs, UpdateStats};
use super::{Metrics, Trainer};
use crate::api::{Algorithm, LossBatch, LossOutput, Sequence};
use anyhow::{bail, Result};
use std::time::Instant;

/// Token-mean NLL over every target token of the optimiser batch:
/// `loss = -Σ mask·logp / norm_tokens`, so `d loss / d logp = -mask / norm_tokens`.
pub struct NllLoss;

impl Algorithm for NllLoss {
    fn name(&self) -> &str {
        "sft"
    }
    fn advantages(&self, _rewards: &[f64], _group_size: usize) -> Result<Vec<f64>> {
        bail!("supervised fine-tuning has no advantages")
    }
    fn needs_reference(&self) -> bool {
        false
    }
    fn loss(&self, b: &LossBatch<'_>) -> Result<LossOutput> {
        let norm = b.norm_tokens.max(1.0);
        let mut loss = 0.0;
        let (mut tokens, mut prob, mut confident) = (0.0, 0.0, 0.0);
        let grad = b
            .logp
            .iter()
            .zip(b.mask)
            .map(|(&lp, &m)| {
                if m != 0.0 {
                    loss -= lp as f64 / norm;
                    tokens += 1.0;
                    let p = (lp as f64).exp();
                    prob += p;
                    // Above 1/2 the target token is the model's argmax for sure.
                    confident += f64::from(p > 0.5);
                }
                -m / norm as f32
            })
            .collect();
        let per_token = |x: f64| x / f64::max(tokens, 1.0);
        Ok(LossOutput {
            loss,
            grad,
            metrics: vec![
                ("sft/target_prob".into(), per_token(prob)),
                ("sft/target_prob_above_half".into(), per_token(confident)),
            ],
        })
    }
}

impl Trainer<'_> {
    /// Token ids of an item's SFT target, with the model's first EOS id when `sft.append_eos`.
    fn sft_target_ids(&self, item: usize) -> Result<Vec<u32>> {
        let mut ids = self.policy.codec().encode(&self.items[item].sft_target)?;
        if self.spec.sft.append_eos {
            if let Some(&eos) = self.policy.codec().eos_ids().first() {
                ids.push(eos);
            }
        }
        if ids.is_empty() {
            bail!(
                "sft.target renders to no tokens for training row `{}`",
                self.items[item].id
            );
        }
        Ok(ids)
    }

    pub(super) fn sft_step(&mut self, _step: usize) -> Result<Metrics> {
        let t_step = Instant::now();
        let rows = self.next_prompts(self.spec.training.prompts_per_step)?;
        let seqs = rows
            .into_iter()
            .map(|(item, prompt)| {
                Ok(Sequence {
                    prompt,
                    completion: self.sft_target_ids(item)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let target_tokens: usize = seqs.iter().map(|s| s.completion.len()).sum();
        let pass_tokens: usize = seqs.iter().map(|s| s.prompt.len() + s.completion.len()).sum();
        let mut update = UpdateStats::default();
        let t = Instant::now();
        let no_logp = LogProbs {
            old: None,
            reference: None,
            sampler: None,
        };
        self.update(&seqs, &vec![0.0; seqs.len()], no_logp, &mut update, Some(&NllLoss))?;
        let t_update = t.elapsed().as_secs_f64();
        let mut m = Metrics::new();
        m.insert("loss".into(), update.loss);
        m.insert("grad_norm".into(), update.grad_norm);
        m.insert("lr".into(), update.lr);
        m.insert("update/skipped".into(), update.skipped as f64);
        for (k, (sum, w)) in update.metrics {
            m.insert(k, sum / w.max(1e-12));
        }
        m.insert("sft/rows".into(), seqs.len() as f64);
        m.insert("sft/target_tokens".into(), target_tokens as f64);
        m.insert("tokens/per_pass".into(), pass_tokens as f64);
        // Prompt and target tokens through forward and backward, per second.
        m.insert(
            "throughput/tokens_per_s".into(),
            pass_tokens as f64 / t_update.max(1e-9),
        );
        m.insert("time/update_s".into(), t_update);
        m.insert("time/step_s".into(), t_step.elapsed().as_secs_f64());
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: two rows of one micro-batch, the second padded; four target tokens in the whole
    /// optimiser batch (this micro-batch has three of them).
    #[test]
    fn nll_is_the_token_mean_over_the_optimiser_batch_and_its_gradient_is_minus_one_over_n() {
        let logp = [-0.5f32, -1.0, -2.0_f32.ln(), 0.0];
        let mask = [1.0f32, 1.0, 1.0, 0.0];
        let b = LossBatch {
            rows: 2,
            cols: 2,
            logp: &logp,
            old_logp: &logp,
            ref_logp: None,
            sampler_logp: None,
            advantages: &[0.0, 0.0],
            mask: &mask,
            norm_rows: 3,
            norm_tokens: 4.0,
        };
        let out = NllLoss.loss(&b).unwrap();
        let want = (0.5 + 1.0 + 2.0_f64.ln()) / 4.0;
        assert!((out.loss - want).abs() < 1e-6, "{} vs {want}", out.loss);
        assert_eq!(out.grad, vec![-0.25, -0.25, -0.25, 0.0]);
        let metric = |k: &str| out.metrics.iter().find(|m| m.0 == k).unwrap().1;
        let probs = ((-0.5f64).exp() + (-1.0f64).exp() + 0.5) / 3.0;
        assert!((metric("sft/target_prob") - probs).abs() < 1e-6);
        // exp(-0.5) = 0.61 is above one half; exp(-1) = 0.37 and 0.5 are not.
        assert!((metric("sft/target_prob_above_half") - 1.0 / 3.0).abs() < 1e-9);
    }
}
