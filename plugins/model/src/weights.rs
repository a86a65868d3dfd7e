//! Where weights come from. Every format is presented under Hugging Face tensor names
//! (`model.layers.0.self_attn.q_proj.weight`, HF `[out, in]` layout) as f32, so one loader serves all.

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub trait WeightSource {
    /// Shape and f32 values of a tensor named as in Hugging Face checkpoints.
    fn tensor(&self, hf_name: &str) -> Result<(Vec<usize>, Vec<f32>)>;
    fn contains(&self, hf_name: &str) -> bool;
}

/// One or more `.safetensors` files, fully read into memory (freed when the source is dropped).
pub struct SafetensorsSource {
    files: Vec<(PathBuf, Vec<u8>)>,
    /// tensor name -> index into `files`
    index: HashMap<String, usize>,
}

impl SafetensorsSource {
    /// A HF folder: `model.safetensors`, or the shards named by `model.safetensors.index.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let paths: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else {
            let idx = dir.join("model.safetensors.index.json");
            let text = std::fs::read_to_string(&idx)
                .with_context(|| format!("{}: no model.safetensors and no index", dir.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}", idx.display()))?;
            let mut shards: Vec<String> = v["weight_map"]
                .as_object()
                .with_context(|| format!("{}: no weight_map", idx.display()))?
                .values()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        };
        Self::from_files(&paths)
    }

    pub fn from_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, p) in paths.iter().enumerate() {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let st =
                SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not a safetensors file", p.display()))?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            files.push((p.clone(), bytes));
        }
        Ok(Self { files, index })
    }
}

impl SafetensorsSource {
    /// Every tensor name in the files.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }
}

impl WeightSource for SafetensorsSource {
    fn contains(&self, hf_name: &str) -> bool {
        self.index.contains_key(hf_name)
    }
    fn tensor(&self, hf_name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let &i = self
            .index
            .get(hf_name)
            .with_context(|| format!("tensor `{hf_name}` not found in the safetensors files"))?;
        let (path, bytes) = &self.files[i];
        let st = SafeTensors::deserialize(bytes)?;
        let view = st.tensor(hf_name)?;
        let vals = bytes_to_f32(view.dtype(), view.data())
            .with_context(|| format!("{}: tensor `{hf_name}`", path.display()))?;
        Ok((view.shape().to_vec(), vals))
    }
}

pub fn bytes_to_f32(dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    let u16s = || data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => u16s().map(|b| f32::from_bits((b as u32) << 16)).collect(),
        Dtype::F16 => u16s().map(f16_to_f32).collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        d => bail!("dtype {d:?} is not supported (expected F32, F16, BF16 or F64)"),
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Write f32 tensors as a safetensors file (used for checkpoints, PEFT export and tests).
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bufs
        .iter()
        .map(|(n, s, b)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)?,
            ))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, None, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
