#!/usr/bin/env python3
"""Builds tests/fixtures/quant.gguf and the expected f32 values of each tensor.

Block bytes are random (seeded) except the scale fields, which are set to finite values. The
expected values are computed here with ggml's dequantisation formulas in float32 (numpy), and,
when the `gguf` package is installed, cross-checked against its own dequantisers.
Run: python3 tests/reference/make_fixtures.py   (needs numpy; `gguf` optional)
"""
import random, struct, sys
from pathlib import Path
import numpy as np

F = np.float32
OUT = Path(__file__).resolve().parent.parent / "fixtures"
rng = random.Random(20250623)


def f16(x):
    return struct.pack("<e", x)


def f16v(b, o):
    return F(np.frombuffer(b[o:o + 2], dtype="<f2")[0])


def rbytes(n):
    return bytes(rng.randrange(256) for _ in range(n))


def rscale():
    return rng.uniform(-0.05, 0.05)


# Block makers: random quants, finite scales.
def mk_q4_0(): return f16(rscale()) + rbytes(16)
def mk_q4_1(): return f16(rscale()) + f16(rscale()) + rbytes(16)
def mk_q5_0(): return f16(rscale()) + rbytes(4) + rbytes(16)
def mk_q5_1(): return f16(rscale()) + f16(rscale()) + rbytes(4) + rbytes(16)
def mk_q8_0(): return f16(rscale()) + rbytes(32)
def mk_q4_k(): return f16(rscale()) + f16(rscale()) + rbytes(12) + rbytes(128)
def mk_q5_k(): return f16(rscale()) + f16(rscale()) + rbytes(12) + rbytes(32) + rbytes(128)
def mk_q6_k(): return rbytes(128) + rbytes(64) + rbytes(16) + f16(rscale())
def mk_q8_k(): return struct.pack("<f", rscale()) + rbytes(256) + rbytes(32)


# Dequantisers, one block each, in float32 like ggml's reference C code.
def dq_q4_0(b):
    d = f16v(b, 0); y = [F(0)] * 32
    for j in range(16):
        y[j] = F(int(b[2 + j] & 15) - 8) * d
        y[j + 16] = F(int(b[2 + j] >> 4) - 8) * d
    return y


def dq_q4_1(b):
    d, m = f16v(b, 0), f16v(b, 2); y = [F(0)] * 32
    for j in range(16):
        y[j] = F(b[4 + j] & 15) * d + m
        y[j + 16] = F(b[4 + j] >> 4) * d + m
    return y


def dq_q5(b, with_min):
    d = f16v(b, 0); m = f16v(b, 2) if with_min else None; o = 4 if with_min else 2
    qh = struct.unpack("<I", b[o:o + 4])[0]; qs = b[o + 4:o + 20]; off = 0 if with_min else 16
    y = [F(0)] * 32
    for j in range(16):
        x0 = (qs[j] & 15) | (((qh >> j) & 1) << 4)
        x1 = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)
        y[j] = F(x0 - off) * d
        y[j + 16] = F(x1 - off) * d
        if with_min:
            y[j] += m; y[j + 16] += m
    return y


def dq_q8_0(b):
    d = f16v(b, 0)
    return [F(struct.unpack("b", b[2 + j:3 + j])[0]) * d for j in range(32)]


def scale_min(j, q):
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def dq_qk(b, five):
    d, dmin = f16v(b, 0), f16v(b, 2); sc = b[4:16]
    qh = b[16:48] if five else None; qs = b[48:176] if five else b[16:144]
    y = []
    for sub in range(8):  # sub-block of 32 elements
        s, mn = scale_min(sub, sc)
        dd, mm = d * F(s), dmin * F(mn)
        chunk = qs[32 * (sub // 2):32 * (sub // 2) + 32]
        for l in range(32):
            q = (chunk[l] >> 4) if sub % 2 else (chunk[l] & 15)
            if five:
                q |= ((qh[l] >> sub) & 1) << 4
            y.append(dd * F(q) - mm)
    return y


def dq_q6_k(b):
    ql, qh, sc = b[0:128], b[128:192], struct.unpack("16b", b[192:208]); d = f16v(b, 208)
    y = []
    for i in range(256):
        half, r = divmod(i, 128); k, l = divmod(r, 32)  # element 32k+l of this half
        low_byte = ql[64 * half + l + 32 * (k % 2)]
        low = (low_byte >> 4) if k >= 2 else (low_byte & 15)
        high = (qh[32 * half + l] >> (2 * k)) & 3
        s = sc[8 * half + l // 16 + 2 * k]
        y.append(d * F(s) * F((low | (high << 4)) - 32))
    return y


def dq_q8_k(b):
    d = F(struct.unpack("<f", b[0:4])[0])
    return [F(v) * d for v in struct.unpack("256b", b[4:260])]


QUANT = {  # name: (ggml type id, elems/block, maker, dequant)
    "q4_0": (2, 32, mk_q4_0, dq_q4_0),
    "q4_1": (3, 32, mk_q4_1, dq_q4_1),
    "q5_0": (6, 32, mk_q5_0, lambda b: dq_q5(b, False)),
    "q5_1": (7, 32, mk_q5_1, lambda b: dq_q5(b, True)),
    "q8_0": (8, 32, mk_q8_0, dq_q8_0),
    "q4_k": (12, 256, mk_q4_k, lambda b: dq_qk(b, False)),
    "q5_k": (13, 256, mk_q5_k, lambda b: dq_qk(b, True)),
    "q6_k": (14, 256, mk_q6_k, dq_q6_k),
    "q8_k": (15, 256, mk_q8_k, dq_q8_k),
}


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, ty, payload):
    return gguf_str(key) + struct.pack("<I", ty) + payload


def main():
    tensors = []  # (name, dims ggml order, type id, raw bytes, expected float32 list)
    for name, (tid, be, mk, dq) in QUANT.items():
        blocks = [mk() for _ in range(512 // be)]
        exp = [v for blk in blocks for v in dq(blk)]
        tensors.append((name, [256, 2], tid, b"".join(blocks), exp))
    vals = [F(rng.uniform(-3, 3)) for _ in range(24)]
    tensors.append(("f32", [4, 3, 2], 0, np.array(vals, "<f4").tobytes(), vals))
    h = np.array([rng.uniform(-3, 3) for _ in range(24)], "<f2")
    tensors.append(("f16", [8, 3], 1, h.tobytes(), [F(v) for v in h.astype(F)]))
    bf = np.array([rng.uniform(-3, 3) for _ in range(24)], F).view("<u4") >> 16  # bf16 = top 16 bits
    tensors.append(("bf16", [6, 4], 30, bf.astype("<u2").tobytes(), list((bf.astype("<u4") << 16).view(F))))

    try:  # independent cross-check with llama.cpp's Python package
        from gguf import quants, GGMLQuantizationType as T
        for name, dims, tid, raw, exp in tensors:
            if tid in (0, 1, 30):
                continue
            try:
                ref = quants.dequantize(np.frombuffer(raw, np.uint8).reshape(dims[1], -1), T(tid)).reshape(-1)
            except NotImplementedError:
                print(f"{name}: the gguf package has no dequantiser, not cross-checked")
                continue
            diff = np.abs(ref - np.array(exp, F)).max()
            assert diff <= 1e-6, f"{name}: gguf package disagrees by {diff}"
            print(f"{name}: agrees with the gguf package (max abs diff {diff:g})")
    except ImportError:
        print("gguf package not installed: no cross-check", file=sys.stderr)

    align = 64
    meta = [
        kv("general.architecture", 8, gguf_str("test")),
        kv("general.alignment", 4, struct.pack("<I", align)),
        kv("t.u8", 0, struct.pack("<B", 200)), kv("t.i8", 1, struct.pack("<b", -100)),
        kv("t.u16", 2, struct.pack("<H", 60000)), kv("t.i16", 3, struct.pack("<h", -30000)),
        kv("t.i32", 5, struct.pack("<i", -2000000000)), kv("t.f32", 6, struct.pack("<f", 0.5)),
        kv("t.bool", 7, b"\x01"), kv("t.u64", 10, struct.pack("<Q", 1 << 40)),
        kv("t.i64", 11, struct.pack("<q", -(1 << 40))), kv("t.f64", 12, struct.pack("<d", 0.1)),
        kv("t.strs", 9, struct.pack("<IQ", 8, 3) + gguf_str("a") + gguf_str("") + gguf_str("é b")),
        kv("t.nested", 9, struct.pack("<IQ", 9, 2) + struct.pack("<IQ", 5, 2) + struct.pack("<ii", 1, -2)
           + struct.pack("<IQ", 5, 0)),
    ]
    infos, data = b"", b""
    for name, dims, tid, raw, _ in tensors:
        data += b"\0" * (-len(data) % align)
        infos += gguf_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", tid, len(data))
        data += raw
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + b"".join(meta) + infos
    head += b"\0" * (-len(head) % align)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "quant.gguf").write_bytes(head + data)
    # Expected values: all tensors' f32 (little-endian) concatenated in tensor order.
    (OUT / "quant_expected.f32").write_bytes(np.array([v for t in tensors for v in t[4]], "<f4").tobytes())
    print(f"wrote {OUT/'quant.gguf'} ({len(head)+len(data)} bytes), {len(tensors)} tensors")


if __name__ == "__main__":
    main()
