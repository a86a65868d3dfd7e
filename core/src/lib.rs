//! ReCode-rs runner library.
//!
//! `api` holds the three plugin contracts (model, reward, algorithm); everything else in the
//! project is written against them. The crate has no tensor library on purpose: model plugins
//! bring burn, so specs, rewards, algorithms and evaluation build and test in seconds.

pub mod algo;
pub mod api;
pub mod chat;
pub mod config;
pub mod eval;
pub mod load;
pub mod plugin_abi;
pub mod plugins;
pub mod progress;
pub mod pystr;
pub mod registry;
pub mod resume;
pub mod reward_py;
pub mod rundir;
pub mod spec;
pub mod sweep;
pub mod task;
pub mod tb;
pub mod train;
pub mod trainer;
pub mod validate;

/// For plugins' `export_model_plugin!` expansion.
pub use anyhow;
