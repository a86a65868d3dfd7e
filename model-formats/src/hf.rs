//! Hugging Face folders: `config.json` plus `model.safetensors` or shards listed in
//! `model.safetensors.index.json`.

use crate::config::ModelConfig;
use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Shape and dtype of one tensor, and the shard that holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct HfTensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    /// safetensors dtype name ("F32", "F16", "BF16", ...).
    pub dtype: String,
    pub file: PathBuf,
}

/// An opened HF model folder; shards stay memory-mapped.
pub struct HfModel {
    dir: PathBuf,
    config: ModelConfig,
    shards: Vec<(PathBuf, Mmap)>,
    /// tensor name -> shard index
    index: BTreeMap<String, usize>,
}

impl HfModel {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let config = ModelConfig::from_hf_json_file(&dir.join("config.json"))?;
        let single = dir.join("model.safetensors");
        let idx_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if idx_path.exists() {
            let s = std::fs::read_to_string(&idx_path).with_context(|| format!("reading {}", idx_path.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&s).with_context(|| format!("parsing {}", idx_path.display()))?;
            let map = v["weight_map"]
                .as_object()
                .ok_or_else(|| anyhow!("{}: no weight_map", idx_path.display()))?;
            let mut f: Vec<PathBuf> = map.values().filter_map(|x| x.as_str()).map(|x| dir.join(x)).collect();
            f.sort();
            f.dedup();
            f
        } else {
            bail!(
                "{}: neither model.safetensors nor model.safetensors.index.json found",
                dir.display()
            );
        };
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for (i, p) in files.into_iter().enumerate() {
            let f = std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
            // SAFETY: read-only map of a file we do not modify.
            let map = unsafe { Mmap::map(&f) }.with_context(|| format!("memory-mapping {}", p.display()))?;
            let st =
                SafeTensors::deserialize(&map).map_err(|e| anyhow!("{}: invalid safetensors: {e}", p.display()))?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            drop(st);
            shards.push((p, map));
        }
        Ok(Self {
            dir,
            config,
            shards,
            index,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    pub fn tensor_names(&self) -> Vec<&str> {
        self.index.keys().map(String::as_str).collect()
    }
    pub fn has_tensor(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn view(&self, name: &str) -> Result<(&Path, safetensors::tensor::TensorView<'_>)> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| anyhow!("tensor {name} not found in {}", self.dir.display()))?;
        let (p, map) = &self.shards[i];
        let st = SafeTensors::deserialize(map).map_err(|e| anyhow!("{}: {e}", p.display()))?;
        let v = st
            .tensor(name)
            .map_err(|e| anyhow!("tensor {name} in {}: {e}", p.display()))?;
        Ok((p, v))
    }

    pub fn tensor_info(&self, name: &str) -> Result<HfTensorInfo> {
        let (p, v) = self.view(name)?;
        Ok(HfTensorInfo {
            name: name.into(),
            shape: v.shape().to_vec(),
            dtype: format!("{:?}", v.dtype()),
            file: p.into(),
        })
    }

    /// Read a tensor as f32 (from F32, F16 or BF16); returns (row-major shape, values).
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (p, v) = self.view(name)?;
        let b = v.data();
        let out: Vec<f32> = match v.dtype() {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            d => bail!(
                "tensor {name} in {}: dtype {d:?} cannot be read as f32 (F32, F16, BF16)",
                p.display()
            ),
        };
        Ok((v.shape().to_vec(), out))
    }

    /// `read_f32`, failing unless the shape equals `expected`.
    pub fn read_f32_expect(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let (shape, data) = self.read_f32(name)?;
        if shape != expected {
            let file = self.tensor_info(name)?.file;
            bail!(
                "tensor {name} in {} has shape {shape:?}, expected {expected:?}",
                file.display()
            );
        }
        Ok(data)
    }
}
