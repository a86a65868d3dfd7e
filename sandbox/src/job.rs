//! What a sandboxed program is asked to do, and how its exit is judged.

use serde::{Deserialize, Serialize};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

/// One unit test: `code` defines it (plus any shared helpers), `call` runs it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TestCase {
    pub name: String,
    pub code: String,
    pub call: String,
}

impl TestCase {
    pub(crate) fn trivial() -> Self {
        Self {
            name: "probe".into(),
            code: String::new(),
            call: "pass".into(),
        }
    }
}

/// A program in three parts: `setup` (e.g. installing an API update, trusted), then the
/// `candidate`, then each test. The driver runs setup and tests in its own (trusted) process and
/// the candidate in a fresh child process per test (see driver.py).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Job {
    pub setup: String,
    pub candidate: String,
    pub tests: Vec<TestCase>,
}

impl Job {
    /// The driver's stdin: the byte length of the job's JSON, a newline, the JSON, then the
    /// nonce, which the driver reads only after every candidate process is gone.
    /// `memory_bytes`: address space the candidate may add to what the setup mapped;
    /// `test_timeout`: wall time of one test, after which its candidate process is killed.
    pub(crate) fn payload(
        &self,
        nonce: &str,
        block_network: bool,
        memory_bytes: u64,
        test_timeout: Duration,
    ) -> String {
        let json = serde_json::json!({
            "block_network": block_network, "memory_bytes": memory_bytes,
            "test_timeout_s": test_timeout.as_secs_f64(),
            "setup": self.setup, "candidate": self.candidate, "tests": self.tests,
        })
        .to_string();
        format!("{}\n{json}{nonce}\n", json.len())
    }

    /// The same program as one standalone script (for reports and reproduction).
    pub fn to_script(&self) -> String {
        let mut s = format!("{}\n\n{}\n", self.setup, self.candidate);
        for t in &self.tests {
            s.push_str(&format!("\n{}\n{}\n", t.code, t.call));
        }
        s
    }
}

/// How one program ended. Everything but `Passed` is a failure of the candidate, except
/// `Environment` (missing package) and `SandboxError` (harness problem), which are not counted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    /// A test, the candidate or the setup raised; `reason` is the exception tail.
    Failed {
        reason: String,
    },
    /// Wall-time or CPU-time limit.
    Timeout {
        cpu: bool,
    },
    /// MemoryError under the address-space limit.
    Memory,
    Signal {
        signal: i32,
    },
    OutputLimit {
        bytes: usize,
    },
    /// Exited without the completion marker (e.g. `os._exit(0)` before the tests ran).
    Incomplete {
        exit_code: Option<i32>,
    },
    /// A package the problem needs is not installed.
    Environment {
        detail: String,
    },
    SandboxError {
        message: String,
    },
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }

    /// Counted in pass@k (a model failure or success), as opposed to a setup problem.
    pub fn counts(&self) -> bool {
        !matches!(self, Outcome::Environment { .. } | Outcome::SandboxError { .. })
    }

    /// Short name for tallies.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed { .. } => "failed",
            Outcome::Timeout { .. } => "timeout",
            Outcome::Memory => "memory",
            Outcome::Signal { .. } => "signal",
            Outcome::OutputLimit { .. } => "output_limit",
            Outcome::Incomplete { .. } => "incomplete",
            Outcome::Environment { .. } => "environment",
            Outcome::SandboxError { .. } => "sandbox_error",
        }
    }
}

/// One test as the driver's trusted process observed it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestResult {
    pub name: String,
    pub ok: bool,
    pub error: Option<String>,
    /// Wall time of the test, its candidate process's start included.
    #[serde(default)]
    pub wall_s: f64,
    /// CPU time of the test's candidate process (user + system).
    #[serde(default)]
    pub cpu_s: f64,
    /// Killed at the per-test wall-time limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timeout: bool,
    /// The candidate process ended on its own during the test: its exit code or signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub outcome: Outcome,
    pub tests: Vec<TestResult>,
    /// Up to the output cap of what the program wrote (its stdout is redirected here).
    pub stderr: String,
    pub wall_s: f64,
}

impl RunResult {
    pub(crate) fn error(message: String) -> Self {
        Self {
            outcome: Outcome::SandboxError { message },
            tests: vec![],
            stderr: String::new(),
            wall_s: 0.0,
        }
    }
}

#[derive(Deserialize)]
struct Report {
    done: String,
    setup_error: Option<String>,
    candidate_error: Option<String>,
    memory: bool,
    tests: Vec<TestResult>,
}

pub(crate) fn classify(
    job: &Job,
    nonce: &str,
    status: ExitStatus,
    timed_out: bool,
    out: Option<(Vec<u8>, usize)>,
    err: Option<(Vec<u8>, usize)>,
    cap: usize,
) -> RunResult {
    let (out, out_total) = out.unwrap_or_default();
    let (err, err_total) = err.unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err).into_owned();
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let report = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Report>(l).ok())
        .find(|r| r.done == nonce);
    // The driver's trusted process writes exactly one line there, after every candidate process
    // is gone: anything else on it was written by someone else (a forger that reached the pipe).
    let foreign = lines.len().saturating_sub(1);
    let tests = report.as_ref().map(|r| r.tests.clone()).unwrap_or_default();
    let outcome = if timed_out {
        Outcome::Timeout { cpu: false }
    } else if out_total > cap || err_total > cap {
        Outcome::OutputLimit {
            bytes: out_total.max(err_total),
        }
    } else if status.signal() == Some(libc::SIGXCPU) {
        Outcome::Timeout { cpu: true }
    } else if let Some(sig) = status.signal() {
        Outcome::Signal { signal: sig }
    } else if report.is_some() && foreign > 0 {
        Outcome::Failed {
            reason: format!("the result channel carried {foreign} line(s) besides the driver's report"),
        }
    } else if let Some(r) = report {
        judge(job, r, status.code())
    } else if stderr.contains("MemoryError") {
        Outcome::Memory
    } else {
        Outcome::Incomplete {
            exit_code: status.code(),
        }
    };
    RunResult {
        outcome,
        tests,
        stderr,
        wall_s: 0.0,
    }
}

fn judge(job: &Job, r: Report, code: Option<i32>) -> Outcome {
    if r.memory {
        return Outcome::Memory;
    }
    if let Some(e) = r.setup_error {
        return if e.starts_with("ModuleNotFoundError") || e.starts_with("ImportError") {
            Outcome::Environment { detail: e }
        } else {
            Outcome::Failed {
                reason: format!("setup: {e}"),
            }
        };
    }
    if let Some(e) = r.candidate_error {
        return Outcome::Failed {
            reason: format!("candidate: {e}"),
        };
    }
    if let Some(t) = r.tests.iter().find(|t| !t.ok) {
        return match (t.timeout, t.signal, t.exit_code) {
            (true, _, _) => Outcome::Timeout { cpu: false },
            (_, Some(libc::SIGXCPU), _) => Outcome::Timeout { cpu: true },
            (_, Some(signal), _) => Outcome::Signal { signal },
            (_, _, Some(code)) => Outcome::Incomplete { exit_code: Some(code) },
            _ => Outcome::Failed {
                reason: format!("{}: {}", t.name, t.error.clone().unwrap_or_default()),
            },
        };
    }
    if r.tests.len() != job.tests.len() || job.tests.is_empty() {
        return Outcome::Failed {
            reason: format!("ran {} of {} tests", r.tests.len(), job.tests.len()),
        };
    }
    if code != Some(0) {
        return Outcome::Incomplete { exit_code: code };
    }
    Outcome::Passed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(out: &str) -> Outcome {
        let job = Job {
            tests: vec![TestCase::trivial()],
            ..Default::default()
        };
        let status = ExitStatus::from_raw(0);
        classify(
            &job,
            "n0",
            status,
            false,
            Some((out.as_bytes().to_vec(), out.len())),
            None,
            1 << 20,
        )
        .outcome
    }

    #[test]
    fn only_a_lone_report_with_the_nonce_counts() {
        let report = r#"{"done": "n0", "setup_error": null, "candidate_error": null, "memory": false, "tests": [{"name": "probe", "ok": true, "error": null, "wall_s": 0.1, "cpu_s": 0.05}]}"#;
        assert_eq!(run(&format!("{report}\n")), Outcome::Passed);
        // A second line (a forged report, or garbage glued before the real one) fails the job.
        assert!(matches!(run(&format!("{report}\n{report}\n")), Outcome::Failed { .. }));
        assert!(matches!(
            run(&format!("{{\"x\": {report}\n{report}\n")),
            Outcome::Failed { .. }
        ));
        assert!(matches!(run(&report.replace("n0", "n1")), Outcome::Incomplete { .. }));
    }
}
