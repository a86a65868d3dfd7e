//! HF folders: config.json, single and sharded safetensors, tokenizer.json.

use recode_core::api::TextCodec;
use recode_model_formats::tokenizer::{gpt2_tokenizer_json, tokenizer_from_json, QWEN2_PATTERN};
use recode_model_formats::{Architecture, Codec, HfModel, ModelConfig};
use safetensors::{serialize_to_file, tensor::TensorView, Dtype};
use std::collections::HashMap;

const QWEN_CONFIG: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
  "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "vocab_size": 151936,
  "tie_word_embeddings": true, "max_position_embeddings": 32768, "rope_scaling": null,
  "torch_dtype": "bfloat16", "use_sliding_window": false
}"#;

#[test]
fn config_json_qwen2_and_llama() {
    let c = ModelConfig::from_hf_json_str(QWEN_CONFIG).unwrap();
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert_eq!(
        (
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim
        ),
        (896, 24, 14, 2, 64)
    );
    assert!(c.tie_word_embeddings && c.attention_bias && c.rope_scaling.is_none());
    assert_eq!((c.rms_norm_eps, c.rope_theta, c.vocab_size), (1e-6, 1e6, 151936));
    let l = ModelConfig::from_hf_json_str(
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
            "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 64, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
            "vocab_size": 128256, "tie_word_embeddings": true, "max_position_embeddings": 131072,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0}}"#,
    )
    .unwrap();
    assert_eq!(l.architecture, Architecture::Llama);
    assert!(!l.attention_bias);
    assert_eq!(l.rope_scaling.as_ref().unwrap()["rope_type"], "llama3");
    let e = ModelConfig::from_hf_json_str(
        r#"{"model_type": "gpt_neox", "hidden_size": 8, "intermediate_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 4}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("gpt_neox"), "{e}");
}

fn le<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

#[test]
fn safetensors_single_and_sharded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), QWEN_CONFIG).unwrap();
    let a = le(&[1.5f32, -2.0, 3.25, 0.0, 7.0, -0.5], |x| x.to_le_bytes().to_vec());
    let b = le(&[1.5f32, -2.0, 65504.0], |x| {
        half::f16::from_f32(x).to_le_bytes().to_vec()
    });
    let c = le(&[1.5f32, -2.0, 3.0e38], |x| {
        half::bf16::from_f32(x).to_le_bytes().to_vec()
    });
    let d = le(&[1i32, 2], |x| x.to_le_bytes().to_vec());
    let shard1: HashMap<String, TensorView> = [
        ("a".to_string(), TensorView::new(Dtype::F32, vec![2, 3], &a).unwrap()),
        ("b".to_string(), TensorView::new(Dtype::F16, vec![3], &b).unwrap()),
    ]
    .into();
    let shard2: HashMap<String, TensorView> = [
        ("c".to_string(), TensorView::new(Dtype::BF16, vec![3, 1], &c).unwrap()),
        ("d".to_string(), TensorView::new(Dtype::I32, vec![2], &d).unwrap()),
    ]
    .into();
    serialize_to_file(shard1, None, &dir.path().join("model-00001-of-00002.safetensors")).unwrap();
    serialize_to_file(shard2, None, &dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
           "c": "model-00002-of-00002.safetensors", "d": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let m = HfModel::open(dir.path()).unwrap();
    assert_eq!(m.config().hidden_size, 896);
    assert_eq!(m.tensor_names(), ["a", "b", "c", "d"]);
    assert_eq!(
        m.read_f32("a").unwrap(),
        (vec![2, 3], vec![1.5, -2.0, 3.25, 0.0, 7.0, -0.5])
    );
    assert_eq!(m.read_f32("b").unwrap().1, [1.5, -2.0, 65504.0]);
    let (shape, cv) = m.read_f32("c").unwrap();
    assert_eq!((shape, &cv[..2]), (vec![3, 1], &[1.5f32, -2.0][..]));
    assert_eq!(cv[2], half::bf16::from_f32(3.0e38).to_f32());
    let e = m.read_f32("d").unwrap_err().to_string();
    assert!(
        e.contains("tensor d") && e.contains("model-00002-of-00002.safetensors") && e.contains("I32"),
        "{e}"
    );
    let e = m.read_f32("zz").unwrap_err().to_string();
    assert!(e.contains("zz") && e.contains(&dir.path().display().to_string()), "{e}");
    let e = m.read_f32_expect("a", &[3, 2]).unwrap_err().to_string();
    assert!(
        e.contains("tensor a") && e.contains("[2, 3]") && e.contains("00001"),
        "{e}"
    );
    assert_eq!(m.tensor_info("b").unwrap().dtype, "F16");

    // Single-file folder.
    let one = tempfile::tempdir().unwrap();
    std::fs::write(one.path().join("config.json"), QWEN_CONFIG).unwrap();
    let t: HashMap<String, TensorView> =
        [("w".to_string(), TensorView::new(Dtype::F32, vec![2, 3], &a).unwrap())].into();
    serialize_to_file(t, None, &one.path().join("model.safetensors")).unwrap();
    assert_eq!(
        HfModel::open(one.path())
            .unwrap()
            .read_f32_expect("w", &[2, 3])
            .unwrap()[2],
        3.25
    );
    let e = HfModel::open(dir.path().join("missing")).err().unwrap().to_string();
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn tokenizer_json_with_configs() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny byte-level BPE written as tokenizer.json: ids 0..256 bytes (printable ASCII maps to itself).
    let mut tokens: Vec<String> = (0..=255u8)
        .map(|b| {
            if (33..=126).contains(&b) {
                (b as char).to_string()
            } else {
                format!("<0x{b:02X}>")
            }
        })
        .collect();
    tokens.extend(["hi".to_string(), "<|im_end|>".into(), "<|endoftext|>".into()]);
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut types = vec![1i64; refs.len()];
    types[257] = 3;
    types[258] = 3;
    let json = gpt2_tokenizer_json(&refs, &["h i"], &types, QWEN2_PATTERN, true).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), serde_json::to_vec(&json).unwrap()).unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": null, "chat_template": "{{ x }}"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"eos_token_id": [258, 257]}"#,
    )
    .unwrap();
    let c = Codec::from_tokenizer_json(&dir.path().join("tokenizer.json")).unwrap();
    assert_eq!(c.encode("hi<|im_end|>").unwrap(), [256, 257]);
    assert_eq!(c.eos_ids(), [257, 258]);
    assert_eq!(c.pad_id(), 258);
    assert_eq!(c.bos_id(), None);
    assert_eq!(c.chat_template().as_deref(), Some("{{ x }}"));
    // The direct builder used for GGUF equals loading the same JSON from a file.
    let direct = tokenizer_from_json(json).unwrap();
    for text in ["hi<|im_end|>hi", "h i<|endoftext|>!"] {
        assert_eq!(
            direct.encode(text, false).unwrap().get_ids(),
            c.tokenizer().encode(text, false).unwrap().get_ids()
        );
    }
    let e = Codec::from_tokenizer_json(&dir.path().join("nope.json")).err().unwrap();
    assert!(format!("{e:#}").contains("nope.json"));
}
