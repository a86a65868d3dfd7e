//! Architecture hyper-parameters shared by HF `config.json` and GGUF metadata.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Qwen2,
    Llama,
}

impl Architecture {
    /// From an HF `model_type` / `architectures[0]` or a GGUF `general.architecture`.
    pub fn parse(s: &str) -> Option<Self> {
        let l = s.to_ascii_lowercase();
        if l.starts_with("qwen2") {
            Some(Self::Qwen2)
        } else if l.starts_with("llama") || l == "mistral" || l == "mistralforcausallm" {
            Some(Self::Llama)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qwen2 => "qwen2",
            Self::Llama => "llama",
        }
    }
}

/// Decoder-only transformer hyper-parameters (Qwen2 / Llama family).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// hidden_size / num_attention_heads unless the checkpoint says otherwise.
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub vocab_size: usize,
    /// true: lm_head shares the embedding matrix (no `lm_head.weight` tensor).
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    /// q/k/v projections carry a bias (always for Qwen2; `attention_bias` for Llama).
    pub attention_bias: bool,
    /// HF `rope_scaling` verbatim (e.g. Llama 3.1's "llama3" scaling); None when absent.
    pub rope_scaling: Option<serde_json::Value>,
}

/// The subset of HF `config.json` we read; unknown keys are ignored.
#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    rms_norm_eps: Option<f64>,
    #[serde(default)]
    rope_theta: Option<f64>,
    vocab_size: usize,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
}

impl ModelConfig {
    /// Parameters of the linear layers and the output head: what the matmuls touch per token
    /// (the FLOP and weight-read arithmetic of `recode bench`).
    pub fn matmul_parameters(&self) -> f64 {
        let (h, i, l) = (self.hidden_size as f64, self.intermediate_size as f64, self.num_hidden_layers as f64);
        let kv = (self.num_key_value_heads * self.head_dim) as f64;
        let q = (self.num_attention_heads * self.head_dim) as f64;
        let per_layer = h * q + 2.0 * h * kv + q * h + 3.0 * h * i;
        l * per_layer + h * self.vocab_size as f64
    }

    /// Parse an HF `config.json` (Qwen2ForCausalLM / LlamaForCausalLM).
    pub fn from_hf_json_str(json: &str) -> Result<Self> {
        let c: HfConfig = serde_json::from_str(json).context("config.json is not a Qwen2/Llama config")?;
        let arch_name = c.model_type.clone().or_else(|| c.architectures.first().cloned()).unwrap_or_default();
        let Some(architecture) = Architecture::parse(&arch_name)
            .or_else(|| c.architectures.iter().find_map(|a| Architecture::parse(a)))
        else {
            bail!("config.json: unsupported architecture {arch_name:?} (expected qwen2 or llama)");
        };
        if c.num_attention_heads == 0 || (c.head_dim.is_none() && c.hidden_size % c.num_attention_heads != 0) {
            bail!("config.json: hidden_size {} not divisible by num_attention_heads {}", c.hidden_size, c.num_attention_heads);
        }
        let (default_theta, default_eps) = match architecture {
            Architecture::Qwen2 => (1_000_000.0, 1e-6),
            Architecture::Llama => (10_000.0, 1e-6),
        };
        Ok(Self {
            architecture,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim: c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads),
            rms_norm_eps: c.rms_norm_eps.unwrap_or(default_eps),
            rope_theta: c.rope_theta.unwrap_or(default_theta),
            vocab_size: c.vocab_size,
            // transformers' PretrainedConfig default is tied.
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(true),
            max_position_embeddings: c.max_position_embeddings.unwrap_or(32768),
            attention_bias: c.attention_bias.unwrap_or(architecture == Architecture::Qwen2),
            rope_scaling: c.rope_scaling.filter(|v| !v.is_null()),
        })
    }

    pub fn from_hf_json_file(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_hf_json_str(&s).with_context(|| format!("parsing {}", path.display()))
    }
}
