//! Evaluation: CodeUpdateArena and HumanEval problems, sandboxed execution, pass@k.
//!
//! Entry points: [`load_problems`], [`Problem::prompt_messages`], [`evaluate`] (candidates
//! already extracted from completions) and [`evaluate_reference`] (the dataset's own solutions).
//!
//! Each candidate of a CodeUpdateArena problem runs as one sandboxed process holding all its unit
//! tests (each test in its own copy of the globals); it passes only if every test passes with
//! the update installed. The same program without the install statement gives the "passes
//! without the update" rate. `cua::CuaExample::programs` gives the per-test standalone programs.

pub mod candidates;
pub mod cua;
pub mod evalenv;
pub mod generate;
pub mod humaneval;
pub mod jsonl;
pub mod packages;
pub mod passk;
pub mod problem;
pub mod prompts;
pub mod pysrc;
pub mod report;
mod run;
pub mod training;
/// The sandbox is its own crate (`sandbox/`); re-exported so `eval::sandbox::..` paths stay.
pub use recode_sandbox as sandbox;
pub mod signature;

pub use generate::{evaluate_policy, GenStats};
pub use jsonl::jsonl_values;
pub use problem::{load_problems, EvalOptions, Problem};
pub use prompts::{PromptVariant, PREFILL};
pub use report::{Candidate, EvalReport, GroupStats, ProblemResult, SampleResult};
pub use run::{evaluate, evaluate_candidates, evaluate_reference, evaluate_streaming};
