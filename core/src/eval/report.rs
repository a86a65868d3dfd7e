//! Evaluation results: per sample, per problem, aggregated, as JSON or a Markdown table.

use super::packages::PythonEnv;
use super::passk::{mean_pass_at_k, pass_at_k};
use recode_sandbox::{Isolation, Outcome};
use serde::Serialize;
use std::collections::BTreeMap;

/// One sample to evaluate: what the model wrote, and the program taken from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The raw completion (None when only a program was given, e.g. a reference solution).
    pub completion: Option<String>,
    pub program: String,
}

impl Candidate {
    /// The program a completion proposes: the first python block in `<answer>`, else the first
    /// python block anywhere, else the whole text (HumanEval-style completions are bare code).
    pub fn from_completion(completion: &str) -> Self {
        let program = crate::task::code::answer_python_block(completion)
            .or_else(|| crate::task::code::first_python_block(completion))
            .unwrap_or(completion)
            .to_string();
        Self {
            completion: Some(completion.to_string()),
            program,
        }
    }

    pub fn from_program(program: &str) -> Self {
        Self {
            completion: None,
            program: program.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleResult {
    /// What was evaluated.
    pub completion: Option<String>,
    pub program: String,
    pub outcome: Outcome,
    /// The last part of what the program wrote to stderr/stdout, for samples that did not pass.
    pub output_tail: Option<String>,
    /// The same candidate without the update installed (CodeUpdateArena problems only).
    pub without_update: Option<Outcome>,
    pub tests_passed: usize,
    pub tests_total: usize,
    pub wall_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemResult {
    pub id: String,
    pub package: String,
    pub update_type: String,
    /// Set when the problem could not be evaluated here (missing package); then it is left
    /// out of every pass@k.
    pub environment: Option<String>,
    /// Samples that count (not environment or harness failures).
    pub n: usize,
    pub c: usize,
    pub c_without_update: Option<usize>,
    pub pass_at_k: BTreeMap<String, f64>,
    pub samples: Vec<SampleResult>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GroupStats {
    pub problems: usize,
    pub evaluated: usize,
    pub environment_skipped: usize,
    /// Mean over evaluated problems with at least k samples.
    pub pass_at_k: BTreeMap<String, f64>,
    pub pass_at_k_without_update: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub benchmark: String,
    pub k: Vec<usize>,
    pub isolation: Isolation,
    /// The Python that ran the programs and the versions of the packages the problems import.
    pub python_env: PythonEnv,
    /// Whether the names of the solution signature were imported in the setup.
    pub signature_imports: bool,
    pub overall: GroupStats,
    pub by_package: BTreeMap<String, GroupStats>,
    pub by_update_type: BTreeMap<String, GroupStats>,
    /// Tally of sample outcomes (with the update).
    pub outcomes: BTreeMap<String, usize>,
    /// Programs (with or without the update) that ended in a harness failure: not counted in
    /// n, so reported here and by the CLI.
    pub sandbox_errors: usize,
    pub first_sandbox_error: Option<String>,
    pub problems: Vec<ProblemResult>,
    pub wall_s: f64,
}

pub(crate) fn key(k: usize) -> String {
    format!("pass@{k}")
}

impl ProblemResult {
    pub(crate) fn new(
        id: String,
        package: String,
        update_type: String,
        samples: Vec<SampleResult>,
        ks: &[usize],
    ) -> Self {
        let env = samples.iter().find_map(|s| match &s.outcome {
            Outcome::Environment { detail } => Some(detail.clone()),
            _ => None,
        });
        let counted: Vec<&SampleResult> = samples.iter().filter(|s| s.outcome.counts()).collect();
        let n = counted.len();
        let c = counted.iter().filter(|s| s.outcome.passed()).count();
        let c_without_update = counted
            .iter()
            .map(|s| s.without_update.as_ref().map(|o| o.passed() as usize))
            .sum::<Option<usize>>()
            .filter(|_| n > 0);
        let pass_at_k = ks
            .iter()
            .filter_map(|&k| pass_at_k(n, c, k).map(|v| (key(k), v)))
            .collect();
        Self {
            id,
            package,
            update_type,
            environment: env,
            n,
            c,
            c_without_update,
            pass_at_k,
            samples,
        }
    }

    fn evaluated(&self) -> bool {
        self.environment.is_none() && self.n > 0
    }
}

pub(crate) fn group<'a>(problems: impl Iterator<Item = &'a ProblemResult>, ks: &[usize]) -> GroupStats {
    let ps: Vec<&ProblemResult> = problems.collect();
    let ev: Vec<&&ProblemResult> = ps.iter().filter(|p| p.evaluated()).collect();
    let counts: Vec<(usize, usize)> = ev.iter().map(|p| (p.n, p.c)).collect();
    let counts_wo: Vec<(usize, usize)> = ev.iter().filter_map(|p| p.c_without_update.map(|c| (p.n, c))).collect();
    let mean = |cs: &[(usize, usize)]| -> BTreeMap<String, f64> {
        ks.iter()
            .filter_map(|&k| mean_pass_at_k(cs, k).0.map(|v| (key(k), v)))
            .collect()
    };
    GroupStats {
        problems: ps.len(),
        evaluated: ev.len(),
        environment_skipped: ps.iter().filter(|p| p.environment.is_some()).count(),
        pass_at_k: mean(&counts),
        pass_at_k_without_update: mean(&counts_wo),
    }
}

impl EvalReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serialises")
    }

    /// One JSON line per sample (as EvalPlus keeps samples): id, sample index, completion,
    /// program, outcome. `recode eval --candidates` re-scores such a file.
    pub fn samples_jsonl(&self) -> String {
        let mut s = String::new();
        for p in &self.problems {
            for (i, x) in p.samples.iter().enumerate() {
                let line = serde_json::json!({
                    "id": p.id, "sample": i, "completion": x.completion, "program": x.program,
                    "passed": x.outcome.passed(), "outcome": x.outcome, "without_update": x.without_update,
                    "tests_passed": x.tests_passed, "tests_total": x.tests_total, "output_tail": x.output_tail,
                });
                s.push_str(&line.to_string());
                s.push('\n');
            }
        }
        s
    }

    /// One table: overall, then per package, then per update type (pass@k in percent).
    pub fn to_markdown(&self) -> String {
        let ks: Vec<String> = self.k.iter().map(|&k| key(k)).collect();
        let mut s = format!(
            "## {} evaluation\n\n| group | problems | evaluated | env-skipped |",
            self.benchmark
        );
        for k in &ks {
            s.push_str(&format!(" {k} |"));
        }
        s.push_str(" pass@1 w/o update |\n|---|---:|---:|---:|");
        s.push_str(&"---:|".repeat(ks.len() + 1));
        s.push('\n');
        let pct =
            |m: &BTreeMap<String, f64>, k: &str| m.get(k).map(|v| format!("{:.1}", v * 100.0)).unwrap_or("-".into());
        let mut row = |name: &str, g: &GroupStats| {
            s.push_str(&format!(
                "| {name} | {} | {} | {} |",
                g.problems, g.evaluated, g.environment_skipped
            ));
            for k in &ks {
                s.push_str(&format!(" {} |", pct(&g.pass_at_k, k)));
            }
            s.push_str(&format!(" {} |\n", pct(&g.pass_at_k_without_update, "pass@1")));
        };
        row("**overall**", &self.overall);
        for (p, g) in &self.by_package {
            row(&format!("package: {p}"), g);
        }
        for (t, g) in &self.by_update_type {
            row(&format!("update: {t}"), g);
        }
        let tally: Vec<String> = self.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let i = &self.isolation;
        s.push_str(&format!(
            "\nOutcomes: {}. Wall time {:.1}s. Sandbox: {} (uid {}), fresh root {}, seccomp {}, pids cgroup {}, memory cgroup {}.\n",
            tally.join(", "),
            self.wall_s,
            i.mode,
            i.uid,
            i.private_root,
            i.seccomp,
            i.pids_cgroup,
            i.memory_cgroup
        ));
        if self.sandbox_errors > 0 {
            s.push_str(&format!(
                "**Sandbox errors: {}** (left out of n; first: {}).\n",
                self.sandbox_errors,
                self.first_sandbox_error.as_deref().unwrap_or("-")
            ));
        }
        let e = &self.python_env;
        let pkgs: Vec<String> = e.packages.iter().map(|(k, v)| format!("{k} {v}")).collect();
        s.push_str(&format!(
            "Python {} ({}{}){}; signature imports {}.\n",
            e.version,
            e.python,
            if e.pinned_requirements_hash.is_some() {
                ", pinned eval-env"
            } else {
                ""
            },
            if pkgs.is_empty() {
                String::new()
            } else {
                format!(": {}", pkgs.join(", "))
            },
            if self.signature_imports { "on" } else { "off" },
        ));
        s
    }
}
