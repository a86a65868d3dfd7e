//! GGUF parsing and dequantisation against fixtures made by tests/reference/make_fixtures.py.

mod common;

use common::{write_gguf, V};
use recode_model_formats::gguf::unpermute_qk;
use recode_model_formats::{gguf_to_hf_name, hf_to_gguf_name, GgmlType, GgufFile, GgufValue};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant.gguf")
}

fn expected() -> Vec<f32> {
    let b = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant_expected.f32")).unwrap();
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn dequantizes_every_type_like_the_reference() {
    let g = GgufFile::open(fixture()).unwrap();
    let exp = expected();
    let mut at = 0;
    let names = g.tensor_names();
    assert_eq!(
        names,
        ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k", "q8_k", "f32", "f16", "bf16"]
    );
    for name in names {
        let (shape, vals) = g.dequantize(name).unwrap();
        let want = &exp[at..at + vals.len()];
        at += vals.len();
        for (i, (a, b)) in vals.iter().zip(want).enumerate() {
            assert!(a == b, "{name}[{i}]: got {a}, expected {b}");
        }
        let info = g.tensor_info(name).unwrap();
        assert_eq!(shape, info.dims.iter().rev().map(|&d| d as usize).collect::<Vec<_>>());
        assert_eq!(info.ggml_type.to_string(), name.to_uppercase());
    }
    assert_eq!(at, exp.len());
    assert_eq!(g.tensor_info("f32").unwrap().dims, [4, 3, 2]);
    assert_eq!(g.tensor_info("f32").unwrap().shape(), [2, 3, 4]);
    assert_eq!(g.tensor_info("q6_k").unwrap().ggml_type, GgmlType::Q6_K);
    assert_eq!(g.alignment(), 64);
}

#[test]
fn reads_all_metadata_types() {
    let g = GgufFile::open(fixture()).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.get_str("general.architecture").unwrap(), "test");
    assert_eq!(g.get("t.u8"), Some(&GgufValue::U8(200)));
    assert_eq!(g.get("t.i8"), Some(&GgufValue::I8(-100)));
    assert_eq!(g.get("t.u16"), Some(&GgufValue::U16(60000)));
    assert_eq!(g.get("t.i16"), Some(&GgufValue::I16(-30000)));
    assert_eq!(g.get("t.i32"), Some(&GgufValue::I32(-2_000_000_000)));
    assert_eq!(g.get("t.f32"), Some(&GgufValue::F32(0.5)));
    assert_eq!(g.get("t.bool"), Some(&GgufValue::Bool(true)));
    assert_eq!(g.get_u64("t.u64").unwrap(), 1 << 40);
    assert_eq!(g.get("t.i64"), Some(&GgufValue::I64(-(1 << 40))));
    assert_eq!(g.get_f64("t.f64").unwrap(), 0.1);
    assert_eq!(g.get_str_array("t.strs").unwrap(), ["a", "", "é b"]);
    let nested = g.get_array("t.nested").unwrap();
    assert_eq!(nested[0], GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(-2)]));
    assert_eq!(nested[1], GgufValue::Array(vec![]));
    let e = g.get_u64("t.strs").unwrap_err().to_string();
    assert!(e.contains("t.strs") && e.contains("quant.gguf"), "{e}");
    let e = g.get_str("no.such.key").unwrap_err().to_string();
    assert!(e.contains("no.such.key") && e.contains("missing"), "{e}");
}

#[test]
fn reads_version_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v2.gguf");
    let mut b = std::fs::read(fixture()).unwrap();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&p, b).unwrap();
    let g = GgufFile::open(&p).unwrap();
    assert_eq!(g.version(), 2);
    assert_eq!(g.dequantize("q8_0").unwrap().1.len(), 512);
}

#[test]
fn truncated_file_names_tensor_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = std::fs::read(fixture()).unwrap();
    let p = dir.path().join("cut.gguf");
    std::fs::write(&p, &b[..b.len() - 10]).unwrap();
    let e = format!("{:#}", GgufFile::open(&p).err().unwrap());
    assert!(
        e.contains("bf16") && e.contains("cut.gguf") && e.contains("truncated"),
        "{e}"
    );
    // Cut inside the header.
    std::fs::write(&p, &b[..300]).unwrap();
    let e = format!("{:#}", GgufFile::open(&p).err().unwrap());
    assert!(e.contains("cut.gguf") && e.contains("truncated"), "{e}");
    std::fs::write(&p, b"GGML").unwrap();
    let e = format!("{:#}", GgufFile::open(&p).err().unwrap());
    assert!(e.contains("cut.gguf"), "{e}");
}

#[test]
fn missing_tensor_and_shape_mismatch_name_tensor_and_file() {
    let g = GgufFile::open(fixture()).unwrap();
    let e = g.dequantize("blk.0.attn_q.weight").unwrap_err().to_string();
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("quant.gguf") && e.contains("not found"),
        "{e}"
    );
    let e = g.dequantize_expect("q8_0", &[256, 2]).unwrap_err().to_string();
    assert!(
        e.contains("q8_0") && e.contains("quant.gguf") && e.contains("[2, 256]"),
        "{e}"
    );
    assert_eq!(g.dequantize_expect("q8_0", &[2, 256]).unwrap().len(), 512);
}

#[test]
fn maps_names_both_ways() {
    let pairs = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("blk.12.attn_k.bias", "model.layers.12.self_attn.k_proj.bias"),
        ("blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"),
        ("blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"),
        ("blk.1.ffn_gate.weight", "model.layers.1.mlp.gate_proj.weight"),
        ("blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"),
        ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
        ("blk.23.attn_norm.weight", "model.layers.23.input_layernorm.weight"),
        (
            "blk.23.ffn_norm.weight",
            "model.layers.23.post_attention_layernorm.weight",
        ),
    ];
    for (g, h) in pairs {
        assert_eq!(gguf_to_hf_name(g).as_deref(), Some(h));
        assert_eq!(hf_to_gguf_name(h).as_deref(), Some(g));
    }
    assert_eq!(gguf_to_hf_name("rope_freqs.weight"), None);
    assert_eq!(gguf_to_hf_name("blk.x.attn_q.weight"), None);
}

/// llama.cpp's converter: rows viewed as (head, 2, head_dim/2) are swapped to (head, head_dim/2, 2).
fn llama_cpp_permute(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..half {
                let src = h * 2 * half + i * half + j; // index in (head, 2, half)
                let dst = h * 2 * half + j * 2 + i; // index in (head, half, 2)
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn llama_qk_permutation_is_undone_and_qwen2_is_left_alone() {
    let (hidden, heads, kv) = (8usize, 2usize, 1usize);
    let hd = hidden / heads;
    let q: Vec<f32> = (0..hidden * hidden).map(|i| i as f32).collect();
    let k: Vec<f32> = (0..kv * hd * hidden).map(|i| -(i as f32)).collect();
    assert_eq!(
        unpermute_qk(&llama_cpp_permute(&q, hidden, hidden, heads), &[hidden, hidden], heads).unwrap(),
        q
    );
    let dir = tempfile::tempdir().unwrap();
    for arch in ["llama", "qwen2"] {
        let p = dir.path().join(format!("{arch}.gguf"));
        let (qs, ks) = if arch == "llama" {
            (
                llama_cpp_permute(&q, hidden, hidden, heads),
                llama_cpp_permute(&k, kv * hd, hidden, kv),
            )
        } else {
            (q.clone(), k.clone())
        };
        let key = |s: &str| format!("{arch}.{s}");
        let (a, b, c, d, e) = (
            key("attention.head_count"),
            key("attention.head_count_kv"),
            key("embedding_length"),
            key("block_count"),
            key("feed_forward_length"),
        );
        write_gguf(
            &p,
            &[
                ("general.architecture", V::Str(arch)),
                (&a, V::U32(heads as u32)),
                (&b, V::U32(kv as u32)),
                (&c, V::U32(hidden as u32)),
                (&d, V::U32(1)),
                (&e, V::U32(16)),
            ],
            &[
                ("token_embd.weight", vec![hidden as u64, 5], vec![0.0; 5 * hidden]),
                ("blk.0.attn_q.weight", vec![hidden as u64, hidden as u64], qs),
                ("blk.0.attn_k.weight", vec![hidden as u64, (kv * hd) as u64], ks),
            ],
        );
        let g = GgufFile::open(&p).unwrap();
        let (shape, got_q) = g.dequantize_hf("model.layers.0.self_attn.q_proj.weight").unwrap();
        assert_eq!(shape, [hidden, hidden]);
        assert_eq!(got_q, q, "{arch} q");
        assert_eq!(
            g.dequantize_hf("model.layers.0.self_attn.k_proj.weight").unwrap().1,
            k,
            "{arch} k"
        );
        let cfg = g.model_config().unwrap();
        assert_eq!(
            (
                cfg.num_attention_heads,
                cfg.num_key_value_heads,
                cfg.head_dim,
                cfg.vocab_size
            ),
            (heads, kv, hd, 5)
        );
        assert!(cfg.tie_word_embeddings && !cfg.attention_bias);
        assert_eq!(cfg.architecture.as_str(), arch);
    }
}

#[test]
fn corrupt_headers_give_errors_not_panics() {
    let b = std::fs::read(fixture()).unwrap();
    let head = GgufFile::open(fixture()).unwrap().data_offset() as usize;
    for i in 0..head {
        for v in [0xFFu8, 0x7F, 0x01] {
            let mut c = b.clone();
            c[i] = v;
            if let Ok(g) = GgufFile::from_bytes("bad.gguf", c) {
                for n in g.tensor_names() {
                    let _ = g.dequantize(n);
                }
            }
        }
    }
}
