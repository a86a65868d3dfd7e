//! Seeded random weights in a real model's shape, written as a Hugging Face folder
//! (`recode model random`). For benchmarks where the real checkpoint cannot travel (bench/gpu.sh
//! on a lent GPU machine): speed and memory depend on the shapes, not on the values.
//!
//! The tokenizer is a character-level one over printable ASCII (about 100 tokens) while the config
//! keeps the real vocabulary size, so the output projection and the log-softmax have their real
//! cost. Sampled ids outside the tokenizer decode to nothing; the random model rarely samples its
//! end-of-text id, so generations run to their token limit, which is what a benchmark wants.

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::Dtype;
use std::path::Path;

/// The shape of a decoder (Qwen2 layout: q/k/v biases).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub tied: bool,
}

/// Names `recode model random --shape` accepts.
pub const SHAPES: [&str; 3] = ["qwen2.5-0.5b", "qwen2.5-7b", "tiny"];

/// Qwen2.5-0.5B and Qwen2.5-7B as their config.json files give them; "tiny" for CI.
pub fn shape(name: &str) -> Result<Shape> {
    Ok(match name {
        "qwen2.5-0.5b" => Shape {
            hidden: 896,
            intermediate: 4864,
            layers: 24,
            heads: 14,
            kv_heads: 2,
            vocab: 151936,
            tied: true,
        },
        "qwen2.5-7b" => Shape {
            hidden: 3584,
            intermediate: 18944,
            layers: 28,
            heads: 28,
            kv_heads: 4,
            vocab: 152064,
            tied: false,
        },
        "tiny" => Shape {
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 4096,
            tied: false,
        },
        other => bail!("unknown shape `{other}`: expected one of {SHAPES:?}"),
    })
}

impl Shape {
    /// Every tensor's name and shape, in the HF Qwen2 layout (`[out, in]` linear weights).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let hd = self.hidden / self.heads;
        let (q, kv) = (self.heads * hd, self.kv_heads * hd);
        let mut t = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab, self.hidden])];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            t.push((format!("{p}.input_layernorm.weight"), vec![self.hidden]));
            t.push((format!("{p}.post_attention_layernorm.weight"), vec![self.hidden]));
            for (n, out) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                t.push((format!("{p}.self_attn.{n}.weight"), vec![out, self.hidden]));
                t.push((format!("{p}.self_attn.{n}.bias"), vec![out]));
            }
            t.push((format!("{p}.self_attn.o_proj.weight"), vec![self.hidden, q]));
            t.push((
                format!("{p}.mlp.gate_proj.weight"),
                vec![self.intermediate, self.hidden],
            ));
            t.push((format!("{p}.mlp.up_proj.weight"), vec![self.intermediate, self.hidden]));
            t.push((
                format!("{p}.mlp.down_proj.weight"),
                vec![self.hidden, self.intermediate],
            ));
        }
        t.push(("model.norm.weight".into(), vec![self.hidden]));
        if !self.tied {
            t.push(("lm_head.weight".into(), vec![self.vocab, self.hidden]));
        }
        t
    }

    pub fn parameters(&self) -> usize {
        self.tensors().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

/// Characters of the tokenizer: printable ASCII, newline and tab; then the ChatML specials.
fn characters() -> Vec<String> {
    let mut c: Vec<String> = (0x20u8..0x7f).map(|b| (b as char).to_string()).collect();
    c.extend(["\n", "\t"].map(String::from));
    c
}

const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

fn tokenizer_json() -> serde_json::Value {
    let chars = characters();
    let vocab: serde_json::Map<String, serde_json::Value> =
        chars.iter().enumerate().map(|(i, c)| (c.clone(), i.into())).collect();
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": chars.len() + i, "content": t, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": null, "post_processor": null, "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    })
}

/// Writes `config.json`, `tokenizer.json`, `tokenizer_config.json` and `model.safetensors` (BF16 or
/// F32) into `dir`. Linear weights and embeddings are uniform with standard deviation 0.02, norms
/// 1, biases 0; the same seed writes the same bytes.
pub fn write_random_model(dir: &Path, s: &Shape, bf16: bool, seed: u64) -> Result<()> {
    if !s.hidden.is_multiple_of(s.heads) || !s.heads.is_multiple_of(s.kv_heads) {
        bail!("shape {s:?}: hidden must divide by heads and heads by kv_heads");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let eos = characters().len() + 2; // <|im_end|>
    let config = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": s.hidden,
        "intermediate_size": s.intermediate, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "vocab_size": s.vocab,
        "tie_word_embeddings": s.tied, "max_position_embeddings": 32768, "eos_token_id": eos
    });
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {}", dir.join(name).display()))
    };
    write("config.json", serde_json::to_string_pretty(&config)?)?;
    write("tokenizer.json", tokenizer_json().to_string())?;
    write(
        "tokenizer_config.json",
        serde_json::json!({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}).to_string(),
    )?;

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bound = 0.02f32 * 3f32.sqrt(); // uniform on [-b, b] has standard deviation b / sqrt(3)
    let (dtype, width) = if bf16 { (Dtype::BF16, 2) } else { (Dtype::F32, 4) };
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape) in s.tensors() {
        let n: usize = shape.iter().product();
        let mut bytes = Vec::with_capacity(n * width);
        for _ in 0..n {
            let v = if name.ends_with("norm.weight") {
                1.0
            } else if name.ends_with(".bias") {
                0.0
            } else {
                rng.gen_range(-bound..bound)
            };
            if bf16 {
                bytes.extend_from_slice(&f32_to_bf16(v).to_le_bytes());
            } else {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        buffers.push((name, shape, bytes));
    }
    let views = buffers
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), safetensors::tensor::TensorView::new(dtype, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Round to nearest even (finite inputs only, as here).
pub fn f32_to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}
