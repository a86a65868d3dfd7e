//! An example model plugin: a window-MLP language model (each next token is predicted from the
//! embeddings of the previous `context` tokens through one hidden layer), trained in full.
//!
//! It shows what a model plugin must provide: a factory from `[model]` to a `Policy`, exported
//! with `export_model_plugin!`. The tokenizer and chat template come from `model.path`
//! (a folder with tokenizer.json and tokenizer_config.json).
//!
//! ```toml
//! [model]
//! plugin = "target/debug/deps/librecode_example_model.so"
//! path = "tests/fixtures/tiny-qwen2"
//! options = { context = 4, embedding = 32, hidden = 64 }
//! ```

mod model;
mod policy;

use anyhow::{bail, Context, Result};
use burn::backend::NdArray;
use recode_core::api::Policy;
use recode_core::registry::ModelContext;
use recode_core::spec::BackendKind;
use serde::Deserialize;
use std::path::Path;

recode_core::export_model_plugin!(
    name: "window-mlp",
    version: "0.1.0",
    description: "example: window-MLP language model in burn (full fine-tuning, CPU)",
    create: create,
);

/// `[model.options]` of this plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Previous tokens the next-token prediction sees.
    pub context: usize,
    /// Embedding width per token.
    pub embedding: usize,
    /// Hidden layer width.
    pub hidden: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            context: 4,
            embedding: 32,
            hidden: 64,
        }
    }
}

fn create(ctx: &ModelContext<'_>) -> Result<Box<dyn Policy>> {
    let options: Options = serde_json::to_value(&ctx.spec.options)
        .and_then(serde_json::from_value)
        .context("[model.options] of the window-mlp plugin (keys: context, embedding, hidden)")?;
    if options.context == 0 || options.embedding == 0 || options.hidden == 0 {
        bail!("[model.options]: context, embedding and hidden must all be at least 1, got {options:?}");
    }
    if ctx.backend.kind != BackendKind::Cpu {
        bail!("the window-mlp example plugin runs on the cpu backend only (backend.kind = \"cpu\")");
    }
    if ctx.spec.path.is_empty() {
        bail!("model.path: the window-mlp plugin needs a folder with tokenizer.json");
    }
    let dir = Path::new(&ctx.spec.path);
    let codec = recode_model_formats::Codec::from_tokenizer_json(&dir.join("tokenizer.json"))?;
    let policy = policy::WindowPolicy::<NdArray>::new(codec, &options, ctx.training, ctx.seed, &Default::default())?;
    Ok(Box::new(policy))
}
