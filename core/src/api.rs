//! The plugin contracts. Built-in plugins implement these traits directly; shared-library plugins
//! are adapted to them by `plugin_abi` (rewards, algorithms: C ABI) or by the model loader.

use anyhow::Result;

/// One completion to score, with what a reward may need to judge it.
#[derive(Debug, Clone, Default)]
pub struct RewardInput<'a> {
    /// The rendered prompt the completion continues.
    pub prompt: &'a str,
    /// Generated text only (after the prefill; the ReCode prefill "<think>" is not included).
    pub completion: &'a str,
    /// The reference answer (ReCode: `new_code`).
    pub target: &'a str,
    /// Number of generated tokens (for length-based rewards).
    pub completion_tokens: usize,
    /// The generated token ids (empty where the caller has none, e.g. a copy baseline).
    pub completion_ids: &'a [u32],
    /// Every column of the data row (the six ReCode fields and any others), when known.
    pub columns: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// What `Reward::score_items` returns for a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RewardOutput {
    /// One per completion; `None`: this reward does not apply to that item (as TRL's `None`):
    /// the item's total leaves this reward out, and the share is logged as `reward/<label>/none_frac`.
    pub scores: Vec<Option<f64>>,
    /// Extra diagnostics of the batch (means), logged as `reward/<label>/<name>`.
    pub metrics: Vec<(String, f64)>,
}

/// A reward: many completions in, one score each out. Must be deterministic.
pub trait Reward: Send + Sync {
    fn name(&self) -> &str;
    fn score(&self, batch: &[RewardInput<'_>]) -> Result<Vec<f64>>;
    /// Scores that may be "does not apply", with extra metrics: what training calls. By default
    /// every item gets `score`'s value. (C-ABI plugins keep `score`: they see prompt, completion,
    /// target and token count only.)
    fn score_items(&self, batch: &[RewardInput<'_>]) -> Result<RewardOutput> {
        Ok(RewardOutput {
            scores: self.score(batch)?.into_iter().map(Some).collect(),
            metrics: vec![],
        })
    }
}

/// Per-token inputs of a policy-gradient loss for one micro-batch, row-major `[rows, cols]`.
///
/// Every objective here depends on the policy only through per-token log-probs, so an algorithm
/// returns the loss and d(loss)/d(logp); the host back-propagates `sum(grad * logp)` through the model.
#[derive(Debug, Clone)]
pub struct LossBatch<'a> {
    pub rows: usize,
    pub cols: usize,
    /// Current policy log-probs of the completion tokens (detached values).
    pub logp: &'a [f32],
    /// Log-probs under the policy that generated the samples (equal to `logp` on the first pass).
    pub old_logp: &'a [f32],
    /// Reference policy log-probs; `None` when the algorithm asked for no reference.
    pub ref_logp: Option<&'a [f32]>,
    /// The sampler's own log-probs (`Generation::logprobs`), for the rollout/train
    /// importance-sampling correction; `None` when the host has none. Not passed to C plugins.
    pub sampler_logp: Option<&'a [f32]>,
    /// One advantage per row (sequence-level estimators) broadcast over its tokens.
    pub advantages: &'a [f32],
    /// 1.0 for completion tokens that count, 0.0 for padding.
    pub mask: &'a [f32],
    /// Rows in the whole optimiser mini-batch this micro-batch belongs to (for normalisation).
    pub norm_rows: usize,
    /// Unmasked tokens in the whole mini-batch (for token-mean normalisation).
    pub norm_tokens: f64,
}

/// What an algorithm's loss returns for one micro-batch.
#[derive(Debug, Clone, Default)]
pub struct LossOutput {
    /// Contribution of this micro-batch to the mini-batch loss (sums to the mini-batch loss).
    pub loss: f64,
    /// d(loss)/d(logp), same layout as `LossBatch::logp`; zero where the mask is zero.
    pub grad: Vec<f32>,
    /// Named diagnostics (e.g. "clip_frac", "kl"), averaged over unmasked tokens of this micro-batch.
    pub metrics: Vec<(String, f64)>,
}

impl LossOutput {
    /// What an algorithm returns when a token's loss or gradient is not finite: the trainer then
    /// skips the whole update (keeping the last good weights and optimiser state) and logs it,
    /// instead of the run stopping on an error.
    pub fn non_finite(tokens: usize) -> Self {
        Self {
            loss: f64::NAN,
            grad: vec![0.0; tokens],
            metrics: vec![],
        }
    }
}

/// An RL algorithm at the level of plain arrays.
pub trait Algorithm: Send + Sync {
    fn name(&self) -> &str;
    /// Advantages for a batch of rewards laid out as consecutive groups of `group_size`.
    fn advantages(&self, rewards: &[f64], group_size: usize) -> Result<Vec<f64>>;
    /// Advantages for estimators that weight completions by their token counts (REINFORCE++
    /// whitens over tokens, as verl does); `lengths[i]` is completion i's token count. The trainer
    /// calls this one; by default it is `advantages`.
    fn advantages_with_lengths(&self, rewards: &[f64], group_size: usize, _lengths: &[usize]) -> Result<Vec<f64>> {
        self.advantages(rewards, group_size)
    }
    /// Whether a group is kept for the update (DAPO dynamic sampling drops zero-variance groups).
    fn keep_group(&self, _group_rewards: &[f64]) -> bool {
        true
    }
    /// Whether `LossBatch::ref_logp` is needed (a KL term against the reference policy).
    fn needs_reference(&self) -> bool;
    fn loss(&self, batch: &LossBatch<'_>) -> Result<LossOutput>;
}

/// Sampling settings for one generation call.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    /// 0.0 means greedy.
    pub temperature: f64,
    pub top_p: f64,
    /// 0 disables top-k.
    pub top_k: usize,
    /// Extra stop token ids beyond the model's EOS ids.
    pub stop_token_ids: Vec<u32>,
    /// Generation stops once the decoded completion contains one of these (the string is kept).
    pub stop_strings: Vec<String>,
    pub seed: u64,
    /// One generator per row, so what a row samples does not depend on the batch it is in: row r
    /// draws from ChaCha8 seeded with `row_seeds[r].seed`, on stream `row_seeds[r].stream`.
    /// Empty: row r uses `seed` on stream r (training). A policy that cannot honour it refuses it.
    pub row_seeds: Vec<RowSeed>,
}

/// The generator of one row of a generation call (see `SamplingParams::row_seeds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSeed {
    pub seed: u64,
    pub stream: u64,
}

impl SamplingParams {
    /// Row `r`'s generator; an error when `row_seeds` is set but does not have one per row.
    pub fn row_seed(&self, r: usize, rows: usize) -> Result<RowSeed> {
        if self.row_seeds.is_empty() {
            return Ok(RowSeed {
                seed: self.seed,
                stream: r as u64,
            });
        }
        anyhow::ensure!(
            self.row_seeds.len() == rows,
            "sampling: {} row seeds for {rows} prompts",
            self.row_seeds.len()
        );
        Ok(self.row_seeds[r])
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            stop_token_ids: vec![],
            stop_strings: vec![],
            seed: 0,
            row_seeds: vec![],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    StopString,
    Length,
}

/// One sampled completion.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Completion token ids (including the EOS token when it ended the sequence).
    pub tokens: Vec<u32>,
    pub text: String,
    /// Log-prob of each sampled token under the sampling distribution's logits before temperature,
    /// i.e. the policy's own log-prob (what "old log-probs" means in PPO-style objectives).
    pub logprobs: Vec<f32>,
    pub finish: FinishReason,
}

/// A prompt with one completion, both as token ids; the unit of log-prob computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub prompt: Vec<u32>,
    pub completion: Vec<u32>,
}

/// A chat message for template rendering.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Text <-> tokens for one model.
pub trait TextCodec: Send + Sync {
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// Token ids that end generation (e.g. `<|im_end|>`, `<|endoftext|>`).
    fn eos_ids(&self) -> Vec<u32>;
    fn pad_id(&self) -> u32;
    /// The model's own chat template (Jinja), if it ships one.
    fn chat_template(&self) -> Option<String>;
}

/// Statistics of one optimiser step.
#[derive(Debug, Clone, Default)]
pub struct OptimStats {
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    /// False when the step was skipped (non-finite gradient).
    pub applied: bool,
}

/// What `Policy::accumulate_gradients` hands the log-probs to: per row, the completion tokens'
/// log-probs in, d(loss)/d(logp) out.
pub type LossGradFn<'a> = dyn FnMut(&[Vec<f32>]) -> Result<Vec<Vec<f32>>> + 'a;

/// A trainable policy. Tensor work stays inside the plugin; the host sees plain arrays.
pub trait Policy {
    fn codec(&self) -> &dyn TextCodec;
    /// Sample one completion per prompt (callers repeat prompts for groups).
    fn generate(&mut self, prompts: &[Vec<u32>], params: &SamplingParams) -> Result<Vec<Generation>>;
    /// Per-token log-probs of each completion, no gradient. `adapters = false` gives the
    /// reference policy (the base model with adapters disabled).
    fn logprobs(&mut self, seqs: &[Sequence], adapters: bool) -> Result<Vec<Vec<f32>>>;
    /// Forward with gradient on one micro-batch: computes log-probs, hands them to `loss_grad`
    /// (which returns d(loss)/d(logp) per token), then back-propagates and accumulates gradients.
    fn accumulate_gradients(&mut self, seqs: &[Sequence], loss_grad: &mut LossGradFn<'_>) -> Result<()>;
    /// Apply accumulated gradients (AdamW), clip by global norm, then clear them.
    fn optimizer_step(&mut self, lr: f64, max_grad_norm: Option<f64>) -> Result<OptimStats>;
    /// Drop accumulated gradients without updating (used when a loss turned out non-finite).
    fn discard_gradients(&mut self) -> Result<()> {
        anyhow::bail!("this policy cannot discard gradients")
    }
    /// Number of trainable parameters.
    fn trainable_parameters(&self) -> usize;
    /// Write trainable weights and optimiser state into `dir` (the caller makes it atomic).
    fn save(&self, dir: &std::path::Path) -> Result<()>;
    fn load(&mut self, dir: &std::path::Path) -> Result<()>;
    /// Set the trainable weights only (no optimiser state) from a checkpoint's `policy` folder or
    /// a PEFT adapter folder: `recode eval --adapter` and the warm start `[model.adapter] init`.
    fn load_adapter(&mut self, dir: &std::path::Path) -> Result<()> {
        anyhow::bail!("this model plugin cannot load adapter weights ({})", dir.display())
    }
    /// Export adapters in PEFT layout, if the policy has adapters.
    fn export_peft(&self, _dir: &std::path::Path) -> Result<()> {
        anyhow::bail!("this policy has no adapters to export")
    }
}
