//! The experiment spec: every knob, its default and its meaning, in one place.
//!
//! A spec is TOML. Sections map to the structs below; unknown keys are errors. Defaults follow the
//! ReCode GRPO script where the paper fixes a value, and TRL's `GRPOConfig` elsewhere.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Free-form options handed to a plugin, which validates them itself.
pub type Options = BTreeMap<String, toml::Value>;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Spec {
    /// Spec fragments merged before this file, in order (later wins), relative to this file.
    pub extends: Vec<String>,
    pub run: RunSpec,
    pub backend: BackendSpec,
    pub model: ModelSpec,
    pub data: DataSpec,
    pub prompt: PromptSpec,
    /// Weighted reward terms; the total reward is the weighted sum.
    pub reward: Vec<RewardSpec>,
    pub algorithm: AlgorithmSpec,
    pub generation: GenerationSpec,
    pub training: TrainingSpec,
    pub logging: LoggingSpec,
    pub eval: EvalSpec,
    pub heldout: HeldoutSpec,
    /// The target of `training.mode = "sft"`.
    pub sft: SftSpec,
}

/// Supervised fine-tuning's target (used when `training.mode = "sft"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SftSpec {
    /// The completion trained after the prompt and its prefill (Jinja over the data row, like the
    /// prompt). The default is the ReCode answer format after the prefill's `<think>`: an empty
    /// reasoning, then the reference migration in a python block inside `<answer>`.
    pub target: String,
    /// End the target with the model's end-of-sequence token (its first EOS id), as TRL's
    /// SFTTrainer does, so the model learns to stop.
    pub append_eos: bool,
}

impl Default for SftSpec {
    fn default() -> Self {
        Self {
            target: "\n</think>\n<answer>\n```python\n{{ new_code }}\n```\n</answer>".into(),
            append_eos: true,
        }
    }
}

impl Spec {
    /// Every leaf of the resolved spec by dotted key (arrays are leaves): what sweeps compare
    /// across runs and checkpoints record for a strict resume.
    pub fn flatten(&self) -> anyhow::Result<BTreeMap<String, toml::Value>> {
        fn walk(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
            match v {
                toml::Value::Table(t) if !t.is_empty() => {
                    for (k, x) in t {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&key, x, out);
                    }
                }
                _ => {
                    out.insert(prefix.to_string(), v.clone());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk("", &toml::Value::try_from(self)?, &mut out);
        Ok(out)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunSpec {
    /// Run name; outputs go to `<output_dir>/<name>/<timestamp>/`.
    pub name: String,
    /// Seed for data order, sampling and adapter initialisation.
    pub seed: u64,
    /// Root folder of run directories, relative to the working directory.
    pub output_dir: String,
}

impl Default for RunSpec {
    fn default() -> Self {
        Self {
            name: "run".into(),
            seed: 42,
            output_dir: "runs".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn-ndarray on the CPU (always available).
    #[default]
    Cpu,
    /// burn-wgpu (Vulkan/Metal/DX12; lavapipe on machines without a GPU).
    Wgpu,
    /// burn-cuda (NVIDIA).
    Cuda,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BackendSpec {
    pub kind: BackendKind,
    /// GPU index for wgpu/cuda.
    pub device: usize,
    /// Compute dtype of the frozen weights and the activations. Trainable parameters (adapters, or
    /// every weight under full fine-tuning), their gradients, AdamW's moments, the gradient norm
    /// and the log-probs stay f32 at every precision; f16 trains with dynamic loss scaling
    /// (bf16 needs none). The CPU backend supports f32 only; wgpu has no bf16.
    pub precision: Precision,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// Train every weight (small models only).
    Full,
    Lora,
    #[default]
    Dora,
    /// No trainable parameters (evaluation, generation).
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterSpec {
    pub kind: AdapterKind,
    /// LoRA rank r.
    pub rank: usize,
    /// LoRA alpha; the update is scaled by alpha / rank.
    pub alpha: f64,
    pub dropout: f64,
    /// Linear layers that get adapters; empty means PEFT's default for the architecture
    /// (q_proj and v_proj for Qwen2 and Llama). "all-linear" adapts every projection.
    pub target_modules: Vec<String>,
    /// Start from trained adapter weights (weights only; the optimiser starts fresh): a PEFT
    /// folder, a checkpoint, or a run directory (its newest checkpoint), relative to the working
    /// directory; e.g. an SFT run's adapter as the warm start of an RL run. Kind, rank and targets
    /// must match this section's. Empty: a fresh adapter (PEFT's initialisation).
    pub init: String,
}

impl Default for AdapterSpec {
    fn default() -> Self {
        Self {
            kind: AdapterKind::Dora,
            rank: 64,
            alpha: 64.0,
            dropout: 0.0,
            target_modules: vec![],
            init: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    /// Built-in model plugin name, or a path to a model plugin shared library.
    pub plugin: String,
    /// A known model id fetched on demand (e.g. "qwen2.5-coder-0.5b-instruct"); alternative to `path`.
    pub id: String,
    /// A Hugging Face folder (config.json + safetensors) or a .gguf file.
    pub path: String,
    /// "auto" (from config.json / GGUF metadata), "qwen2" or "llama".
    pub architecture: String,
    /// Tokenizer file (tokenizer.json); empty means next to the weights or inside the GGUF.
    pub tokenizer: String,
    pub adapter: AdapterSpec,
    /// Plugin-specific options.
    pub options: Options,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            plugin: "transformer".into(),
            id: String::new(),
            path: String::new(),
            architecture: "auto".into(),
            tokenizer: String::new(),
            adapter: AdapterSpec::default(),
            options: Options::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataSpec {
    /// ReCode-format JSON lines (or a JSON array).
    pub path: String,
    /// Drop rows whose target (new_code) does not parse as Python.
    pub drop_unparsable_targets: bool,
    /// Drop rows whose old_code equals new_code.
    pub drop_unchanged: bool,
    /// Shuffle with the run seed each epoch.
    pub shuffle: bool,
    /// Fraction of rows held out from training (seeded split).
    pub heldout_fraction: f64,
    /// Seed of the held-out split; -1 uses `run.seed`. Fix it in a sweep over seeds so that
    /// every run holds out (and is scored on) the same rows.
    pub split_seed: i64,
    /// What the split holds out whole: "update" (every row sharing a held-out row's
    /// `update_info` is held out too, so no held-out update is trained on) or "row" (rows one by
    /// one, the split of specs written before this option).
    pub split_by: String,
    /// Use at most this many rows (0 = all).
    pub max_items: usize,
}

impl Default for DataSpec {
    fn default() -> Self {
        Self {
            path: "data/sample-migrations.jsonl".into(),
            drop_unparsable_targets: true,
            drop_unchanged: false,
            shuffle: true,
            heldout_fraction: 0.0,
            split_seed: -1,
            split_by: "update".into(),
            max_items: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PromptSpec {
    /// System message (Jinja; fields of the data row are in scope).
    pub system: String,
    /// User message (Jinja; fields of the data row are in scope).
    pub user: String,
    /// Text the assistant turn starts with; generation continues it.
    pub prefill: String,
    /// Chat template (Jinja, HF conventions: `messages`, `add_generation_prompt`). Empty means the
    /// model's own template.
    pub chat_template: String,
    /// Prompts longer than this many tokens are skipped (counted in the log).
    pub max_prompt_tokens: usize,
}

impl Default for PromptSpec {
    fn default() -> Self {
        Self {
            system: String::new(),
            user: String::new(),
            prefill: String::new(),
            chat_template: String::new(),
            max_prompt_tokens: 2048,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RewardSpec {
    /// Built-in reward name, or a path to a reward plugin shared library. Empty for a Python
    /// reward (`python` or `module`).
    pub name: String,
    pub weight: f64,
    /// Name under which the component is logged (defaults to `name`, or a Python reward's function).
    pub label: String,
    /// The reward's options; a Python reward gets them as keyword arguments.
    pub options: Options,
    /// A Python reward: a `.py` file (relative to the working directory), e.g. "rewards/my_reward.py".
    pub python: String,
    /// A Python reward from an importable module of the interpreter (e.g. "trl.rewards"), instead of `python`.
    pub module: String,
    /// The Python function; empty: "reward" under style "trl", "compute_score" under "verl".
    pub function: String,
    /// How the Python function is called: "trl" (`f(prompts, completions, completion_ids, <data
    /// columns>, **options) -> list[float | None]`, once per batch) or "verl"
    /// (`compute_score(data_source, solution_str, ground_truth, extra_info, **options) -> float |
    /// dict`, per item).
    pub style: String,
    /// Style "trl": completions as "text" or as "messages" (`[{"role": "assistant", "content": ...}]`,
    /// what TRL passes for conversational data, e.g. to `trl.rewards.think_format_reward`).
    pub completions_as: String,
    /// The interpreter of a Python reward (a venv's `bin/python` to use its packages).
    pub python_exe: String,
    /// Seconds a Python reward may take for one batch before the run stops with an error.
    pub timeout_s: f64,
}

impl Default for RewardSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            weight: 1.0,
            label: String::new(),
            options: Options::new(),
            python: String::new(),
            module: String::new(),
            function: String::new(),
            style: "trl".into(),
            completions_as: "text".into(),
            python_exe: "python3".into(),
            timeout_s: 300.0,
        }
    }
}

impl RewardSpec {
    /// Whether this is a Python reward (`python` or `module` set).
    pub fn is_python(&self) -> bool {
        !self.python.is_empty() || !self.module.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlgorithmSpec {
    /// Built-in algorithm name ("grpo", "dapo", "dr_grpo"), or a path to an algorithm plugin.
    pub name: String,
    /// Algorithm-specific knobs (see each algorithm's Config for names and defaults).
    pub options: Options,
}

impl Default for AlgorithmSpec {
    fn default() -> Self {
        Self {
            name: "grpo".into(),
            options: Options::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationSpec {
    /// Completions sampled per prompt (the group size G).
    pub num_generations: usize,
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: f64,
    /// 0 disables top-k.
    pub top_k: usize,
    /// Stop once the completion contains one of these.
    pub stop_strings: Vec<String>,
    /// Sequences decoded together (memory vs speed). All prompts x G of a step go through
    /// generation in batches of at most this many rows; a group's rows share one prompt prefill.
    pub batch_size: usize,
    /// KV-cache budget of one generation batch, in positions: a batch holds at most
    /// batch_tokens / (longest prompt + max_new_tokens) rows (at least one). 0 = no budget.
    pub batch_tokens: usize,
    /// DAPO dynamic sampling: at most this many generation rounds to fill a batch with kept groups.
    pub max_num_gen_batches: usize,
}

impl Default for GenerationSpec {
    fn default() -> Self {
        Self {
            num_generations: 8,
            max_new_tokens: 1024,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            stop_strings: vec![],
            batch_size: 8,
            batch_tokens: 65536,
            max_num_gen_batches: 4,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    Linear,
    #[default]
    Cosine,
}

/// What a training step does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TrainingMode {
    /// Reinforcement learning: sample `generation.num_generations` completions per prompt, score
    /// them with `[[reward]]`, update with `[algorithm]`.
    #[default]
    Rl,
    /// Supervised fine-tuning: no generation; the loss is the token-mean negative log-likelihood of
    /// the `[sft] target` completion given the prompt (prompt tokens masked, as TRL's SFTTrainer
    /// with `completion_only_loss`). `[[reward]]` and `[algorithm]` are not used.
    Sft,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSpec {
    /// "rl" (default) or "sft"; see `TrainingMode`.
    pub mode: TrainingMode,
    /// Only "adamw" is built in.
    pub optimizer: String,
    pub lr: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// Learning-rate schedule after warmup.
    pub schedule: Schedule,
    /// Linear warmup steps; if 0, `warmup_ratio * steps` is used.
    pub warmup_steps: usize,
    pub warmup_ratio: f64,
    /// Optimiser steps in the run.
    pub steps: usize,
    /// Prompts sampled per step; each gets `generation.num_generations` completions. Under
    /// `mode = "sft"`: data rows per step (each one target completion).
    pub prompts_per_step: usize,
    /// Passes over each rollout batch (TRL's num_iterations; >1 makes the ratio differ from 1).
    pub num_iterations: usize,
    /// Sequences per forward/backward; gradient accumulation covers the rest of the batch.
    pub micro_batch_size: usize,
    /// Clip the gradient to this global L2 norm (0 disables).
    pub max_grad_norm: f64,
    /// Write a checkpoint every N steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Keep this many most recent checkpoints (0 keeps all).
    pub keep_checkpoints: usize,
}

impl Default for TrainingSpec {
    fn default() -> Self {
        Self {
            mode: TrainingMode::Rl,
            optimizer: "adamw".into(),
            lr: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            schedule: Schedule::Cosine,
            warmup_steps: 0,
            warmup_ratio: 0.0,
            steps: 100,
            prompts_per_step: 1,
            num_iterations: 1,
            micro_batch_size: 2,
            max_grad_norm: 1.0,
            checkpoint_every: 50,
            keep_checkpoints: 3,
        }
    }
}

/// Scoring the held-out split (`data.heldout_fraction`) during training: greedy completions of
/// migrations the run never trains on, scored by reward functions. Logged at step 0 (the
/// untrained baseline), every `every` steps and at the end, as `heldout/<reward>` (mean) and
/// `heldout/exact_rate` (share with an exact migration, from `em`) in TensorBoard, eval.jsonl
/// and summary.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeldoutSpec {
    /// Score every N steps (0 = never); also at step 0 and at the last step when on.
    pub every: usize,
    /// Score at most this many held-out rows, the first of the seeded split (0 = all).
    pub limit: usize,
    /// Completion budget (0 = generation.max_new_tokens); generation.stop_strings apply.
    pub max_new_tokens: usize,
    /// Rows generated together (0 = generation.batch_size).
    pub batch_size: usize,
    /// Built-in reward names, each logged as its mean (default options, e.g. code from the
    /// first python block).
    pub rewards: Vec<String>,
}

impl Default for HeldoutSpec {
    fn default() -> Self {
        Self {
            every: 0,
            limit: 32,
            max_new_tokens: 0,
            batch_size: 0,
            rewards: ["format", "em_star", "es_star", "em"].map(String::from).to_vec(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSpec {
    /// Write TensorBoard event files under the run directory.
    pub tensorboard: bool,
    /// Log sample completions (as TensorBoard text and in the log) every N steps (0 = never).
    pub sample_every: usize,
    /// Completions logged each time.
    pub samples: usize,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for LoggingSpec {
    fn default() -> Self {
        Self {
            tensorboard: true,
            sample_every: 10,
            samples: 2,
            progress: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSpec {
    /// "cua" (CodeUpdateArena) or "humaneval".
    pub benchmark: String,
    pub data: String,
    /// Evaluate during training every N steps (0 = never).
    pub every: usize,
    /// Samples per problem (n of pass@k).
    pub n_samples: usize,
    /// The k values of pass@k reported.
    pub k: Vec<usize>,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
    /// Rows generated together, across problems and their samples. Each row has its own seed
    /// (from the run seed, the problem's index and the sample's), so results do not depend on it;
    /// larger batches decode faster until memory or compute runs out (CPU: 8 is about 6x batch 1).
    pub batch_size: usize,
    /// Prompt variant: "recode" (update shown in <doc>), "no_update", "update_prepended".
    pub prompt: String,
    /// Evaluate at most this many problems (0 = all).
    pub limit: usize,
    /// Parallel sandboxed programs.
    pub workers: usize,
    /// Wall-time limit per program, seconds.
    pub timeout_s: f64,
    /// Memory per program, MiB (the job's memory cgroup: `memory_mb` plus the setup's allowance;
    /// an address-space limit where no memory cgroup works).
    pub memory_mb: u64,
    /// Where no isolation works (no root, no unprivileged user namespaces), run model-written
    /// code anyway, unconfined, instead of refusing (`--unsafe-no-sandbox`). Reports say so.
    pub unsafe_no_sandbox: bool,
    /// CodeUpdateArena: import the names the solution signature uses (`List`, `Tuple`, ...) in
    /// each program's setup (a documented deviation from the original harness).
    pub signature_imports: bool,
}

impl Default for EvalSpec {
    fn default() -> Self {
        Self {
            benchmark: "cua".into(),
            data: String::new(),
            every: 0,
            n_samples: 1,
            k: vec![1],
            temperature: 0.0,
            top_p: 1.0,
            max_new_tokens: 1024,
            batch_size: 8,
            prompt: "recode".into(),
            limit: 0,
            workers: 2,
            timeout_s: 10.0,
            memory_mb: 2048,
            unsafe_no_sandbox: false,
            signature_imports: true,
        }
    }
}
