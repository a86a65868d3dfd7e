//! Architecture hyper-parameters, read from a Hugging Face `config.json` (or filled from GGUF metadata).

use anyhow::{bail, Context, Result};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Qwen2 / Qwen2.5: q/k/v biases.
    Qwen2,
    /// Llama (and DeepSeek-Coder v1.5): no biases.
    Llama,
}

impl Arch {
    pub fn parse(s: &str) -> Result<Arch> {
        match s.to_ascii_lowercase().as_str() {
            "qwen2" | "qwen2forcausallm" => Ok(Arch::Qwen2),
            "llama" | "llamaforcausallm" => Ok(Arch::Llama),
            other => bail!("unsupported architecture `{other}` (supported: qwen2, llama)"),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Llama => "llama",
        }
    }
}

/// Everything the decoder needs to know about its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    /// Linear RoPE scaling factor (positions are divided by it); 1.0 = none.
    pub rope_scale: f64,
    pub rms_eps: f64,
    pub tie_embeddings: bool,
    /// Whether q/k/v projections have biases (Qwen2: yes; Llama: `attention_bias`, default no).
    pub qkv_bias: bool,
    pub max_positions: usize,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
}

impl ModelConfig {
    /// Parse `config.json`; `arch` overrides the detected architecture unless "auto" or empty.
    pub fn from_hf_json(text: &str, arch: &str) -> Result<ModelConfig> {
        let v: Value = serde_json::from_str(text).context("config.json is not valid JSON")?;
        let detected = v["model_type"].as_str().map(str::to_string).or_else(|| {
            v["architectures"].get(0).and_then(|a| a.as_str()).map(str::to_string)
        });
        let arch = if arch.is_empty() || arch == "auto" {
            Arch::parse(&detected.context("config.json has neither model_type nor architectures")?)?
        } else {
            Arch::parse(arch)?
        };
        let u = |k: &str| -> Result<usize> {
            v[k].as_u64().map(|x| x as usize).with_context(|| format!("config.json: missing integer `{k}`"))
        };
        let hidden = u("hidden_size")?;
        let heads = u("num_attention_heads")?;
        let rope_scale = match &v["rope_scaling"] {
            Value::Null => 1.0,
            r if r["type"] == "linear" || r["rope_type"] == "linear" => r["factor"].as_f64().unwrap_or(1.0),
            r => bail!("config.json: rope_scaling {r} is not supported (only linear)"),
        };
        let eos_ids = match &v["eos_token_id"] {
            Value::Array(a) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
            Value::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            _ => vec![],
        };
        Ok(ModelConfig {
            arch,
            vocab_size: u("vocab_size")?,
            hidden_size: hidden,
            intermediate_size: u("intermediate_size")?,
            num_layers: u("num_hidden_layers")?,
            num_heads: heads,
            num_kv_heads: v["num_key_value_heads"].as_u64().map(|x| x as usize).unwrap_or(heads),
            head_dim: v["head_dim"].as_u64().map(|x| x as usize).unwrap_or(hidden / heads),
            rope_theta: v["rope_theta"].as_f64().unwrap_or(10000.0),
            rope_scale,
            rms_eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            tie_embeddings: v["tie_word_embeddings"].as_bool().unwrap_or(false),
            qkv_bias: match arch {
                Arch::Qwen2 => true,
                Arch::Llama => v["attention_bias"].as_bool().unwrap_or(false),
            },
            max_positions: v["max_position_embeddings"].as_u64().unwrap_or(32768) as usize,
            bos_id: v["bos_token_id"].as_u64().map(|x| x as u32),
            eos_ids,
        })
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.num_heads % self.num_kv_heads != 0 {
            bail!("num_attention_heads {} must be a multiple of num_key_value_heads {}", self.num_heads, self.num_kv_heads);
        }
        if self.head_dim % 2 != 0 {
            bail!("head_dim {} must be even for RoPE", self.head_dim);
        }
        Ok(())
    }
}
