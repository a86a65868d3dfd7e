//! GGUF <-> Hugging Face tensor names for Qwen2/Llama decoders.

/// Per-layer parts: (GGUF suffix after `blk.N.`, HF suffix after `model.layers.N.`).
const LAYER: &[(&str, &str)] = &[
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

const GLOBAL: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

fn split_kind(s: &str) -> Option<(&str, &str)> {
    s.strip_suffix(".weight")
        .map(|b| (b, "weight"))
        .or_else(|| s.strip_suffix(".bias").map(|b| (b, "bias")))
}

/// `blk.3.attn_q.bias` -> `model.layers.3.self_attn.q_proj.bias`; None when HF has no equivalent.
pub fn gguf_to_hf_name(gguf: &str) -> Option<String> {
    if let Some(&(_, hf)) = GLOBAL.iter().find(|(g, _)| *g == gguf) {
        return Some(hf.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (n, part) = rest.split_once('.')?;
    n.parse::<usize>().ok()?;
    let (base, kind) = split_kind(part)?;
    let &(_, hf) = LAYER.iter().find(|(g, _)| *g == base)?;
    Some(format!("model.layers.{n}.{hf}.{kind}"))
}

/// Inverse of [`gguf_to_hf_name`].
pub fn hf_to_gguf_name(hf: &str) -> Option<String> {
    if let Some(&(g, _)) = GLOBAL.iter().find(|(_, h)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (n, part) = rest.split_once('.')?;
    n.parse::<usize>().ok()?;
    let (base, kind) = split_kind(part)?;
    let &(g, _) = LAYER.iter().find(|(_, h)| *h == base)?;
    Some(format!("blk.{n}.{g}.{kind}"))
}
