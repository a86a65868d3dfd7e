//! Evaluation: CodeUpdateArena and HumanEval problems, sandboxed execution, pass@k.

pub mod sandbox;
pub mod passk;
pub mod pysrc;
