//! GGUF models (and model ids) through the formats crate: tensors are dequantised to f32 under HF
//! names (llama Q/K un-permuted there), so the same loader serves GGUF and safetensors.

use crate::config::{Arch, ModelConfig};
use crate::weights::WeightSource;
use crate::ModelFiles;
use anyhow::{Context, Result};
use recode_model_formats::{hf_to_gguf_name, Architecture, Codec, GgufFile};
use std::path::{Path, PathBuf};

pub struct GgufSource(pub GgufFile);

impl WeightSource for GgufSource {
    fn tensor(&self, hf_name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        self.0.dequantize_hf(hf_name)
    }
    fn contains(&self, hf_name: &str) -> bool {
        hf_to_gguf_name(hf_name).is_some_and(|g| self.0.has_tensor(&g))
    }
}

pub fn open(path: &Path, arch: &str, tokenizer: &str) -> Result<ModelFiles> {
    let g = GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mc = g.model_config()?;
    let codec = if tokenizer.is_empty() { Codec::from_gguf(&g)? } else { Codec::from_tokenizer_json(Path::new(tokenizer))? };
    let arch = if arch.is_empty() || arch == "auto" {
        match mc.architecture {
            Architecture::Qwen2 => Arch::Qwen2,
            Architecture::Llama => Arch::Llama,
        }
    } else {
        Arch::parse(arch)?
    };
    use recode_core::api::TextCodec;
    let config = ModelConfig {
        arch,
        // Embedding rows, which may exceed the token list.
        vocab_size: g.tensor_info("token_embd.weight")?.shape()[0],
        hidden_size: mc.hidden_size,
        intermediate_size: mc.intermediate_size,
        num_layers: mc.num_hidden_layers,
        num_heads: mc.num_attention_heads,
        num_kv_heads: mc.num_key_value_heads,
        head_dim: mc.head_dim,
        rope_theta: mc.rope_theta,
        rope_scale: 1.0,
        rms_eps: mc.rms_norm_eps,
        tie_embeddings: mc.tie_word_embeddings,
        qkv_bias: mc.attention_bias,
        max_positions: mc.max_position_embeddings,
        bos_id: codec.bos_id(),
        eos_ids: codec.eos_ids(),
    };
    Ok(ModelFiles { config, weights: Box::new(GgufSource(g)), codec: Box::new(codec) })
}

/// A known model id -> its cached file, fetched when missing.
pub fn resolve_id(id: &str) -> Result<PathBuf> {
    recode_model_formats::resolve_model(id, true)
}
