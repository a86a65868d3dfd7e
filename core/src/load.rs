//! A policy for evaluation, scoring and benchmarks: a model named on the command line (a known id,
//! a `.gguf` file or an HF folder), or a trained run (its spec and newest checkpoint).

use crate::api::Policy;
use crate::registry::{ModelContext, Registry};
use crate::spec::{AdapterKind, AdapterSpec, BackendKind, BackendSpec, ModelSpec, Options, TrainingSpec};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// `cpu`, `wgpu` or `cuda`.
pub fn backend_kind(name: &str) -> Result<BackendKind> {
    toml::Value::String(name.to_string())
        .try_into()
        .map_err(|_| anyhow!("--backend: expected cpu, wgpu or cuda, got `{name}`"))
}

/// The model spec for `model`: a known id unless a file of that name exists; with `adapter`
/// (kind, rank) a fresh adapter with alpha = rank, otherwise none.
pub fn model_spec(model: &str, known_ids: &[&str], adapter: Option<(&str, usize)>) -> Result<ModelSpec> {
    let mut spec = ModelSpec::default();
    if known_ids.contains(&model) && !Path::new(model).exists() {
        spec.id = model.to_string();
    } else {
        spec.path = model.to_string();
    }
    spec.adapter.kind = AdapterKind::None;
    if let Some((kind, rank)) = adapter {
        spec.adapter.kind = toml::Value::String(kind.to_string())
            .try_into()
            .map_err(|_| anyhow!("unknown adapter kind `{kind}`"))?;
        spec.adapter.rank = rank;
        spec.adapter.alpha = rank as f64;
    }
    Ok(spec)
}

/// A model by name on `backend`, with default training settings (for inference and benchmarks);
/// `options` is the model plugin's `[model.options]` table.
pub fn policy_for_model(
    reg: &Registry,
    known_ids: &[&str],
    model: &str,
    backend: &str,
    adapter: Option<(&str, usize)>,
    options: &Options,
) -> Result<Box<dyn Policy>> {
    let mut spec = model_spec(model, known_ids, adapter)?;
    spec.options = options.clone();
    policy_for_spec(reg, spec, backend)
}

fn policy_for_spec(reg: &Registry, spec: ModelSpec, backend: &str) -> Result<Box<dyn Policy>> {
    let backend = BackendSpec {
        kind: backend_kind(backend)?,
        ..BackendSpec::default()
    };
    crate::plugins::policy(
        reg,
        &ModelContext {
            spec: &spec,
            backend: &backend,
            training: &TrainingSpec::default(),
            seed: 0,
        },
    )
}

/// The policy of a run directory: its resolved spec, with the newest checkpoint loaded;
/// `backend` (cpu, wgpu, cuda) replaces the run's own backend kind.
pub fn policy_from_run(
    reg: &Registry,
    run: &Path,
    backend: Option<&str>,
    report: &dyn Fn(&str),
) -> Result<Box<dyn Policy>> {
    let spec_path = run.join("spec.toml");
    let loaded = crate::config::load(&spec_path, &Default::default())?;
    let spec = &loaded.spec;
    let mut backend_spec = spec.backend.clone();
    if let Some(b) = backend {
        backend_spec.kind = backend_kind(b)?;
    }
    let ctx = ModelContext {
        spec: &spec.model,
        backend: &backend_spec,
        training: &spec.training,
        seed: spec.run.seed,
    };
    let mut policy = crate::plugins::policy(reg, &ctx).with_context(|| format!("model of {}", spec_path.display()))?;
    let (step, ckpt) =
        crate::rundir::latest_checkpoint(run)?.ok_or_else(|| anyhow!("{} has no checkpoint", run.display()))?;
    policy.load(&ckpt.join("policy"))?;
    report(&format!("loaded {} (step {step})", ckpt.display()));
    Ok(policy)
}

/// The folder that holds the adapter weights named by `path`, which may be a PEFT folder
/// (`adapter_model.safetensors`), a checkpoint's `policy` folder, a checkpoint folder, or a run
/// directory (its newest checkpoint). The one resolution behind `recode eval --adapter` and
/// `[model.adapter] init`.
pub fn adapter_weights_dir(path: &Path) -> Result<PathBuf> {
    let has = |d: &Path, f: &str| d.join(f).is_file();
    if has(path, "adapter_model.safetensors") || has(path, "trainable.safetensors") {
        return Ok(path.to_path_buf());
    }
    if has(&path.join("policy"), "trainable.safetensors") {
        return Ok(path.join("policy"));
    }
    if let Some((_, ckpt)) = crate::rundir::latest_checkpoint(path).ok().flatten() {
        return Ok(ckpt.join("policy"));
    }
    if has(&path.join("adapter"), "adapter_model.safetensors") {
        return Ok(path.join("adapter"));
    }
    bail!(
        "{}: not an adapter: expected a PEFT folder (adapter_model.safetensors), a checkpoint (policy/trainable.safetensors) \
         or a run directory with a checkpoint",
        path.display()
    )
}

/// The adapter settings recorded in a PEFT folder's `adapter_config.json` (DoRA when `use_dora`).
pub fn peft_adapter_spec(dir: &Path) -> Result<AdapterSpec> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let field = |k: &str| v.get(k).ok_or_else(|| anyhow!("{}: no `{k}`", path.display()));
    let rank = field("r")?
        .as_u64()
        .ok_or_else(|| anyhow!("{}: `r` is not a count", path.display()))? as usize;
    let alpha = field("lora_alpha")?
        .as_f64()
        .ok_or_else(|| anyhow!("{}: `lora_alpha` is not a number", path.display()))?;
    let target_modules = match field("target_modules")? {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        other => bail!(
            "{}: `target_modules` should be a list of names, got {other}",
            path.display()
        ),
    };
    let dora = v.get("use_dora").and_then(|x| x.as_bool()).unwrap_or(false);
    Ok(AdapterSpec {
        kind: if dora { AdapterKind::Dora } else { AdapterKind::Lora },
        rank,
        alpha,
        dropout: 0.0,
        target_modules,
        ..AdapterSpec::default()
    })
}

/// A model by name with a trained adapter: a PEFT folder (its `adapter_config.json` gives kind,
/// rank, alpha and targets) or a checkpoint / run directory of a run (the run's spec gives them).
/// Without `options`, the model options of the run the adapter came from (a `spec.toml` beside the
/// adapter or in a folder above it, as in a run directory) are used, so that the adapter is
/// evaluated as its run computed (e.g. `attention = "plain"`).
pub fn policy_with_adapter(
    reg: &Registry,
    known_ids: &[&str],
    model: &str,
    backend: &str,
    adapter: &Path,
    options: &Options,
) -> Result<Box<dyn Policy>> {
    let weights = adapter_weights_dir(adapter)?;
    let mut spec = model_spec(model, known_ids, None)?;
    spec.options = options.clone();
    // The run the adapter came from: a spec.toml beside the weights or up to three folders above
    // (`<run>/checkpoints/<step>/policy`, `<run>/adapter`).
    let run = match weights.ancestors().take(4).find(|d| d.join("spec.toml").is_file()) {
        Some(dir) => Some(crate::config::load(&dir.join("spec.toml"), &Default::default())?.spec),
        None => None,
    };
    if options.is_empty() {
        if let Some(run) = &run {
            spec.options = run.model.options.clone();
        }
    }
    spec.adapter = if weights.join("adapter_config.json").is_file() {
        peft_adapter_spec(&weights)?
    } else {
        let run = run.ok_or_else(|| {
            anyhow!(
                "{}: no adapter_config.json and no run spec beside or above it",
                weights.display()
            )
        })?;
        AdapterSpec {
            init: String::new(),
            ..run.model.adapter
        }
    };
    let mut policy = policy_for_spec(reg, spec, backend)?;
    policy
        .load_adapter(&weights)
        .with_context(|| format!("loading the adapter {}", adapter.display()))?;
    Ok(policy)
}
