//! The host: the registry of built-in plugins and what validation needs to know about it.

use anyhow::{bail, Result};
use recode_core::api::Policy;
use recode_core::plugin_abi;
use recode_core::registry::{ModelContext, PluginKind, Registry};
use std::path::Path;

pub fn registry() -> Registry {
    let mut reg = Registry::default();
    recode_reward::register(&mut reg);
    recode_algo_grpo::register(&mut reg);
    recode_algo_dapo::register(&mut reg);
    recode_algo_drgrpo::register(&mut reg);
    recode_algo_grpo::gspo::register(&mut reg);
    recode_algo_grpo::cispo::register(&mut reg);
    recode_algo_grpo::verl_estimators::register(&mut reg);
    recode_model::register(&mut reg);
    reg
}

pub fn known_model_ids() -> Vec<&'static str> {
    recode_model_formats::fetch::known_models().iter().map(|m| m.id).collect()
}

/// The policy a spec's `[model]` names: a built-in plugin, or a Rust model plugin library loaded
/// from the path in `model.plugin` (fingerprint-checked; see `plugin_abi::load_model_plugin`).
pub fn build_policy(reg: &Registry, ctx: &ModelContext<'_>) -> Result<Box<dyn Policy>> {
    let name = &ctx.spec.plugin;
    match reg.model(name) {
        Some(factory) => plugin_abi::create_policy(&format!("`{name}`"), factory, ctx),
        None => {
            let path = Path::new(name);
            if !path.exists() {
                bail!("model.plugin `{name}`: not a built-in model plugin ({}) and no such file", reg.names(PluginKind::Model).join(", "));
            }
            let (factory, info) = plugin_abi::load_model_plugin(path)?;
            eprintln!("model plugin `{}` {} from {}", info.name, info.version, path.display());
            plugin_abi::create_policy(&format!("`{}` ({})", info.name, path.display()), factory, ctx)
        }
    }
}
