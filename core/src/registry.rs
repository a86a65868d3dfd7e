//! One registry for the three plugin kinds. Built-ins register factories by name; specs may
//! instead name a shared library, which `plugin_abi` adapts to the same traits.

use crate::api::{Algorithm, Policy, Reward};
use crate::spec::{BackendSpec, ModelSpec, Options, TrainingSpec};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Model,
    Reward,
    Algorithm,
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginKind::Model => "model",
            PluginKind::Reward => "reward",
            PluginKind::Algorithm => "algorithm",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub kind: PluginKind,
    pub name: String,
    pub version: String,
    /// "built-in" or the library path.
    pub source: String,
    pub description: String,
}

/// What a model factory gets.
pub struct ModelContext<'a> {
    pub spec: &'a ModelSpec,
    pub backend: &'a BackendSpec,
    pub training: &'a TrainingSpec,
    pub seed: u64,
}

pub type RewardFactory = fn(&Options) -> Result<Box<dyn Reward>>;
/// Shared, so a table of algorithms can register one closure per row.
pub type AlgorithmFactory = std::sync::Arc<dyn Fn(&Options) -> Result<Box<dyn Algorithm>> + Send + Sync>;
pub type ModelFactory = fn(&ModelContext<'_>) -> Result<Box<dyn Policy>>;

#[derive(Default)]
pub struct Registry {
    rewards: BTreeMap<String, (RewardFactory, PluginInfo)>,
    algorithms: BTreeMap<String, (AlgorithmFactory, PluginInfo)>,
    models: BTreeMap<String, (ModelFactory, PluginInfo)>,
}

fn builtin(kind: PluginKind, name: &str, description: &str) -> PluginInfo {
    PluginInfo {
        kind,
        name: name.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        source: "built-in".into(),
        description: description.to_string(),
    }
}

impl Registry {
    pub fn add_reward(&mut self, name: &str, description: &str, f: RewardFactory) {
        self.rewards
            .insert(name.into(), (f, builtin(PluginKind::Reward, name, description)));
    }
    pub fn add_algorithm(
        &mut self,
        name: &str,
        description: &str,
        f: impl Fn(&Options) -> Result<Box<dyn Algorithm>> + Send + Sync + 'static,
    ) {
        self.algorithms.insert(
            name.into(),
            (
                std::sync::Arc::new(f),
                builtin(PluginKind::Algorithm, name, description),
            ),
        );
    }
    pub fn add_model(&mut self, name: &str, description: &str, f: ModelFactory) {
        self.models
            .insert(name.into(), (f, builtin(PluginKind::Model, name, description)));
    }

    pub fn reward(&self, name: &str) -> Option<RewardFactory> {
        self.rewards.get(name).map(|(f, _)| *f)
    }
    pub fn algorithm(&self, name: &str) -> Option<AlgorithmFactory> {
        self.algorithms.get(name).map(|(f, _)| f.clone())
    }
    pub fn model(&self, name: &str) -> Option<ModelFactory> {
        self.models.get(name).map(|(f, _)| *f)
    }

    pub fn names(&self, kind: PluginKind) -> Vec<String> {
        match kind {
            PluginKind::Reward => self.rewards.keys().cloned().collect(),
            PluginKind::Algorithm => self.algorithms.keys().cloned().collect(),
            PluginKind::Model => self.models.keys().cloned().collect(),
        }
    }

    /// Every built-in, sorted by kind then name.
    pub fn builtins(&self) -> Vec<PluginInfo> {
        let mut all: Vec<PluginInfo> = self.models.values().map(|(_, i)| i.clone()).collect();
        all.extend(self.rewards.values().map(|(_, i)| i.clone()));
        all.extend(self.algorithms.values().map(|(_, i)| i.clone()));
        all
    }
}

/// Strictly decode a plugin's options table into its config struct (which should use
/// `#[serde(deny_unknown_fields, default)]`), naming the plugin in the error.
pub fn decode_options<T: serde::de::DeserializeOwned>(plugin: &str, options: &Options) -> Result<T> {
    let table: toml::Table = options.clone().into_iter().collect();
    T::deserialize(toml::Value::Table(table))
        .map_err(|e| anyhow::anyhow!("options of plugin `{plugin}`: {}", e.message()))
}
