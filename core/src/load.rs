//! A policy for evaluation, scoring and benchmarks: a model named on the command line (a known id,
//! a `.gguf` file or an HF folder), or a trained run (its spec and newest checkpoint).

use crate::api::Policy;
use crate::registry::{ModelContext, Registry};
use crate::spec::{AdapterKind, BackendKind, BackendSpec, ModelSpec, Options, TrainingSpec};
use anyhow::{anyhow, Context, Result};
use std::path::Path;

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
