//! GGUF models (and model ids) through the formats crate: tensors are dequantised to f32 under HF
//! names (llama Q/K un-permuted there), so the same loader serves GGUF and safetensors.

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
    let mut config = g.model_config()?;
    let codec = if tokenizer.is_empty() {
        Codec::from_gguf(&g)?
    } else {
        Codec::from_tokenizer_json(Path::new(tokenizer))?
    };
    use recode_core::api::TextCodec;
    if let Some(a) = Architecture::forced(arch)? {
        config.architecture = a;
    }
    // Embedding rows, which may exceed the token list.
    config.vocab_size = g.tensor_info("token_embd.weight")?.shape()[0];
    config.bos_token_id = codec.bos_id();
    config.eos_token_ids = codec.eos_ids();
    Ok(ModelFiles {
        config,
        weights: Box::new(GgufSource(g)),
        codec: Box::new(codec),
    })
}

/// A known model id -> its cached file, fetched when missing.
pub fn resolve_id(id: &str) -> Result<PathBuf> {
    recode_model_formats::resolve_model(id, true)
}
