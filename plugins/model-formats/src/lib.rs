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
