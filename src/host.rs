//! The host: the registry of built-in plugins and what validation needs to know about it.

use recode_core::registry::Registry;

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
