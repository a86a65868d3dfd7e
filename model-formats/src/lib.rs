//! Weight and tokenizer formats without tensors: GGUF (with dequantisation to f32), HF
//! safetensors folders, tokenizers implementing `TextCodec`, and fetching known models.

pub mod config;
pub mod fetch;
pub mod gguf;
pub mod hf;
pub mod names;
pub mod quant;
pub mod tokenizer;

pub use config::{Architecture, ModelConfig};
pub use fetch::{cache_dir, known_models, resolve_model, KnownModel};
pub use gguf::{GgufFile, GgufValue, TensorInfo};
pub use hf::{HfModel, HfTensorInfo};
pub use names::{gguf_to_hf_name, hf_to_gguf_name};
pub use quant::GgmlType;
pub use tokenizer::Codec;

/// The configuration of a model given as a known id (fetched if needed), a `.gguf` file or an HF
/// folder.
pub fn model_config(model: &str) -> anyhow::Result<ModelConfig> {
    let path = if std::path::Path::new(model).exists() {
        std::path::PathBuf::from(model)
    } else {
        resolve_model(model, true)?
    };
    if path.extension().is_some_and(|e| e == "gguf") {
        GgufFile::open(&path)?.model_config()
    } else {
        ModelConfig::from_hf_json_file(&path.join("config.json"))
    }
}
