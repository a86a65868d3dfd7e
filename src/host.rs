//! The host: the registry of built-in plugins and what validation needs to know about it.

use recode_core::registry::Registry;
use recode_core::validate::HostInfo;

pub fn registry() -> Registry {
    let mut reg = Registry::default();
    recode_reward::register(&mut reg);
    recode_algorithms::register(&mut reg);
    recode_model::register(&mut reg);
    reg
}

/// The registry and the fetchable model ids, owned; `info` lends them to the library's checks.
pub struct Host {
    pub registry: Registry,
    pub known_model_ids: Vec<&'static str>,
}

impl Host {
    pub fn new() -> Self {
        Self {
            registry: registry(),
            known_model_ids: known_model_ids(),
        }
    }
    /// `complete = false` checks a fragment: what it sets must be valid, but it may leave out
    /// what a run requires.
    pub fn info(&self, complete: bool) -> HostInfo<'_> {
        HostInfo {
            registry: &self.registry,
            known_model_ids: &self.known_model_ids,
            complete,
        }
    }
}

pub fn known_model_ids() -> Vec<&'static str> {
    recode_model_formats::fetch::known_models()
        .iter()
        .map(|m| m.id)
        .collect()
}
