//! GGUF (v2/v3) reader: metadata, tensor infos, memory-mapped data, dequantisation to f32.
//! Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md

use crate::config::{Architecture, ModelConfig};
use crate::names::{gguf_to_hf_name, hf_to_gguf_name};
use crate::quant::{self, GgmlType};
use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// Any non-negative integer (bools are not integers here).
    pub fn as_u64(&self) -> Option<u64> {
        use GgufValue::*;
        match *self {
            U8(v) => Some(v as u64),
            U16(v) => Some(v as u64),
            U32(v) => Some(v as u64),
            U64(v) => Some(v),
            I8(v) => u64::try_from(v).ok(),
            I16(v) => u64::try_from(v).ok(),
            I32(v) => u64::try_from(v).ok(),
            I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        use GgufValue::*;
        match *self {
            I8(v) => Some(v as i64),
            I16(v) => Some(v as i64),
            I32(v) => Some(v as i64),
            I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
    /// Floats and integers as f64. An f32 goes through its shortest decimal form, so a stored
    /// 1e-6 reads as 1e-6 (as in the HF config) rather than 9.99999997e-7.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => v.to_string().parse().ok(),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the fastest-varying (row length).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Row-major shape as HF/PyTorch write it (GGUF dims reversed).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

enum Bytes {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An opened GGUF file. Tensor data stays memory-mapped until dequantised.
pub struct GgufFile {
    path: PathBuf,
    map: Bytes,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            bail!(
                "truncated: {what} needs {n} bytes at offset {} but the file has {}",
                self.pos,
                self.buf.len()
            )
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().unwrap())
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let b = self.take(usize::try_from(n).unwrap_or(usize::MAX), what)?;
        String::from_utf8(b.to_vec()).map_err(|_| anyhow!("{what}: string is not UTF-8"))
    }
    fn value(&mut self, ty: u32, what: &str) -> Result<GgufValue> {
        use GgufValue::*;
        Ok(match ty {
            0 => U8(self.arr::<1>(what)?[0]),
            1 => I8(self.arr::<1>(what)?[0] as i8),
            2 => U16(u16::from_le_bytes(self.arr(what)?)),
            3 => I16(i16::from_le_bytes(self.arr(what)?)),
            4 => U32(self.u32(what)?),
            5 => I32(i32::from_le_bytes(self.arr(what)?)),
            6 => F32(f32::from_le_bytes(self.arr(what)?)),
            7 => match self.arr::<1>(what)?[0] {
                0 => Bool(false),
                1 => Bool(true),
                b => bail!("{what}: invalid bool byte {b}"),
            },
            8 => Str(self.string(what)?),
            9 => {
                let ety = self.u32(what)?;
                let n = self.u64(what)?;
                // Every element takes at least one byte: reject absurd counts before allocating.
                if n > (self.buf.len() - self.pos) as u64 {
                    bail!("truncated: {what} claims {n} array elements at offset {}", self.pos);
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, what)?);
                }
                Array(v)
            }
            10 => U64(self.u64(what)?),
            11 => I64(i64::from_le_bytes(self.arr(what)?)),
            12 => F64(f64::from_le_bytes(self.arr(what)?)),
            t => bail!("{what}: unknown metadata value type {t}"),
        })
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).with_context(|| format!("opening GGUF file {}", path.display()))?;
        // SAFETY: read-only map; the file must not be modified while open (documented caller contract).
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("memory-mapping {}", path.display()))?;
        Self::parse(path.clone(), Bytes::Map(map)).with_context(|| format!("reading GGUF file {}", path.display()))
    }

    /// Parse GGUF bytes held in memory; `name` stands for the file in messages.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        let path = name.into();
        Self::parse(path.clone(), Bytes::Owned(bytes)).with_context(|| format!("reading GGUF file {}", path.display()))
    }

    fn parse(path: PathBuf, map: Bytes) -> Result<Self> {
        let mut c = Cursor { buf: &map, pos: 0 };
        if &c.arr::<4>("magic")? != MAGIC {
            bail!("not a GGUF file (bad magic)");
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            bail!("unsupported GGUF version {version} (2 and 3 are supported)");
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty = c.u32(&format!("type of metadata {key}"))?;
            let v = c.value(ty, &format!("metadata {key}"))?;
            metadata.insert(key, v);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| anyhow!("general.alignment {v:?} is not a power of two"))?,
        };
        let mut raw = Vec::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor info #{i} name"))?;
            let what = format!("tensor info of {name}");
            let nd = c.u32(&what)?;
            if nd > 8 {
                bail!("tensor {name}: {nd} dimensions");
            }
            let dims = (0..nd).map(|_| c.u64(&what)).collect::<Result<Vec<_>>>()?;
            let ty = GgmlType::from_id(c.u32(&what)?);
            let off = c.u64(&what)?;
            raw.push((name, dims, ty, off));
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let len = map.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut index = HashMap::new();
        for (name, dims, ty, off) in raw {
            let Some((be, bb)) = ty.block_layout() else {
                bail!("tensor {name}: unsupported type {ty}")
            };
            if dims.first().is_some_and(|&d| d % be as u64 != 0) {
                bail!(
                    "tensor {name}: row length {} is not a multiple of the {ty} block size {be}",
                    dims[0]
                );
            }
            if off % alignment != 0 {
                bail!("tensor {name}: offset {off} is not aligned to {alignment}");
            }
            // Checked: a corrupt header must give an error, not an overflow.
            let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let n_bytes = n.and_then(|n| (n / be as u64).checked_mul(bb as u64));
            let end = n_bytes.and_then(|b| data_offset.checked_add(off)?.checked_add(b));
            let (Some(n_bytes), Some(end)) = (n_bytes, end) else {
                bail!("tensor {name}: dims {dims:?} overflow")
            };
            let offset = data_offset + off;
            if end > len || n_bytes > usize::MAX as u64 / 4 {
                bail!("truncated: tensor {name} needs bytes {offset}..{end} but the file has {len} bytes");
            }
            if index.insert(name.clone(), tensors.len()).is_some() {
                bail!("duplicate tensor name {name}");
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type: ty,
                offset,
                n_bytes,
            });
        }
        Ok(Self {
            path,
            map,
            version,
            alignment,
            data_offset,
            metadata,
            tensors,
            index,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn alignment(&self) -> u64 {
        self.alignment
    }
    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    fn missing_key(&self, key: &str, expected: &str) -> anyhow::Error {
        match self.get(key) {
            None => anyhow!("{}: metadata key {key} is missing", self.path.display()),
            Some(v) => anyhow!(
                "{}: metadata key {key} is {v:?}, expected {expected}",
                self.path.display()
            ),
        }
    }
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
            .and_then(GgufValue::as_u64)
            .ok_or_else(|| self.missing_key(key, "an unsigned integer"))
    }
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key)
            .and_then(GgufValue::as_f64)
            .ok_or_else(|| self.missing_key(key, "a number"))
    }
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .and_then(GgufValue::as_str)
            .ok_or_else(|| self.missing_key(key, "a string"))
    }
    pub fn get_array(&self, key: &str) -> Result<&[GgufValue]> {
        self.get(key)
            .and_then(GgufValue::as_array)
            .ok_or_else(|| self.missing_key(key, "an array"))
    }
    /// A string array (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.get_array(key)?
            .iter()
            .map(|v| v.as_str().ok_or_else(|| self.missing_key(key, "an array of strings")))
            .collect()
    }

    /// Tensor names in file order.
    pub fn tensor_names(&self) -> Vec<&str> {
        self.tensors.iter().map(|t| t.name.as_str()).collect()
    }
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    pub fn has_tensor(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        match self.index.get(name) {
            Some(&i) => Ok(&self.tensors[i]),
            None => bail!("tensor {name} not found in {}", self.path.display()),
        }
    }
    /// The raw (possibly quantised) bytes of a tensor.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.tensor_info(name)?;
        Ok(&self.map[t.offset as usize..(t.offset + t.n_bytes) as usize])
    }

    /// Dequantise to f32; returns the row-major (HF) shape and the values.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.tensor_info(name)?;
        let bytes = self.tensor_bytes(name)?;
        let mut out = vec![0f32; t.n_elements()];
        dequantize_parallel(t.ggml_type, bytes, &mut out)
            .with_context(|| format!("dequantising tensor {name} in {}", self.path.display()))?;
        Ok((t.shape(), out))
    }

    /// `dequantize`, failing unless the row-major shape equals `expected`.
    pub fn dequantize_expect(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let shape = self.tensor_info(name)?.shape();
        if shape != expected {
            bail!(
                "tensor {name} in {} has shape {shape:?}, expected {expected:?}",
                self.path.display()
            );
        }
        Ok(self.dequantize(name)?.1)
    }

    /// Dequantise a tensor by its HF name (`model.layers.0.self_attn.q_proj.weight`), undoing
    /// llama.cpp's Q/K row permutation for the llama architecture so values match the HF checkpoint.
    pub fn dequantize_hf(&self, hf_name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let g = hf_to_gguf_name(hf_name).ok_or_else(|| anyhow!("no GGUF name for HF tensor {hf_name}"))?;
        let (shape, mut data) = self.dequantize(&g)?;
        if self.architecture()? == Architecture::Llama {
            let heads = if g.ends_with("attn_q.weight") || g.ends_with("attn_q.bias") {
                Some(self.get_u64("llama.attention.head_count")?)
            } else if g.ends_with("attn_k.weight") || g.ends_with("attn_k.bias") {
                let key = "llama.attention.head_count_kv";
                Some(if self.get(key).is_some() {
                    self.get_u64(key)?
                } else {
                    self.get_u64("llama.attention.head_count")?
                })
            } else {
                None
            };
            if let Some(h) = heads {
                data = unpermute_qk(&data, &shape, h as usize)
                    .with_context(|| format!("tensor {g} in {}", self.path.display()))?;
            }
        }
        Ok((shape, data))
    }

    /// HF names of all tensors that have one (e.g. `rope_freqs.weight` has none).
    pub fn hf_tensor_names(&self) -> Vec<String> {
        self.tensors.iter().filter_map(|t| gguf_to_hf_name(&t.name)).collect()
    }

    pub fn architecture(&self) -> Result<Architecture> {
        let a = self.get_str("general.architecture")?;
        Architecture::parse(a).ok_or_else(|| {
            anyhow!(
                "{}: unsupported architecture {a:?} (qwen2 or llama)",
                self.path.display()
            )
        })
    }

    /// Hyper-parameters from `<arch>.*` metadata; vocab size from the token list (or the embedding).
    pub fn model_config(&self) -> Result<ModelConfig> {
        let arch = self.architecture()?;
        let p = self.get_str("general.architecture")?.to_string();
        let k = |s: &str| format!("{p}.{s}");
        let u = |s: &str| self.get_u64(&k(s)).map(|v| v as usize);
        let hidden = u("embedding_length")?;
        let heads = u("attention.head_count")?;
        let kv = if self.get(&k("attention.head_count_kv")).is_some() {
            u("attention.head_count_kv")?
        } else {
            heads
        };
        let embd = self.tensor_info("token_embd.weight")?;
        let vocab_size = match self.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array) {
            Some(t) => t.len(),
            None => embd.shape()[0],
        };
        let head_dim = match self.get(&k("attention.key_length")) {
            Some(_) => u("attention.key_length")?,
            None => hidden / heads.max(1),
        };
        let f = |s: &str, d: f64| {
            if self.get(&k(s)).is_some() {
                self.get_f64(&k(s))
            } else {
                Ok(d)
            }
        };
        Ok(ModelConfig {
            architecture: arch,
            hidden_size: hidden,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: u("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim,
            rms_norm_eps: f("attention.layer_norm_rms_epsilon", 1e-6)?,
            rope_theta: f("rope.freq_base", if arch == Architecture::Qwen2 { 1e6 } else { 1e4 })?,
            vocab_size,
            tie_word_embeddings: !self.has_tensor("output.weight"),
            max_position_embeddings: if self.get(&k("context_length")).is_some() {
                u("context_length")?
            } else {
                32768
            },
            attention_bias: self.has_tensor("blk.0.attn_q.bias"),
            rope_scaling: None,
            // The tokenizer's, filled in by whoever reads it (recode_model::gguf).
            bos_token_id: None,
            eos_token_ids: vec![],
        })
    }
}

/// Inverse of llama.cpp's `permute` on Q/K rows: within each head, GGUF row `2j + i` is HF row
/// `i * head_dim/2 + j` (HF stores rotary halves, GGUF interleaves pairs). `shape` is row-major.
pub fn unpermute_qk(data: &[f32], shape: &[usize], n_heads: usize) -> Result<Vec<f32>> {
    let rows = shape.first().copied().unwrap_or(0);
    let cols: usize = shape.iter().skip(1).product();
    if n_heads == 0 || rows % (2 * n_heads) != 0 || rows * cols != data.len() {
        bail!("cannot un-permute Q/K of shape {shape:?} into {n_heads} heads");
    }
    let hd = rows / n_heads;
    let half = hd / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_heads {
        for i in 0..2 {
            for j in 0..half {
                let src = (h * hd + 2 * j + i) * cols;
                let dst = (h * hd + i * half + j) * cols;
                out[dst..dst + cols].copy_from_slice(&data[src..src + cols]);
            }
        }
    }
    Ok(out)
}

/// Split large tensors over threads along block boundaries.
fn dequantize_parallel(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let Some((be, bb)) = ty.block_layout() else {
        bail!("unsupported tensor type {ty}")
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let blocks = out.len() / be;
    if threads < 2 || out.len() < (1 << 20) {
        return quant::dequantize(ty, bytes, out);
    }
    let per = blocks.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * be)
            .zip(bytes.chunks(per * bb))
            .map(|(o, b)| s.spawn(move || quant::dequantize(ty, b, o)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow!("dequantisation thread panicked"))?)
    })
}
