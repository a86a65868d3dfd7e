//! Turning a spec's plugin references (built-in names or library paths) into plugin objects.

use crate::api::{Algorithm, Policy, Reward};
use crate::plugin_abi;
use crate::registry::{ModelContext, PluginKind, Registry};
use crate::spec::{Options, RewardSpec, Spec};
use crate::trainer::WeightedReward;
use anyhow::{anyhow, Context, Result};
use std::path::Path;

/// A name that is not a built-in and looks like a file is a plugin library path.
pub fn is_library_path(name: &str) -> bool {
    name.contains('/') || name.ends_with(".so") || name.ends_with(".dylib") || name.ends_with(".dll")
}

pub fn reward(reg: &Registry, name: &str, options: &Options) -> Result<Box<dyn Reward>> {
    if let Some(factory) = reg.reward(name) {
        return factory(options).with_context(|| format!("reward `{name}`"));
    }
    if is_library_path(name) {
        return plugin_abi::load_reward(Path::new(name), options);
    }
    Err(anyhow!(
        "unknown reward `{name}`; built-ins: {}",
        reg.names(PluginKind::Reward).join(", ")
    ))
}

pub fn algorithm(reg: &Registry, name: &str, options: &Options) -> Result<Box<dyn Algorithm>> {
    if let Some(factory) = reg.algorithm(name) {
        return factory(options).with_context(|| format!("algorithm `{name}`"));
    }
    if is_library_path(name) {
        return plugin_abi::load_algorithm(Path::new(name), options);
    }
    Err(anyhow!(
        "unknown algorithm `{name}`; built-ins: {}",
        reg.names(PluginKind::Algorithm).join(", ")
    ))
}

pub fn weighted_rewards(reg: &Registry, specs: &[RewardSpec]) -> Result<Vec<WeightedReward>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if r.is_python() {
                let reward = python_reward(r).with_context(|| format!("[[reward]] #{}", i + 1))?;
                let label = if r.label.is_empty() {
                    reward.name().to_string()
                } else {
                    r.label.clone()
                };
                return Ok(WeightedReward {
                    label,
                    weight: r.weight,
                    reward: Box::new(reward),
                });
            }
            let label = if r.label.is_empty() {
                default_label(&r.name)
            } else {
                r.label.clone()
            };
            let reward =
                reward(reg, &r.name, &r.options).with_context(|| format!("[[reward]] #{} (`{}`)", i + 1, r.name))?;
            Ok(WeightedReward {
                label,
                weight: r.weight,
                reward,
            })
        })
        .collect()
}

/// A Python reward plugin (`python` or `module`), its worker started and its function checked.
pub fn python_reward(r: &RewardSpec) -> Result<crate::reward_py::PythonReward> {
    if !r.name.is_empty() {
        anyhow::bail!("set either `name` (a built-in or a C plugin) or `python`/`module` (a Python reward), not both");
    }
    let function = match (r.function.as_str(), r.style.as_str()) {
        ("", "verl") => "compute_score".to_string(),
        ("", _) => "reward".to_string(),
        (f, _) => f.to_string(),
    };
    let options = match serde_json::to_value(&r.options)? {
        serde_json::Value::Object(m) => m,
        _ => Default::default(),
    };
    crate::reward_py::PythonReward::start(crate::reward_py::PythonRewardConfig {
        path: r.python.clone(),
        module: r.module.clone(),
        function,
        style: r.style.clone(),
        completions_as: r.completions_as.clone(),
        python_exe: r.python_exe.clone(),
        timeout_s: r.timeout_s,
        options,
    })
}

/// A library path is logged under its file stem (`libmy_reward.so` → `my_reward`).
fn default_label(name: &str) -> String {
    if is_library_path(name) {
        let stem = Path::new(name).file_stem().and_then(|s| s.to_str()).unwrap_or(name);
        stem.strip_prefix("lib").unwrap_or(stem).to_string()
    } else {
        name.to_string()
    }
}

/// The spec's algorithm. Registered algorithms (the built-in table, whose every row takes
/// `max_completion_length`) get `max_completion_length = generation.max_new_tokens` unless the
/// spec sets it; library plugins get their options as written.
pub fn spec_algorithm(reg: &Registry, spec: &Spec) -> Result<Box<dyn Algorithm>> {
    let mut options = spec.algorithm.options.clone();
    if reg.algorithm(&spec.algorithm.name).is_some() {
        options
            .entry("max_completion_length".into())
            .or_insert(toml::Value::Integer(spec.generation.max_new_tokens as i64));
    }
    algorithm(reg, &spec.algorithm.name, &options).context("[algorithm]")
}

/// The rewards and the algorithm of a spec, built (so their options are checked) once, then
/// handed to the run.
pub struct Plugins {
    pub rewards: Vec<WeightedReward>,
    pub algorithm: Box<dyn Algorithm>,
}

/// Instantiate every reward and the algorithm a spec names.
pub fn plugins(reg: &Registry, spec: &Spec) -> Result<Plugins> {
    Ok(Plugins {
        rewards: weighted_rewards(reg, &spec.reward)?,
        algorithm: spec_algorithm(reg, spec)?,
    })
}

/// The policy a spec's `[model]` names: a built-in plugin, or a Rust model plugin library loaded
/// from the path in `model.plugin` (fingerprint-checked; see `plugin_abi::load_model_plugin`).
/// One builder for training, evaluation and scoring.
pub fn policy(reg: &Registry, ctx: &ModelContext<'_>) -> Result<Box<dyn Policy>> {
    let name = &ctx.spec.plugin;
    match reg.model(name) {
        Some(factory) => plugin_abi::create_policy(&format!("`{name}`"), factory, ctx),
        None => {
            let path = Path::new(name);
            if !path.exists() {
                anyhow::bail!(
                    "model.plugin `{name}`: not a built-in model plugin ({}) and no such file",
                    reg.names(PluginKind::Model).join(", ")
                );
            }
            let (factory, info) = plugin_abi::load_model_plugin(path)?;
            eprintln!("model plugin `{}` {} from {}", info.name, info.version, path.display());
            plugin_abi::create_policy(&format!("`{}` ({})", info.name, path.display()), factory, ctx)
        }
    }
}
