//! burn, re-exported from one shared library. Depend on it under the name `burn`
//! (`burn = { package = "recode-burn", ... }`) and write `burn::...` as usual.
//! One addition of ours: `burn::global_norm::clip`.

pub use burn::*;

pub mod global_norm;
