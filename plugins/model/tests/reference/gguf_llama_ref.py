#!/usr/bin/env python3
"""Independent float64 numpy forward of a llama-architecture GGUF file, as llama.cpp computes it.

usage: gguf_llama_ref.py MODEL.gguf REQUEST.json OUT.bin
REQUEST: {"seqs": [[ids], ...], "keep_last": [n, ...] (optional)}
OUT: the logits of the last n positions of each sequence (every position without keep_last),
float64 little-endian, sequences one after another ([n x vocab] each, row-major).

Independent of the Rust side on the points that matter: the `gguf` package (llama.cpp's own Python
reader) parses and dequantises the tensors; Q and K are used as stored, with llama.cpp's rope on
adjacent pairs (x[2i], x[2i+1]), which is what GGUF's Q/K row permutation is for, so the Rust
loader's un-permutation to Hugging Face's rotate-half layout is checked, not reused. Each sequence
runs alone, unpadded, without a cache.
"""
import json, sys
import numpy as np
import gguf


class Gguf:
    def __init__(self, path):
        self.r = gguf.GGUFReader(path)
        self.t = {t.name: t for t in self.r.tensors}
        self.cache = {}  # dequantised once, kept as float32 (float64 would double the memory)
        arch = self.meta("general.architecture")
        if arch != "llama":
            sys.exit(f"{path}: general.architecture is {arch!r}, this reference is for llama")

    def meta(self, key, default=None):
        f = self.r.fields.get(key)
        return default if f is None else f.contents()

    def w(self, name):
        """Dequantised tensor in numpy (row-major, HF) order: [out, in] for a linear weight."""
        if name not in self.cache:
            t = self.t[name]
            self.cache[name] = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        return self.cache[name].astype(np.float64)


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope_pairs(x, theta):
    """llama.cpp's "normal" rope: x[..., 2i] and x[..., 2i+1] rotate together. x: [heads, T, hd]."""
    t, hd = x.shape[1], x.shape[2]
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(t, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out


def forward(m, ids, keep_last=None):
    nh = m.meta("llama.attention.head_count")
    kvh = m.meta("llama.attention.head_count_kv", nh)
    eps = m.meta("llama.attention.layer_norm_rms_epsilon")
    theta = m.meta("llama.rope.freq_base", 10000.0)
    T = len(ids)
    emb = m.w("token_embd.weight")
    x = emb[ids]
    hd = x.shape[1] // nh
    causal = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(m.meta("llama.block_count")):
        p = f"blk.{l}"
        h = rms_norm(x, m.w(f"{p}.attn_norm.weight"), eps)
        q = (h @ m.w(f"{p}.attn_q.weight").T).reshape(T, nh, hd).transpose(1, 0, 2)
        k = (h @ m.w(f"{p}.attn_k.weight").T).reshape(T, kvh, hd).transpose(1, 0, 2)
        v = (h @ m.w(f"{p}.attn_v.weight").T).reshape(T, kvh, hd).transpose(1, 0, 2)
        q, k = rope_pairs(q, theta), rope_pairs(k, theta)
        k, v = np.repeat(k, nh // kvh, 0), np.repeat(v, nh // kvh, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(T, nh * hd)
        x = x + o @ m.w(f"{p}.attn_output.weight").T
        h = rms_norm(x, m.w(f"{p}.ffn_norm.weight"), eps)
        g = h @ m.w(f"{p}.ffn_gate.weight").T
        u = h @ m.w(f"{p}.ffn_up.weight").T
        x = x + (g / (1 + np.exp(-g)) * u) @ m.w(f"{p}.ffn_down.weight").T
    x = rms_norm(x[-(keep_last or T):], m.w("output_norm.weight"), eps)
    head = m.w("output.weight") if "output.weight" in m.t else emb  # tied when absent
    return x @ head.T


def main():
    model, req_path, out_path = sys.argv[1:4]
    m = Gguf(model)
    req = json.load(open(req_path))
    keep = req.get("keep_last") or [None] * len(req["seqs"])
    with open(out_path, "wb") as out:
        for ids, n in zip(req["seqs"], keep):
            out.write(forward(m, np.array(ids), n).astype("<f8").tobytes())


if __name__ == "__main__":
    main()
