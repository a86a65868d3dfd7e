//! Held-out scoring during training: greedy completions of migrations the run never trains on,
//! scored by reward functions (`[heldout]` in the spec). This measures what ReCode training is
//! for, unseen migrations getting better, at step 0 (the baseline) and as the run goes.

use super::{Metrics, TaskItem, WeightedReward};
use crate::api::{Policy, RewardInput, SamplingParams};
use anyhow::{ensure, Result};

pub struct Heldout {
    pub items: Vec<TaskItem>,
    /// Each reward's mean is logged as `heldout/<label>` (weights are not used).
    pub rewards: Vec<WeightedReward>,
    pub every: usize,
    pub max_new_tokens: usize,
    pub batch_size: usize,
    pub stop_strings: Vec<String>,
    /// Prompts longer than this are left out (0 = no limit), as in training.
    pub max_prompt_tokens: usize,
    /// The copy baseline, one per item: the answer a model would give that copies the old code
    /// unchanged, correctly formatted ([`copy_answer`]). Scored once, at step 0, by the same
    /// rewards (`heldout-copy.jsonl`, `heldout_copy/` scalars). Empty: no copy baseline.
    pub copy_answers: Vec<String>,
}

/// The completion of a model that copies `old_code` into the ReCode answer format (after the
/// prefilled `<think>`): ES* rewards closeness to the new code, and the old code is often close,
/// so a trained model has to beat this to show it migrates rather than copies.
pub fn copy_answer(old_code: &str) -> String {
    format!("</think>\n<answer>\n```python\n{}\n```\n</answer>", old_code.trim_end())
}

impl Heldout {
    /// Whether to score after `step` (step 0 is the baseline before any update).
    pub fn due(&self, step: usize, total: usize) -> bool {
        self.every > 0 && (step == 0 || step.is_multiple_of(self.every) || step == total)
    }

    /// Greedy completions of every held-out item, scored. Metrics: `heldout/<label>` (mean over
    /// items), `heldout/exact_rate` (share scoring 1 under `em`, when it is among the rewards),
    /// `heldout/items` and `heldout/length_mean` (completion tokens). Also one record per item
    /// (its id, completion tokens and each reward's score), for paired comparisons between runs
    /// and steps (`heldout.jsonl`, read by the sweep summary's bootstrap intervals). With
    /// `with_copy` (and copy answers), the copy baseline on the same items, as `heldout_copy/`.
    pub fn evaluate(&self, policy: &mut dyn Policy, with_copy: bool) -> Result<Scored> {
        let mut prompts = Vec::new();
        let mut kept = Vec::new(); // indices into `items` (and `copy_answers`)
        for (i, item) in self.items.iter().enumerate() {
            let ids = policy.codec().encode(&item.prompt)?;
            if self.max_prompt_tokens == 0 || ids.len() <= self.max_prompt_tokens {
                prompts.push(ids);
                kept.push(i);
            }
        }
        ensure!(
            !kept.is_empty(),
            "no held-out prompt fits prompt.max_prompt_tokens ({} held-out rows)",
            self.items.len()
        );
        let params = SamplingParams {
            max_new_tokens: self.max_new_tokens,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            stop_token_ids: vec![],
            stop_strings: self.stop_strings.clone(),
            seed: 0,
            row_seeds: vec![],
        };
        let mut gens = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(self.batch_size.max(1)) {
            let out = policy.generate(chunk, &params)?;
            ensure!(
                out.len() == chunk.len(),
                "model returned {} completions for {} held-out prompts",
                out.len(),
                chunk.len()
            );
            gens.extend(out);
        }
        let texts: Vec<&str> = gens.iter().map(|g| g.text.as_str()).collect();
        let tokens: Vec<usize> = gens.iter().map(|g| g.tokens.len()).collect();
        let items: Vec<&TaskItem> = kept.iter().map(|&i| &self.items[i]).collect();
        let (metrics, scores) = self.score(&items, &texts, &tokens, "heldout")?;
        let copy = if with_copy && !self.copy_answers.is_empty() {
            ensure!(
                self.copy_answers.len() == self.items.len(),
                "{} copy answers for {} held-out items",
                self.copy_answers.len(),
                self.items.len()
            );
            let texts: Vec<&str> = kept.iter().map(|&i| self.copy_answers[i].as_str()).collect();
            let tokens = texts
                .iter()
                .map(|t| policy.codec().encode(t).map(|ids| ids.len()))
                .collect::<Result<Vec<_>>>()?;
            Some(self.score(&items, &texts, &tokens, "heldout_copy")?)
        } else {
            None
        };
        Ok(Scored {
            metrics,
            items: scores,
            copy,
        })
    }

    /// Every reward's score of each completion, and the means as `<prefix>/...`.
    fn score(
        &self,
        kept: &[&TaskItem],
        texts: &[&str],
        tokens: &[usize],
        prefix: &str,
    ) -> Result<(Metrics, Vec<ItemScores>)> {
        let inputs: Vec<RewardInput> = kept
            .iter()
            .zip(texts)
            .zip(tokens)
            .map(|((item, text), &t)| RewardInput {
                prompt: &item.prompt,
                completion: text,
                target: &item.target,
                completion_tokens: t,
                completion_ids: &[],
                columns: Some(&item.columns),
            })
            .collect();
        let n = inputs.len() as f64;
        let mut m = Metrics::new();
        let mut items: Vec<ItemScores> = kept
            .iter()
            .zip(tokens)
            .zip(texts)
            .map(|((item, &t), text)| ItemScores {
                id: item.id.clone(),
                tokens: t,
                scores: Metrics::new(),
                text: text.to_string(),
            })
            .collect();
        for r in &self.rewards {
            let scores = r.reward.score(&inputs)?;
            ensure!(
                scores.len() == inputs.len(),
                "reward `{}` returned {} scores for {} held-out completions",
                r.label,
                scores.len(),
                inputs.len()
            );
            for (it, s) in items.iter_mut().zip(&scores) {
                it.scores.insert(r.label.clone(), *s);
            }
            m.insert(format!("{prefix}/{}", r.label), scores.iter().sum::<f64>() / n);
            if r.reward.name() == "em" {
                m.insert(
                    format!("{prefix}/exact_rate"),
                    scores.iter().filter(|s| **s == 1.0).count() as f64 / n,
                );
            }
        }
        m.insert(format!("{prefix}/items"), n);
        m.insert(format!("{prefix}/length_mean"), tokens.iter().sum::<usize>() as f64 / n);
        Ok((m, items))
    }
}

/// One held-out scoring: the means, one record per item, and the copy baseline's when asked for.
pub struct Scored {
    pub metrics: Metrics,
    pub items: Vec<ItemScores>,
    pub copy: Option<(Metrics, Vec<ItemScores>)>,
}

/// One held-out item's scores at one evaluation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ItemScores {
    pub id: String,
    pub tokens: usize,
    /// Reward label -> score.
    pub scores: Metrics,
    /// The completion itself, so that a score can be traced to its cause (no python block, a
    /// block that does not parse, an answer cut at the token limit). Absent in older runs' files.
    #[serde(default)]
    pub text: String,
}
