#!/usr/bin/env python3
"""Independent float64 numpy reference for Qwen2 / Llama decoders (+ LoRA/DoRA from a PEFT folder).

usage: qwen2_ref.py MODEL_DIR REQUEST.json OUT.json
REQUEST: {"seqs": [{"prompt": [ids], "completion": [ids]}], "adapter_dir": null | path}
OUT: {"logits": [[L x V] per seq], "logprobs": [[len(completion)] per seq]}
Each sequence is run alone, unpadded, without a cache: the Rust side must match it with batching,
left padding and its KV cache.
"""
import json, struct, sys
import numpy as np


def load_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        raw = data[8 + n + s:8 + n + e]
        dt = info["dtype"]
        if dt == "BF16":
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype={"F32": np.float32, "F16": np.float16, "F64": np.float64}[dt])
        out[name] = arr.reshape(info["shape"]).astype(np.float64)
    return out


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x, theta, hd):
    # x: [heads, T, hd]; rotate-half convention of HF Qwen2/Llama
    t = x.shape[1]
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(t, dtype=np.float64)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)
    sin = np.concatenate([np.sin(ang)] * 2, -1)
    rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
    return x * cos + rot * sin


class Model:
    def __init__(self, model_dir, adapter_dir=None):
        self.cfg = json.load(open(f"{model_dir}/config.json"))
        self.w = load_safetensors(f"{model_dir}/model.safetensors")
        self.ad, self.acfg = {}, None
        if adapter_dir:
            self.acfg = json.load(open(f"{adapter_dir}/adapter_config.json"))
            for k, v in load_safetensors(f"{adapter_dir}/adapter_model.safetensors").items():
                self.ad[k[len("base_model.model."):]] = v

    def linear(self, x, name):
        W = self.w[f"{name}.weight"]
        b = self.w.get(f"{name}.bias")
        A = self.ad.get(f"{name}.lora_A.weight")
        if A is not None:
            B = self.ad[f"{name}.lora_B.weight"]
            s = self.acfg["lora_alpha"] / self.acfg["r"]
            Wp = W + s * B @ A
            m = self.ad.get(f"{name}.lora_magnitude_vector")
            if m is not None:  # DoRA: W' scaled row-wise to magnitude m
                Wp = Wp * (m / np.linalg.norm(Wp, axis=1))[:, None]
            W = Wp
        y = x @ W.T
        return y + b if b is not None else y

    def logits(self, ids):
        c = self.cfg
        nh, kvh = c["num_attention_heads"], c["num_key_value_heads"]
        hd = c.get("head_dim") or c["hidden_size"] // nh
        eps, theta = c["rms_norm_eps"], c.get("rope_theta", 10000.0)
        T = len(ids)
        x = self.w["model.embed_tokens.weight"][ids]
        causal = np.triu(np.full((T, T), -np.inf), 1)
        for l in range(c["num_hidden_layers"]):
            p = f"model.layers.{l}"
            h = rms_norm(x, self.w[f"{p}.input_layernorm.weight"], eps)
            q = self.linear(h, f"{p}.self_attn.q_proj").reshape(T, nh, hd).transpose(1, 0, 2)
            k = self.linear(h, f"{p}.self_attn.k_proj").reshape(T, kvh, hd).transpose(1, 0, 2)
            v = self.linear(h, f"{p}.self_attn.v_proj").reshape(T, kvh, hd).transpose(1, 0, 2)
            q, k = rope(q, theta, hd), rope(k, theta, hd)
            k, v = np.repeat(k, nh // kvh, 0), np.repeat(v, nh // kvh, 0)
            s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = (s @ v).transpose(1, 0, 2).reshape(T, nh * hd)
            x = x + self.linear(o, f"{p}.self_attn.o_proj")
            h = rms_norm(x, self.w[f"{p}.post_attention_layernorm.weight"], eps)
            g = self.linear(h, f"{p}.mlp.gate_proj")
            x = x + self.linear(g / (1 + np.exp(-g)) * self.linear(h, f"{p}.mlp.up_proj"), f"{p}.mlp.down_proj")
        x = rms_norm(x, self.w["model.norm.weight"], eps)
        head = self.w.get("lm_head.weight")
        if head is None or c.get("tie_word_embeddings"):
            head = self.w["model.embed_tokens.weight"]
        return x @ head.T


def main():
    model_dir, req_path, out_path = sys.argv[1:4]
    req = json.load(open(req_path))
    m = Model(model_dir, req.get("adapter_dir"))
    out = {"logits": [], "logprobs": []}
    for s in req["seqs"]:
        ids = s["prompt"] + s["completion"]
        lg = m.logits(np.array(ids))
        mx = lg.max(-1, keepdims=True)
        lp = lg - mx - np.log(np.exp(lg - mx).sum(-1, keepdims=True))
        P = len(s["prompt"])
        out["logits"].append(lg.tolist())
        out["logprobs"].append([lp[P - 1 + j, t] for j, t in enumerate(s["completion"])])
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    main()
