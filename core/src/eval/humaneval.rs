//! HumanEval-format problems (task_id, prompt, entry_point, canonical_solution, test).

use anyhow::{bail, Result};
use recode_sandbox::{Job, TestCase};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HumanEvalTask {
    pub task_id: String,
    /// Signature and docstring; a completion continues it.
    pub prompt: String,
    pub entry_point: String,
    /// The body that completes `prompt`.
    pub canonical_solution: String,
    /// Defines `check(candidate)`.
    pub test: String,
    pub source: String,
}

pub fn load(path: &Path) -> Result<Vec<HumanEvalTask>> {
    let mut out = Vec::new();
    for (at, v) in super::jsonl::jsonl_values(path)? {
        let f = |k: &str| match v.get(k) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => bail!("{at}: field `{k}` must be a string"),
            None => bail!("{at}: missing field `{k}` (string)"),
        };
        out.push(HumanEvalTask {
            task_id: f("task_id")?,
            prompt: f("prompt")?,
            entry_point: f("entry_point")?,
            canonical_solution: f("canonical_solution")?,
            test: f("test")?,
            source: at.clone(),
        });
    }
    Ok(out)
}

impl HumanEvalTask {
    /// The program text for a candidate: the prompt followed by the candidate. A body continues
    /// the prompt's function; a whole function (as an <answer> block gives) redefines it, which
    /// is valid too since the prompt's function is complete with only its docstring.
    pub fn candidate_program(&self, candidate: &str) -> String {
        format!("{}{candidate}", self.prompt)
    }

    pub fn job(&self, candidate: &str) -> Job {
        Job {
            setup: String::new(),
            candidate: self.candidate_program(candidate),
            tests: vec![TestCase {
                name: "check".into(),
                code: self.test.clone(),
                call: format!("check({})", self.entry_point),
            }],
        }
    }

    pub fn reference(&self) -> String {
        self.canonical_solution.clone()
    }
}
