//! The model's shape is one type, `recode_model_formats::ModelConfig`: what `config.json` or the
//! GGUF metadata declares (with transformers' defaults for absent keys). `ModelConfig::check_decoder`
//! says whether this decoder supports it.

pub use recode_model_formats::{Architecture, ModelConfig};
