//! Checks on the real cached Qwen2.5-Coder-0.5B-Instruct GGUF; skipped when it is not cached.

use recode_core::api::TextCodec;
use recode_model_formats::{fetch, Architecture, Codec, GgmlType, GgufFile};
use std::time::Instant;

const ID: &str = "qwen2.5-coder-0.5b-instruct";

fn cached() -> Option<GgufFile> {
    match fetch::resolve_model(ID, false) {
        Ok(p) => {
            let t = Instant::now();
            let g = GgufFile::open(p).unwrap();
            println!("opened GGUF in {:?}", t.elapsed());
            Some(g)
        }
        Err(e) => {
            recode_test_support::skip(&format!("real-model test needs the cached model ({e:#})"));
            None
        }
    }
}

#[test]
fn real_model_config_tokenizer_and_weights() {
    let Some(g) = cached() else { return };
    let cfg = g.model_config().unwrap();
    assert_eq!(cfg.architecture, Architecture::Qwen2);
    assert_eq!((cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads), (24, 896, 14, 2));
    assert_eq!((cfg.intermediate_size, cfg.head_dim, cfg.vocab_size), (4864, 64, 151936));
    assert_eq!(cfg.rope_theta, 1e6);
    assert_eq!(cfg.rms_norm_eps, 1e-6);
    assert!(!cfg.tie_word_embeddings && cfg.attention_bias);

    let t = Instant::now();
    let c = Codec::from_gguf(&g).unwrap();
    println!("tokenizer from GGUF: {:?}", t.elapsed());
    assert_eq!(c.encode("Hello world").unwrap(), [9707, 1879]);
    assert_eq!(c.encode("<|im_start|>user\nhi<|im_end|>").unwrap(), [151644, 872, 198, 6023, 151645]);
    let code = "def add(a, b):\n    return a + b\n\n\nif __name__ == \"__main__\":\n\tprint(add(1, 23))\n";
    let ids = c.encode(code).unwrap();
    assert_eq!(c.decode(&ids).unwrap(), code);
    // Regression pin (ids from this implementation; "def" = 750, "   " = 262, " return" = 470,
    // "\n\n\n" = 1406 in Qwen2's vocab): leading indentation splits as 3 spaces + " return".
    assert_eq!(
        ids,
        [750, 912, 2877, 11, 293, 982, 262, 470, 264, 488, 293, 1406, 333, 1304, 606, 563, 621, 13265, 3817, 21082, 6900, 25906, 7, 16, 11, 220, 17, 18, 1171]
    );
    // Independent reference: tiktoken over Qwen's published ranks (tests/reference/qwen_reference_ids.py).
    let refs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/qwen_reference_ids.json")).unwrap(),
    )
    .unwrap();
    for r in refs.as_array().unwrap() {
        let text = r["text"].as_str().unwrap();
        let want: Vec<u32> = r["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(c.encode(text).unwrap(), want, "text {text:?}");
    }
    let mut eos = c.eos_ids();
    eos.sort();
    assert_eq!(eos, [151643, 151645]);
    assert_eq!(c.pad_id(), 151643);
    assert!(c.chat_template().unwrap().contains("<|im_start|>"));

    let mut types: Vec<_> = g.tensors().iter().map(|t| t.ggml_type).collect();
    types.sort_by_key(|t| t.id());
    types.dedup();
    println!("tensor types: {types:?}");
    let t = Instant::now();
    let mut n = 0usize;
    for name in g.tensor_names() {
        let (shape, v) = g.dequantize(name).unwrap();
        assert_eq!(shape.iter().product::<usize>(), v.len());
        assert!(v.iter().all(|x| x.is_finite()), "{name} has non-finite values");
        n += v.len();
    }
    println!("dequantised {} tensors, {n} values, in {:?}", g.tensors().len(), t.elapsed());
    assert_eq!(g.tensor_info("token_embd.weight").unwrap().shape(), [151936, 896]);
    assert_eq!(g.tensor_info("blk.0.ffn_down.weight").unwrap().ggml_type, GgmlType::Q6_K);
    let (shape, norm) = g.dequantize_hf("model.layers.0.input_layernorm.weight").unwrap();
    assert_eq!(shape, [896]);
    assert!(norm.iter().any(|&x| x != 0.0));
    assert_eq!(g.hf_tensor_names().len(), g.tensors().len());
}
