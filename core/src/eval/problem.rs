//! A benchmark problem (CodeUpdateArena or HumanEval), loading them, and the evaluation options.

use super::prompts::{self, PromptVariant};
use super::{cua, humaneval, pysrc};
use crate::api::ChatMessage;
use crate::spec::EvalSpec;
use anyhow::{bail, Result};
use recode_sandbox::{Job, SandboxConfig};
use std::path::Path;
use std::time::Duration;

/// One benchmark problem.
#[derive(Debug, Clone)]
pub enum Problem {
    Cua(cua::CuaExample),
    HumanEval(humaneval::HumanEvalTask),
}

impl Problem {
    pub fn id(&self) -> &str {
        match self {
            Problem::Cua(e) => &e.prog_syn_id,
            Problem::HumanEval(t) => &t.task_id,
        }
    }

    /// Package of the updated API ("humaneval" for HumanEval).
    pub fn package(&self) -> &str {
        match self {
            Problem::Cua(e) => &e.update.package,
            Problem::HumanEval(_) => "humaneval",
        }
    }

    /// CodeUpdateArena update type ("-" for HumanEval).
    pub fn update_type(&self) -> &str {
        match self {
            Problem::Cua(e) => &e.update.update_type,
            Problem::HumanEval(_) => "-",
        }
    }

    /// System and user messages for generation (HumanEval ignores the variant).
    pub fn prompt_messages(&self, variant: PromptVariant) -> Vec<ChatMessage> {
        match self {
            Problem::Cua(e) => prompts::cua_messages(e, variant),
            Problem::HumanEval(t) => prompts::humaneval_messages(t),
        }
    }

    /// The dataset's own solution, in the form `evaluate` expects for candidates.
    pub fn reference_solution(&self) -> String {
        match self {
            Problem::Cua(e) => e.ref_solution.clone(),
            Problem::HumanEval(t) => t.reference(),
        }
    }

    /// Whether the problem has an API update (and so a "without the update" run).
    pub fn has_update(&self) -> bool {
        matches!(self, Problem::Cua(_))
    }

    /// The program checking `candidate` (all unit tests in one process); `signature_imports`
    /// imports the names of the solution signature first (CodeUpdateArena only).
    pub fn job(&self, candidate: &str, with_update: bool, signature_imports: bool) -> Result<Job> {
        match self {
            Problem::Cua(e) => e.job(candidate, with_update, signature_imports),
            Problem::HumanEval(t) => Ok(t.job(candidate)),
        }
    }

    /// Top-level modules the dataset's own code imports.
    pub fn required_modules(&self) -> Vec<String> {
        match self {
            Problem::Cua(e) => pysrc::imported_modules(&e.dataset_code()),
            Problem::HumanEval(t) => pysrc::imported_modules(&format!("{}\n{}", t.prompt, t.test)),
        }
    }
}

/// Loads "cua" (either CodeUpdateArena release) or "humaneval" problems.
pub fn load_problems(benchmark: &str, path: &Path) -> Result<Vec<Problem>> {
    Ok(match benchmark {
        "cua" => cua::load(path)?.into_iter().map(Problem::Cua).collect(),
        "humaneval" => humaneval::load(path)?.into_iter().map(Problem::HumanEval).collect(),
        _ => bail!("unknown benchmark {benchmark:?} (expected \"cua\" or \"humaneval\")"),
    })
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The k of pass@k; k larger than the samples of a problem is skipped for it.
    pub k: Vec<usize>,
    /// Programs run at once.
    pub workers: usize,
    pub sandbox: SandboxConfig,
    /// Also run every candidate without the update installed (doubles the work).
    pub without_update: bool,
    /// Benchmark name, for the report.
    pub benchmark: String,
    /// Import the names the solution signature uses (`List`, `Tuple`, ...) in the setup.
    pub signature_imports: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            k: vec![1],
            workers: 2,
            sandbox: SandboxConfig::default(),
            without_update: true,
            benchmark: "cua".into(),
            signature_imports: true,
        }
    }
}

impl EvalOptions {
    pub fn from_spec(spec: &EvalSpec) -> Self {
        Self {
            k: spec.k.clone(),
            workers: spec.workers.max(1),
            sandbox: SandboxConfig {
                // Per unit test: a program with T tests gets T x timeout_s (see SandboxConfig).
                timeout: Duration::from_secs_f64(spec.timeout_s.max(0.1)),
                memory_mb: spec.memory_mb,
                unsafe_no_sandbox: spec.unsafe_no_sandbox,
                ..SandboxConfig::default()
            },
            without_update: true,
            benchmark: spec.benchmark.clone(),
            signature_imports: spec.signature_imports,
        }
    }
}
