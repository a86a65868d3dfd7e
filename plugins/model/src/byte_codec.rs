//! A stand-in codec for tiny random models (tests, benchmarks). Real models use
//! `recode_model_formats::Codec` (tokenizer.json or GGUF metadata).

use anyhow::Result;
use recode_core::api::TextCodec;

/// Token id `i` <-> char `'a' + i % 26` style stand-in for tiny random models (tests, benchmarks).
pub struct ByteCodec {
    pub eos: Vec<u32>,
    pub pad: u32,
}

impl TextCodec for ByteCodec {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(|b| b as u32).collect())
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(ids.iter().map(|&i| char::from(b' ' + (i % 95) as u8)).collect())
    }
    fn eos_ids(&self) -> Vec<u32> {
        self.eos.clone()
    }
    fn pad_id(&self) -> u32 {
        self.pad
    }
    fn chat_template(&self) -> Option<String> {
        None
    }
}
