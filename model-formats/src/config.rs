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

    /// A spec's `model.arch`: None for "" or "auto" (the file decides), else exactly one of
    /// qwen2, llama (or their HF class names, any case).
    pub fn forced(arch: &str) -> Result<Option<Self>> {
        match arch.to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(None),
            "qwen2" | "qwen2forcausallm" => Ok(Some(Self::Qwen2)),
            "llama" | "llamaforcausallm" => Ok(Some(Self::Llama)),
            other => bail!("unsupported architecture `{other}` (supported: qwen2, llama)"),
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
    /// `bos_token_id` of config.json (GGUF: the tokenizer's).
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` of config.json, one or several (GGUF: the tokenizer's).
    #[serde(default)]
    pub eos_token_ids: Vec<u32>,
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
    #[serde(default)]
    bos_token_id: Option<u32>,
    /// A number or a list.
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
}

impl ModelConfig {
    /// Parameters of the linear layers and the output head: what the matmuls touch per token
    /// (the FLOP and weight-read arithmetic of `recode bench`).
    pub fn matmul_parameters(&self) -> f64 {
        let (h, i, l) = (
            self.hidden_size as f64,
            self.intermediate_size as f64,
            self.num_hidden_layers as f64,
        );
        let kv = (self.num_key_value_heads * self.head_dim) as f64;
        let q = (self.num_attention_heads * self.head_dim) as f64;
        let per_layer = h * q + 2.0 * h * kv + q * h + 3.0 * h * i;
        l * per_layer + h * self.vocab_size as f64
    }

    /// Parse an HF `config.json` (Qwen2ForCausalLM / LlamaForCausalLM). Absent keys take the
    /// defaults of transformers' `Qwen2Config` / `LlamaConfig` (untied, rope_theta 10000).
    pub fn from_hf_json_str(json: &str) -> Result<Self> {
        Self::from_hf_json_as(json, "auto")
    }

    /// As [`Self::from_hf_json_str`], with the architecture forced unless `arch` is "auto" or "".
    pub fn from_hf_json_as(json: &str, arch: &str) -> Result<Self> {
        let c: HfConfig = serde_json::from_str(json).context("config.json is not a Qwen2/Llama config")?;
        let architecture = match Architecture::forced(arch)? {
            Some(a) => a,
            None => {
                let arch_name = c
                    .model_type
                    .clone()
                    .or_else(|| c.architectures.first().cloned())
                    .unwrap_or_default();
                let Some(a) = Architecture::parse(&arch_name)
                    .or_else(|| c.architectures.iter().find_map(|a| Architecture::parse(a)))
                else {
                    bail!("config.json: unsupported architecture {arch_name:?} (expected qwen2 or llama)");
                };
                a
            }
        };
        if c.num_attention_heads == 0 || (c.head_dim.is_none() && !c.hidden_size.is_multiple_of(c.num_attention_heads))
        {
            bail!(
                "config.json: hidden_size {} not divisible by num_attention_heads {}",
                c.hidden_size,
                c.num_attention_heads
            );
        }
        let eos_token_ids = match &c.eos_token_id {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
            Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            _ => vec![],
        };
        Ok(Self {
            architecture,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim: c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads),
            rms_norm_eps: c.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: c.rope_theta.unwrap_or(10_000.0),
            vocab_size: c.vocab_size,
            // Qwen2Config and LlamaConfig default to untied (a missing lm_head.weight ties anyway).
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            max_position_embeddings: c.max_position_embeddings.unwrap_or(32768),
            // Qwen2 always has q/k/v biases; Llama has them when `attention_bias` says so.
            attention_bias: architecture == Architecture::Qwen2 || c.attention_bias.unwrap_or(false),
            rope_scaling: c.rope_scaling.filter(|v| !v.is_null()),
            bos_token_id: c.bos_token_id,
            eos_token_ids,
        })
    }

    /// The linear RoPE scaling factor (positions are divided by it): 1 without `rope_scaling`;
    /// any other kind of scaling is an error (the decoder implements only linear).
    pub fn linear_rope_scale(&self) -> Result<f64> {
        match &self.rope_scaling {
            None => Ok(1.0),
            Some(r) if r["type"] == "linear" || r["rope_type"] == "linear" => Ok(r["factor"].as_f64().unwrap_or(1.0)),
            Some(r) => bail!("config.json: rope_scaling {r} is not supported (only linear)"),
        }
    }

    /// What the decoder needs of the shape: whole kv groups, an even head dimension (RoPE) and a
    /// supported RoPE scaling.
    pub fn check_decoder(&self) -> Result<()> {
        let (h, kv) = (self.num_attention_heads, self.num_key_value_heads);
        if h == 0 || kv == 0 || h % kv != 0 {
            bail!("num_attention_heads {h} must be a multiple of num_key_value_heads {kv}");
        }
        if !self.head_dim.is_multiple_of(2) {
            bail!("head_dim {} must be even for RoPE", self.head_dim);
        }
        self.linear_rope_scale().map(|_| ())
    }

    pub fn from_hf_json_file(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_hf_json_str(&s).with_context(|| format!("parsing {}", path.display()))
    }
}
