//! The ReCode task: data, prompts and the code a completion contains.

pub mod code;
pub mod data;
pub mod normalize;
pub mod prompt;
pub mod pysyntax;
