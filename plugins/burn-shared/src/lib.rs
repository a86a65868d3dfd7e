//! burn, re-exported from one shared library. Depend on it under the name `burn`
//! (`burn = { package = "recode-burn", ... }`) and write `burn::...` as usual.

pub use burn::*;
