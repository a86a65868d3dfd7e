//! ggml tensor types and dequantisation to f32. Block layouts follow ggml's `block_*` structs
//! (little-endian, packed): https://github.com/ggml-org/ggml `ggml-common.h`.

use anyhow::{bail, Result};
use half::{bf16, f16};

/// A ggml tensor type as stored in GGUF tensor infos.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    I8,
    I16,
    I32,
    I64,
    F64,
    BF16,
    /// Any other id (IQ*, TQ*, ...): parsed, sized if known, not dequantisable.
    Other(u32),
}

impl GgmlType {
    pub fn from_id(id: u32) -> Self {
        use GgmlType::*;
        match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => BF16,
            n => Other(n),
        }
    }

    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            BF16 => 30,
            Other(n) => n,
        }
    }

    /// (elements per block, bytes per block); None for types whose layout we do not know.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        use GgmlType::*;
        Some(match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2_K => (256, 84),
            Q3_K => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            Q8_K => (256, 292),
            Other(_) => return None,
        })
    }

    /// Whether `dequantize` supports this type.
    pub fn is_dequantizable(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K | Q8_K
        )
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GgmlType::Other(n) => write!(f, "ggml type {n}"),
            t => write!(f, "{t:?}"),
        }
    }
}

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantise `bytes` (whole blocks of `ty`) into `out`; `out.len()` must be the element count.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let Some((be, bb)) = ty.block_layout() else {
        bail!("unsupported tensor type {ty}")
    };
    if !out.len().is_multiple_of(be) || bytes.len() != out.len() / be * bb {
        bail!(
            "{ty}: {} bytes do not hold {} elements ({bb} bytes per {be})",
            bytes.len(),
            out.len()
        );
    }
    let blocks = bytes.chunks_exact(bb).zip(out.chunks_exact_mut(be));
    match ty {
        GgmlType::F32 => blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        GgmlType::F16 => blocks.for_each(|(b, y)| y[0] = h(b, 0)),
        GgmlType::BF16 => blocks.for_each(|(b, y)| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| q4_0(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| q4_1(b, y)),
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| q5(b, y, false)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| q5(b, y, true)),
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| q8_0(b, y)),
        GgmlType::Q4_K => blocks.for_each(|(b, y)| q4_k(b, y)),
        GgmlType::Q5_K => blocks.for_each(|(b, y)| q5_k(b, y)),
        GgmlType::Q6_K => blocks.for_each(|(b, y)| q6_k(b, y)),
        GgmlType::Q8_K => blocks.for_each(|(b, y)| q8_k(b, y)),
        t => bail!("dequantisation of {t} is not implemented"),
    }
    Ok(())
}

/// block_q4_0 { f16 d; u8 qs[16] }: low nibbles are elements 0..16, high nibbles 16..32.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = ((q & 0xF) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// block_q4_1 { f16 d; f16 m; u8 qs[16] }.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (h(b, 0), h(b, 2));
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = (q & 0xF) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// block_q5_0 { f16 d; u32 qh; u8 qs[16] } and block_q5_1 { f16 d; f16 m; u32 qh; u8 qs[16] }:
/// bit j of qh is the 5th bit of element j.
fn q5(b: &[u8], y: &mut [f32], with_min: bool) {
    let d = h(b, 0);
    let (m, o) = if with_min { (h(b, 2), 4) } else { (0.0, 2) };
    let qh = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let qs = &b[o + 4..o + 20];
    let off = if with_min { 0 } else { 16 };
    for j in 0..16 {
        let lo = (qs[j] & 0xF) as i32 | ((((qh >> j) & 1) << 4) as i32);
        let hi = (qs[j] >> 4) as i32 | ((((qh >> (j + 16)) & 1) << 4) as i32);
        // Q5_0 adds no min: keep `x * d` exact (adding 0.0 would turn -0.0 into +0.0).
        if with_min {
            y[j] = (lo - off) as f32 * d + m;
            y[j + 16] = (hi - off) as f32 * d + m;
        } else {
            y[j] = (lo - off) as f32 * d;
            y[j + 16] = (hi - off) as f32 * d;
        }
    }
}

/// block_q8_0 { f16 d; i8 qs[32] }.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    for j in 0..32 {
        y[j] = b[2 + j] as i8 as f32 * d;
    }
}

/// 8 (scale, min) pairs of 6 bits packed into 12 bytes (ggml `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }: 8 sub-blocks of 32; each 32-byte
/// chunk of qs holds sub-block 2i in its low nibbles and 2i+1 in its high nibbles.
fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (h(b, 0), h(b, 2));
    let sc = &b[4..16];
    let qs = &b[16..144];
    for i in 0..4 {
        let (s0, m0) = scale_min_k4(2 * i, sc);
        let (s1, m1) = scale_min_k4(2 * i + 1, sc);
        let (d0, n0, d1, n1) = (d * s0 as f32, dmin * m0 as f32, d * s1 as f32, dmin * m1 as f32);
        let q = &qs[32 * i..32 * i + 32];
        let y = &mut y[64 * i..64 * i + 64];
        for l in 0..32 {
            y[l] = d0 * (q[l] & 0xF) as f32 - n0;
            y[l + 32] = d1 * (q[l] >> 4) as f32 - n1;
        }
    }
}

/// block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }: like Q4_K, with the
/// 5th bit of sub-block s at bit s of qh[l].
fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (h(b, 0), h(b, 2));
    let sc = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for i in 0..4 {
        let (s0, m0) = scale_min_k4(2 * i, sc);
        let (s1, m1) = scale_min_k4(2 * i + 1, sc);
        let (d0, n0, d1, n1) = (d * s0 as f32, dmin * m0 as f32, d * s1 as f32, dmin * m1 as f32);
        let q = &qs[32 * i..32 * i + 32];
        let y = &mut y[64 * i..64 * i + 64];
        for l in 0..32 {
            let h0 = ((qh[l] >> (2 * i)) & 1) << 4;
            let h1 = ((qh[l] >> (2 * i + 1)) & 1) << 4;
            y[l] = d0 * ((q[l] & 0xF) | h0) as f32 - n0;
            y[l + 32] = d1 * ((q[l] >> 4) | h1) as f32 - n1;
        }
    }
}

/// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }: two halves of 128 elements; in a
/// half, element 32k+l takes 4 low bits from ql (nibble k/2 of byte l + 32*(k%2)) and 2 high bits
/// from qh[l] bits 2k..2k+2; 16 sub-blocks of 16 share one i8 scale.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = h(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for k in 0..4 {
                y[l + 32 * k] = d * (sc[is + 2 * k] as i8) as f32 * (q[k] as i32 - 32) as f32;
            }
        }
    }
}

/// block_q8_K { f32 d; i8 qs[256]; i16 bsums[16] } (bsums are only a dot-product shortcut).
fn q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for j in 0..256 {
        y[j] = b[4 + j] as i8 as f32 * d;
    }
}
