//! Shared by the test binaries: a tiny random Qwen2/Llama checkpoint written by the tests.

#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recode_core::api::Sequence;
use recode_core::spec::{AdapterKind, AdapterSpec};
use recode_model::weights::write_safetensors;
use recode_model::ModelConfig;
use std::path::Path;

pub const V: usize = 128;

pub fn write_tiny(dir: &Path, arch: &str, tied: bool, seed: u64) {
    let (h, i, nh, kvh, layers) = (64usize, 128usize, 4usize, 2usize, 2usize);
    let hd = h / nh;
    let theta = if arch == "qwen2" { 10000.0 } else { 500000.0 };
    let cfg = serde_json::json!({
        "model_type": arch, "vocab_size": V, "hidden_size": h, "intermediate_size": i,
        "num_hidden_layers": layers, "num_attention_heads": nh, "num_key_value_heads": kvh,
        "rope_theta": theta, "rms_norm_eps": 1e-6, "tie_word_embeddings": tied,
        "max_position_embeddings": 512, "eos_token_id": 127
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut t = vec![];
    let mut add = |name: String, shape: Vec<usize>, mean: f32, std: f32| {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|_| mean + std * (rng.gen::<f32>() * 2.0 - 1.0) * 1.732)
            .collect();
        t.push((name, shape, v));
    };
    add("model.embed_tokens.weight".into(), vec![V, h], 0.0, 0.5);
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        add(format!("{p}.input_layernorm.weight"), vec![h], 1.0, 0.1);
        add(format!("{p}.post_attention_layernorm.weight"), vec![h], 1.0, 0.1);
        for (n, o, inp) in [
            ("q_proj", nh * hd, h),
            ("k_proj", kvh * hd, h),
            ("v_proj", kvh * hd, h),
            ("o_proj", h, nh * hd),
        ] {
            add(format!("{p}.self_attn.{n}.weight"), vec![o, inp], 0.0, 0.15);
            if arch == "qwen2" && n != "o_proj" {
                add(format!("{p}.self_attn.{n}.bias"), vec![o], 0.0, 0.1);
            }
        }
        for (n, o, inp) in [("gate_proj", i, h), ("up_proj", i, h), ("down_proj", h, i)] {
            add(format!("{p}.mlp.{n}.weight"), vec![o, inp], 0.0, 0.1);
        }
    }
    add("model.norm.weight".into(), vec![h], 1.0, 0.1);
    if !tied {
        add("lm_head.weight".into(), vec![V, h], 0.0, 0.2);
    }
    write_safetensors(&dir.join("model.safetensors"), &t).unwrap();
}

pub fn config(dir: &Path) -> ModelConfig {
    ModelConfig::from_hf_json_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

pub fn seqs() -> Vec<Sequence> {
    vec![
        Sequence {
            prompt: vec![5, 9, 33, 2, 77, 1, 64],
            completion: vec![8, 8, 100, 3],
        },
        Sequence {
            prompt: vec![12],
            completion: vec![4, 90, 17, 17, 6, 2, 50],
        },
        Sequence {
            prompt: vec![40, 41, 42],
            completion: vec![0],
        },
    ]
}

pub fn adapter(kind: AdapterKind, targets: &[&str]) -> AdapterSpec {
    AdapterSpec {
        kind,
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: targets.iter().map(|s| s.to_string()).collect(),
        init: String::new(),
    }
}

/// Whether a Vulkan driver is installed (Mesa's lavapipe in CI) for a wgpu test; without one the
/// test is skipped, and fails under CI=true, where .ci/run installs mesa-vulkan-drivers.
pub fn has_vulkan(what: &str) -> bool {
    let icd = Path::new("/usr/share/vulkan/icd.d");
    let found = std::fs::read_dir(icd).map(|d| d.flatten().count() > 0).unwrap_or(false);
    if !found {
        recode_test_support::skip_or_fail_in_ci(&format!(
            "{what}: no Vulkan driver in {} (.ci/run installs mesa-vulkan-drivers)",
            icd.display()
        ));
    }
    found
}

/// The built-in transformer's factory, as a run builds its policy.
pub fn transformer_factory() -> recode_core::registry::ModelFactory {
    let mut reg = recode_core::registry::Registry::default();
    recode_model::register(&mut reg);
    reg.model("transformer").expect("registered")
}

/// A model spec for the factory: the tiny checkpoint written in `dir`, the fixture's tokenizer
/// (only its pad and end ids are used by these tests).
pub fn factory_spec(dir: &Path, adapter: AdapterSpec) -> recode_core::spec::ModelSpec {
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-qwen2/tokenizer.json")
        .display()
        .to_string();
    recode_core::spec::ModelSpec {
        path: dir.display().to_string(),
        tokenizer,
        adapter,
        ..Default::default()
    }
}
