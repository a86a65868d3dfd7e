//! The ReCode task: data, prompts and the code a completion contains.

pub mod code;
