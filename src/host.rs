//! The host: the registry of built-in plugins and what validation needs to know about it.

use recode_core::registry::Registry;

pub fn registry() -> Registry {
    let mut reg = Registry::default();
    recode_reward::register(&mut reg);
    recode_algorithms::register(&mut reg);
    recode_model::register(&mut reg);
    reg
}

pub fn known_model_ids() -> Vec<&'static str> {
    recode_model_formats::fetch::known_models().iter().map(|m| m.id).collect()
}
