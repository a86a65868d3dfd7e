//! Text codec over the `tokenizers` crate, from `tokenizer.json` or from GGUF metadata.

use crate::gguf::{GgufFile, GgufValue};
use anyhow::{anyhow, bail, Context, Result};
use recode_core::api::TextCodec;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// Qwen2's pre-tokenizer split (as in its tokenizer.json; llama.cpp `pre` = "qwen2").
pub const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split (llama.cpp `pre` = "llama-bpe"): like Qwen2 but digits in runs of up to 3.
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-2's split (llama.cpp `pre` = "default"/"gpt2").
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Token strings that end a turn or a document in the families we support.
const END_TOKENS: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|eom_id|>",
];

/// GGUF `tokenizer.ggml.token_type` values.
const TT_UNKNOWN: i64 = 2;
const TT_CONTROL: i64 = 3;
const TT_USER_DEFINED: i64 = 4;

/// A model's tokenizer plus its end/pad ids and chat template.
pub struct Codec {
    tok: tokenizers::Tokenizer,
    eos: Vec<u32>,
    pad: u32,
    bos: Option<u32>,
    template: Option<String>,
}

fn tk_err(e: tokenizers::Error) -> anyhow::Error {
    anyhow!("{e}")
}

impl Codec {
    /// Assemble from a loaded tokenizer; `eos` is completed with the known end tokens it contains.
    pub fn new(
        tok: tokenizers::Tokenizer,
        eos: Vec<u32>,
        pad: Option<u32>,
        bos: Option<u32>,
        template: Option<String>,
    ) -> Result<Self> {
        let mut eos = eos;
        for t in END_TOKENS {
            if let Some(id) = tok.token_to_id(t) {
                if !eos.contains(&id) {
                    eos.push(id);
                }
            }
        }
        let pad = match pad.or_else(|| eos.first().copied()) {
            Some(p) => p,
            None => bail!("tokenizer has no end-of-sequence or padding token"),
        };
        Ok(Self {
            tok,
            eos,
            pad,
            bos,
            template,
        })
    }

    /// From a `tokenizer.json`; eos/pad/bos and the chat template come from `tokenizer_config.json`
    /// and `generation_config.json` in the same folder when present.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let tok = tokenizers::Tokenizer::from_file(path)
            .map_err(tk_err)
            .with_context(|| format!("loading tokenizer {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let read = |name: &str| -> Result<Option<Value>> {
            let p = dir.join(name);
            if !p.exists() {
                return Ok(None);
            }
            let s = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            Ok(Some(
                serde_json::from_str(&s).with_context(|| format!("parsing {}", p.display()))?,
            ))
        };
        let tc = read("tokenizer_config.json")?.unwrap_or(Value::Null);
        let gc = read("generation_config.json")?.unwrap_or(Value::Null);
        let tok_id = |v: &Value| -> Option<u32> {
            let s = v.as_str().or_else(|| v.get("content").and_then(Value::as_str))?;
            tok.token_to_id(s)
        };
        let mut eos: Vec<u32> = match &gc["eos_token_id"] {
            Value::Number(n) => n.as_u64().map(|v| v as u32).into_iter().collect(),
            Value::Array(a) => a.iter().filter_map(Value::as_u64).map(|v| v as u32).collect(),
            _ => vec![],
        };
        // The tokenizer's own eos first.
        if let Some(id) = tok_id(&tc["eos_token"]) {
            eos.retain(|&e| e != id);
            eos.insert(0, id);
        }
        let pad = tok_id(&tc["pad_token"]);
        let bos = tok_id(&tc["bos_token"]);
        let template = match &tc["chat_template"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(a) => a
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(str::to_string),
            _ => None,
        };
        Self::new(tok, eos, pad, bos, template).with_context(|| format!("tokenizer {}", path.display()))
    }

    /// From GGUF `tokenizer.*` metadata (byte-level BPE, `tokenizer.ggml.model` = "gpt2").
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let file = g.path().display().to_string();
        let model = g.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" && model != "llama" {
            bail!("{file}: tokenizer.ggml.model {model:?} is not supported (byte-level BPE \"gpt2\" or SentencePiece \"llama\")");
        }
        let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match g.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .as_array()
                .ok_or_else(|| anyhow!("{file}: tokenizer.ggml.token_type is not an array"))?
                .iter()
                .map(|t| t.as_i64().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            bail!("{file}: {} token types for {} tokens", types.len(), tokens.len());
        }
        let json = if model == "llama" {
            let scores: Vec<f64> = match g.get("tokenizer.ggml.scores") {
                Some(_) => g
                    .get_array("tokenizer.ggml.scores")?
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(0.0))
                    .collect(),
                None => bail!(
                    "{file}: metadata key tokenizer.ggml.scores is missing (needed for a SentencePiece tokenizer)"
                ),
            };
            if scores.len() != tokens.len() {
                bail!("{file}: {} token scores for {} tokens", scores.len(), tokens.len());
            }
            let prefix = g
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(GgufValue::as_bool)
                .unwrap_or(true);
            Ok(spm_tokenizer_json(&tokens, &scores, &types, prefix))
        } else {
            let pre = g
                .get("tokenizer.ggml.pre")
                .and_then(GgufValue::as_str)
                .unwrap_or("default");
            // SmolLM's tokenizer.json splits every digit off first (`Digits`, individual), then
            // applies GPT-2's split; llama.cpp's "smollm" pre-tokenizer does the same.
            let (pattern, nfc, ignore_merges, digits) = match pre {
                "qwen2" => (QWEN2_PATTERN, true, false, false),
                "llama-bpe" | "llama3" => (LLAMA3_PATTERN, false, true, false),
                "default" | "gpt2" => (GPT2_PATTERN, false, false, false),
                "smollm" => (GPT2_PATTERN, false, false, true),
                p => bail!("{file}: tokenizer.ggml.pre {p:?} is not supported (qwen2, llama-bpe, gpt2, smollm)"),
            };
            let merges = g.get_str_array("tokenizer.ggml.merges")?;
            gpt2_tokenizer_json(&tokens, &merges, &types, pattern, nfc).map(|mut j| {
                j["model"]["ignore_merges"] = json!(ignore_merges);
                if digits {
                    let split = j["pre_tokenizer"]["pretokenizers"]
                        .as_array_mut()
                        .expect("a Sequence pre-tokenizer");
                    split.insert(0, json!({"type": "Digits", "individual_digits": true}));
                }
                j
            })
        }
        .with_context(|| format!("building the tokenizer from {file}"))?;
        let tok = tokenizer_from_json(json).with_context(|| format!("building the tokenizer from {file}"))?;
        let id = |k: &str| g.get(k).and_then(GgufValue::as_u64).map(|v| v as u32);
        let eos: Vec<u32> = [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ]
        .iter()
        .filter_map(|k| id(k))
        .collect();
        let template = g
            .get("tokenizer.chat_template")
            .and_then(GgufValue::as_str)
            .map(str::to_string);
        Self::new(
            tok,
            eos,
            id("tokenizer.ggml.padding_token_id"),
            id("tokenizer.ggml.bos_token_id"),
            template,
        )
        .with_context(|| format!("tokenizer of {file}"))
    }

    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tok
    }
    /// Size including added tokens (may be below the model's embedding rows).
    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tok.token_to_id(token)
    }
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tok.id_to_token(id)
    }
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    /// Decode dropping special tokens (`<|im_end|>` etc.), as TRL does for completions.
    pub fn decode_skip_special(&self, ids: &[u32]) -> Result<String> {
        self.tok.decode(ids, true).map_err(tk_err)
    }
}

impl TextCodec for Codec {
    /// Raw text to ids: special tokens written in the text become their single ids; no BOS is added
    /// (chat templates write it themselves).
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tok.encode_fast(text, false).map_err(tk_err)?.get_ids().to_vec())
    }
    /// Exact inverse of `encode` (special tokens kept); see `decode_skip_special`.
    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tok.decode(ids, false).map_err(tk_err)
    }
    fn eos_ids(&self) -> Vec<u32> {
        self.eos.clone()
    }
    fn pad_id(&self) -> u32 {
        self.pad
    }
    fn chat_template(&self) -> Option<String> {
        self.template.clone()
    }
}

/// The `tokenizer.json` HF writes for byte-level BPE models (Qwen2/Llama 3). Every token is in the
/// BPE vocab with its GGUF id (so added tokens keep their ids); control tokens are added as
/// special, user-defined ones as plain added tokens, both matched whole in the input.
/// (`Codec::from_gguf` also sets `ignore_merges` for Llama 3, as its HF tokenizer.json does.)
pub fn gpt2_tokenizer_json(tokens: &[&str], merges: &[&str], types: &[i64], pattern: &str, nfc: bool) -> Result<Value> {
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if vocab.insert(t.to_string(), json!(i)).is_some() {
            bail!("duplicate token {t:?} at id {i}");
        }
    }
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| anyhow!("merge {m:?} has no space"))
        })
        .collect::<Result<Vec<_>>>()?;
    let added = added_tokens_json(tokens, types);
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": if nfc { json!({"type": "NFC"}) } else { Value::Null },
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            byte_level.clone(),
        ]},
        "post_processor": byte_level.clone(),
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    }))
}

/// Build a BPE `Tokenizer` from a tokenizer.json value, like `Tokenizer::from_bytes` but without
/// serialising and re-parsing the (large) vocab and merges.
pub fn tokenizer_from_json(mut j: Value) -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::bpe::{Merges, Vocab, BPE};
    let m = j["model"].take();
    if m["type"] != "BPE" {
        bail!("model type {} is not BPE", m["type"]);
    }
    let vocab: Vocab = m["vocab"]
        .as_object()
        .ok_or_else(|| anyhow!("model.vocab is not an object"))?
        .iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                v.as_u64().ok_or_else(|| anyhow!("vocab id of {k:?} is not a number"))? as u32,
            ))
        })
        .collect::<Result<_>>()?;
    let merges: Merges = m["merges"]
        .as_array()
        .ok_or_else(|| anyhow!("model.merges is not an array"))?
        .iter()
        .map(|p| match (p[0].as_str(), p[1].as_str()) {
            (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
            _ => bail!("merge {p} is not a pair of strings"),
        })
        .collect::<Result<_>>()?;
    let flag = |k: &str| m[k].as_bool().unwrap_or(false);
    let mut b = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .fuse_unk(flag("fuse_unk"))
        .byte_fallback(flag("byte_fallback"))
        .ignore_merges(flag("ignore_merges"));
    if let Some(u) = m["unk_token"].as_str() {
        b = b.unk_token(u.to_string());
    }
    let mut tok = tokenizers::Tokenizer::new(b.build().map_err(tk_err)?);
    fn part<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<Option<T>> {
        if v.is_null() {
            return Ok(None);
        }
        serde_json::from_value(v)
            .map(Some)
            .with_context(|| format!("invalid {what}"))
    }
    tok.with_normalizer(part::<tokenizers::normalizers::NormalizerWrapper>(
        j["normalizer"].take(),
        "normalizer",
    )?);
    tok.with_pre_tokenizer(part::<tokenizers::pre_tokenizers::PreTokenizerWrapper>(
        j["pre_tokenizer"].take(),
        "pre_tokenizer",
    )?);
    tok.with_post_processor(part::<tokenizers::processors::PostProcessorWrapper>(
        j["post_processor"].take(),
        "post_processor",
    )?);
    tok.with_decoder(part::<tokenizers::decoders::DecoderWrapper>(
        j["decoder"].take(),
        "decoder",
    )?);
    let added = j["added_tokens"].as_array().cloned().unwrap_or_default();
    let mk = |a: &Value| {
        tokenizers::AddedToken::from(a["content"].as_str().unwrap_or_default(), a["special"] == true).normalized(false)
    };
    let special: Vec<_> = added.iter().filter(|a| a["special"] == true).map(mk).collect();
    let plain: Vec<_> = added.iter().filter(|a| a["special"] != true).map(mk).collect();
    tok.add_special_tokens(&special);
    tok.add_tokens(&plain);
    for a in &added {
        let c = a["content"].as_str().unwrap_or_default();
        if tok.token_to_id(c).map(u64::from) != a["id"].as_u64() {
            bail!("added token {c:?} did not keep id {}", a["id"]);
        }
    }
    Ok(tok)
}

fn added_tokens_json(tokens: &[&str], types: &[i64]) -> Vec<Value> {
    tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == TT_CONTROL || ty == TT_USER_DEFINED || ty == TT_UNKNOWN)
        .map(|(i, (t, &ty))| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": ty != TT_USER_DEFINED})
        })
        .collect()
}

/// SentencePiece BPE (GGUF `llama` tokenizer) as HF's `LlamaTokenizerFast` expresses it: a BPE
/// with byte fallback whose merge ranks follow the merged piece's score (highest first), which
/// reproduces SentencePiece's greedy highest-score merging; spaces become "▁".
pub fn spm_tokenizer_json(tokens: &[&str], scores: &[f64], types: &[i64], add_space_prefix: bool) -> Value {
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        ids.entry(t).or_insert(i); // first id wins on duplicates
    }
    let normal = |i: usize| types.get(i).is_none_or(|&t| t == 1);
    // Every split of a normal piece into two normal pieces is a merge ranked by the piece's score.
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if !normal(i) || ids[t] != i {
            continue;
        }
        for (k, _) in t.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (ids.get(&t[..k]), ids.get(&t[k..])) {
                if normal(l) && normal(r) {
                    merges.push((scores[i], i, l, r));
                }
            }
        }
    }
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then((a.2, a.3).cmp(&(b.2, b.3)))
    });
    let merges: Vec<Value> = merges
        .iter()
        .map(|&(_, _, l, r)| json!([tokens[l], tokens[r]]))
        .collect();
    let vocab: serde_json::Map<String, Value> = ids.iter().map(|(t, &i)| (t.to_string(), json!(i))).collect();
    let unk = tokens
        .iter()
        .zip(types)
        .find(|(_, &ty)| ty == TT_UNKNOWN)
        .map(|(t, _)| t.to_string());
    // Like llama.cpp and HF's (legacy) Llama tokenizer: "▁" before every text run (also after a
    // special token), even when the text already starts with a space.
    let mut normalizers = vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"})];
    if add_space_prefix {
        normalizers.insert(0, json!({"type": "Prepend", "prepend": "\u{2581}"}));
    }
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens_json(tokens, types),
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    })
}
