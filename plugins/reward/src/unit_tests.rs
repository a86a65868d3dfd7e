//! `unit_tests`: the execution reward. For a data row with a `tests` column (a list of Python test
//! snippets, or one test program), the answer's program (the first python block in `<answer>`,
//! else the first python block, else the whole text: as evaluation extracts it) runs with each
//! test in the evaluation sandbox, and the score is the fraction of tests passed (or 1/0 with
//! `all_or_nothing`). A program that hits a sandbox limit scores 0. A row without tests: `None`
//! (does not apply). Model-written code is
//! hostile: it runs only in the sandbox, whose limits (wall time per test, memory, tasks, output)
//! turn every attack into a failed test, never a crashed or hung run.

use anyhow::{bail, Context, Result};
use recode_core::api::{Reward, RewardInput, RewardOutput};
use recode_core::eval::sandbox::{Job, Outcome, Sandbox, SandboxConfig, TestCase};
use recode_core::registry::decode_options;
use recode_core::spec::Options;
use serde::Deserialize;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnitTestsOptions {
    /// The data column with the tests.
    pub column: String,
    /// 1 when every test passes, else 0 (default: the fraction passed).
    pub all_or_nothing: bool,
    /// Wall time of one test, seconds (`[eval] timeout_s`'s default).
    pub timeout_s: f64,
    /// Memory of a program and its tests, MiB (`[eval] memory_mb`'s default).
    pub memory_mb: u64,
    /// Programs run at once.
    pub workers: usize,
    /// The interpreter the programs run with.
    pub python: String,
}

impl Default for UnitTestsOptions {
    fn default() -> Self {
        Self {
            column: "tests".into(),
            all_or_nothing: false,
            timeout_s: 10.0,
            memory_mb: 2048,
            workers: 2,
            python: "python3".into(),
        }
    }
}

pub struct UnitTests {
    opts: UnitTestsOptions,
    sandbox: Sandbox,
}

pub fn unit_tests_factory(o: &Options) -> Result<Box<dyn Reward>> {
    let opts: UnitTestsOptions = decode_options("unit_tests", o)?;
    if !(opts.timeout_s > 0.0 && opts.timeout_s.is_finite()) || opts.workers == 0 || opts.memory_mb == 0 {
        bail!("options of plugin `unit_tests`: timeout_s, memory_mb and workers must be > 0");
    }
    let sandbox = Sandbox::new(SandboxConfig {
        python: opts.python.clone().into(),
        timeout: Duration::from_secs_f64(opts.timeout_s),
        memory_mb: opts.memory_mb,
        ..SandboxConfig::default()
    })
    .context("unit_tests: the evaluation sandbox cannot run here (it needs root or user namespaces)")?;
    Ok(Box::new(UnitTests { opts, sandbox }))
}

/// The tests of a row: a list of snippets (one test each) or one program (one test).
fn tests_of(value: &Value) -> Result<Vec<TestCase>> {
    let case = |i: usize, code: &str| TestCase {
        name: format!("test_{i}"),
        code: code.to_string(),
        call: String::new(),
    };
    match value {
        Value::String(program) => Ok(vec![case(0, program)]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, t)| match t {
                Value::String(s) => Ok(case(i, s)),
                other => bail!("test {i} is not a string of Python code: {other}"),
            })
            .collect(),
        other => bail!("expected a list of Python test snippets or one test program, got {other}"),
    }
}

/// The program a completion proposes, as evaluation extracts it.
fn program_of(completion: &str) -> String {
    recode_core::task::code::answer_python_block(completion)
        .or_else(|| recode_core::task::code::first_python_block(completion))
        .unwrap_or(completion)
        .to_string()
}

impl UnitTests {
    fn score_one(&self, tests: &[TestCase], completion: &str) -> f64 {
        let job = Job {
            setup: String::new(),
            candidate: program_of(completion),
            tests: tests.to_vec(),
        };
        let r = self.sandbox.run(&job);
        // Tests that ran and failed count as failed; a program that hit a sandbox limit (time,
        // memory, output, processes, a signal) or ended the harness early scores 0, whatever
        // its tests said before that.
        let passed = match &r.outcome {
            Outcome::Passed => tests.len(),
            Outcome::Failed { .. } => r.tests.iter().filter(|t| t.ok).count(),
            _ => 0,
        };
        if self.opts.all_or_nothing {
            f64::from(passed == tests.len())
        } else {
            passed as f64 / tests.len() as f64
        }
    }
}

impl Reward for UnitTests {
    fn name(&self) -> &str {
        "unit_tests"
    }

    fn score(&self, batch: &[RewardInput<'_>]) -> Result<Vec<f64>> {
        let out = self.score_items(batch)?;
        out.scores
            .iter()
            .enumerate()
            .map(|(i, s)| s.with_context(|| format!("unit_tests: item {i} has no `{}` column", self.opts.column)))
            .collect()
    }

    fn score_items(&self, batch: &[RewardInput<'_>]) -> Result<RewardOutput> {
        let col = &self.opts.column;
        let tests: Vec<Option<Vec<TestCase>>> = batch
            .iter()
            .enumerate()
            .map(
                |(i, b)| match b.columns.and_then(|c| c.get(col)).filter(|v| !v.is_null()) {
                    None => Ok(None),
                    Some(v) => tests_of(v)
                        .map(Some)
                        .with_context(|| format!("unit_tests: item {i}, column `{col}`")),
                },
            )
            .collect::<Result<_>>()?;
        let scores = Mutex::new(vec![None; batch.len()]);
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..self.opts.workers.min(batch.len()).max(1) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = batch.get(i) else { break };
                    if let Some(t) = tests[i].as_deref().filter(|t| !t.is_empty()) {
                        let score = self.score_one(t, b.completion);
                        scores.lock().unwrap()[i] = Some(score);
                    }
                });
            }
        });
        Ok(RewardOutput {
            scores: scores.into_inner().unwrap(),
            metrics: vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_column_shapes() {
        assert_eq!(tests_of(&Value::String("assert f() == 1".into())).unwrap().len(), 1);
        let two = serde_json::json!(["assert f() == 1", "assert f() != 2"]);
        assert_eq!(tests_of(&two).unwrap()[1].code, "assert f() != 2");
        assert!(tests_of(&serde_json::json!([1])).is_err());
        assert!(tests_of(&serde_json::json!({"a": 1})).is_err());
        assert_eq!(program_of("<answer>\n```python\nx = 1\n```\n</answer>"), "x = 1");
        assert_eq!(program_of("def f(): pass"), "def f(): pass");
    }
}
