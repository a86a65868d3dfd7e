//! CodeUpdateArena: loading both releases and assembling the programs that check a candidate.
//!
//! Formats (one JSON object per line):
//! - grouped pre-release: `{update{...}, prog_syn_examples[{scenario, problem, solution_signature,
//!   unit_tests, prog_syn_imports, ref_solution, prog_syn_id}]}`;
//! - final release (HF `arena-ungrouped.jsonl`): `{update{...}, update_id, scenario, problem,
//!   solution_signature, unit_tests, imports, ref_solution, prog_syn_id}`.
//!
//! `update` has description, rationale, docstring, signature, imports, implementation,
//! update_type, function_path, package, update_id. Text fields that the data card describes as
//! "separated by \n" / "\n\n" are also accepted as lists of strings.

use super::{pysrc, signature};
use anyhow::{bail, Context, Result};
use recode_sandbox::{Job, TestCase};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CuaUpdate {
    pub description: String,
    pub rationale: String,
    pub docstring: String,
    /// The new signature, e.g. `math.sin(x, unit='radians')`.
    pub signature: String,
    pub imports: String,
    pub implementation: String,
    pub update_type: String,
    /// The updated API, e.g. `math.sin` or `torch.Tensor.view`.
    pub function_path: String,
    pub package: String,
    pub update_id: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CuaExample {
    pub update: CuaUpdate,
    pub scenario: String,
    pub problem: String,
    pub solution_signature: String,
    pub unit_tests: String,
    pub imports: String,
    pub ref_solution: String,
    pub prog_syn_id: String,
    /// `file:line` the example came from.
    pub source: String,
}

/// Loads either release; errors name the file, line and field.
pub fn load(path: &Path) -> Result<Vec<CuaExample>> {
    let mut out = Vec::new();
    for (at, v) in super::jsonl::jsonl_values(path)? {
        out.extend(parse_line(&v, &at)?);
    }
    Ok(out)
}

/// Examples in one JSON line of either format.
pub fn parse_line(v: &Value, at: &str) -> Result<Vec<CuaExample>> {
    let update = parse_update(
        v.get("update")
            .with_context(|| format!("{at}: missing field `update` (object)"))?,
        at,
    )?;
    if let Some(list) = v.get("prog_syn_examples") {
        let list = list
            .as_array()
            .with_context(|| format!("{at}: `prog_syn_examples` must be an array"))?;
        list.iter()
            .enumerate()
            .map(|(j, e)| {
                parse_example(
                    e,
                    update.clone(),
                    &format!("{at}: prog_syn_examples[{j}]"),
                    "prog_syn_imports",
                    at,
                )
            })
            .collect()
    } else {
        Ok(vec![parse_example(v, update, at, "imports", at)?])
    }
}

fn text(v: &Value, key: &str, ctx: &str, sep: &str) -> Result<String> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            Ok(a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(sep))
        }
        Some(_) => bail!("{ctx}: field `{key}` must be a string (or list of strings)"),
        None => bail!("{ctx}: missing field `{key}` (string)"),
    }
}

fn parse_update(u: &Value, at: &str) -> Result<CuaUpdate> {
    let ctx = format!("{at}: update");
    let f = |k: &str, sep: &str| text(u, k, &ctx, sep);
    let update = CuaUpdate {
        description: f("description", "\n")?,
        rationale: f("rationale", "\n")?,
        docstring: f("docstring", "\n")?,
        signature: f("signature", "\n")?,
        imports: f("imports", "\n")?,
        implementation: f("implementation", "\n")?,
        update_type: f("update_type", "\n")?,
        function_path: f("function_path", "\n")?,
        package: f("package", "\n")?,
        update_id: f("update_id", "\n")?,
    };
    if !update.function_path.contains('.') {
        bail!(
            "{ctx}: `function_path` must be a dotted path (module.function), got {:?}",
            update.function_path
        );
    }
    Ok(update)
}

fn parse_example(e: &Value, update: CuaUpdate, ctx: &str, imports_key: &str, at: &str) -> Result<CuaExample> {
    let f = |k: &str, sep: &str| text(e, k, ctx, sep);
    Ok(CuaExample {
        scenario: f("scenario", "\n")?,
        problem: f("problem", "\n")?,
        solution_signature: f("solution_signature", "\n")?,
        unit_tests: f("unit_tests", "\n\n")?,
        imports: f(imports_key, "\n")?,
        ref_solution: f("ref_solution", "\n")?,
        prog_syn_id: f("prog_syn_id", "\n")?,
        source: at.to_string(),
        update,
    })
}

impl CuaExample {
    /// Statements that put the update into the package, as CodeUpdateArena does per update type.
    pub fn install_statement(&self) -> Result<String> {
        let u = &self.update;
        let (parent, old) = u.function_path.rsplit_once('.').expect("checked at load");
        let new = pysrc::first_def(&u.implementation)
            .with_context(|| format!("{}: update implementation defines no function", self.source))?;
        Ok(match u.update_type.as_str() {
            "modify-function-name" => format!("del {parent}.{old}\nsetattr({parent}, '{new}', {new})"),
            "add-function" => format!("setattr({parent}, '{new}', {new})"),
            t if t.starts_with("deprecate") => format!("del {parent}.{old}"),
            _ => format!("setattr({parent}, '{old}', {new})"),
        })
    }

    /// The update's imports (which save the old function) followed by the example's extra ones.
    fn imports(&self) -> String {
        let mut lines: Vec<&str> = self.update.imports.lines().collect();
        for l in self.imports.lines() {
            if !lines.contains(&l) {
                lines.push(l);
            }
        }
        lines.join("\n")
    }

    /// Imports, the update's implementation and (if `with_update`) the statement installing it.
    ///
    /// Every module the dataset's own code imports is loaded first, before the update: in
    /// CodeUpdateArena's harness they were already loaded, and a library importing the updated
    /// function later (numpy does `from itertools import product`) must not see the update.
    /// With `signature_imports`, the names the solution signature uses (`List`, `Tuple`, ...)
    /// are imported next, before the example's own imports (which win on a clash).
    pub fn setup(&self, with_update: bool, signature_imports: bool) -> Result<String> {
        let modules: Vec<String> = pysrc::imported_modules(&self.dataset_code())
            .into_iter()
            .filter(|m| m != "__future__")
            .collect();
        let mut pre: String = modules.iter().map(|m| format!("import {m}\n")).collect();
        if signature_imports {
            pre.push_str(&signature::imports_for(&self.solution_signature, &modules));
        }
        let mut s = format!("{pre}{}\n\n{}\n", self.imports(), self.update.implementation);
        if with_update {
            s.push_str(&format!("\n{}\n", self.install_statement()?));
        }
        Ok(s)
    }

    /// Unit tests: each top-level `def test*`, with every other top-level statement of the test
    /// file (imports, helpers) placed before it.
    pub fn tests(&self) -> Vec<TestCase> {
        let stmts = pysrc::top_level_statements(&self.unit_tests);
        let is_test = |s: &pysrc::TopLevel| s.def_name.as_deref().is_some_and(|n| n.starts_with("test"));
        let shared: String = stmts.iter().filter(|s| !is_test(s)).map(|s| s.text.as_str()).collect();
        stmts
            .iter()
            .filter(|s| is_test(s))
            .map(|s| {
                let name = s.def_name.clone().unwrap();
                TestCase {
                    call: format!("{name}()"),
                    code: format!("{shared}{}", s.text),
                    name,
                }
            })
            .collect()
    }

    /// All unit tests against `candidate`, in one process.
    pub fn job(&self, candidate: &str, with_update: bool, signature_imports: bool) -> Result<Job> {
        Ok(Job {
            setup: self.setup(with_update, signature_imports)?,
            candidate: candidate.to_string(),
            tests: self.tests(),
        })
    }

    /// One standalone program per unit test, as CodeUpdateArena runs them: imports, update
    /// implementation, install statement, candidate, test function, its call.
    pub fn programs(&self, candidate: &str, with_update: bool, signature_imports: bool) -> Result<Vec<String>> {
        let setup = self.setup(with_update, signature_imports)?;
        Ok(self
            .tests()
            .into_iter()
            .map(|t| {
                Job {
                    setup: setup.clone(),
                    candidate: candidate.to_string(),
                    tests: vec![t],
                }
                .to_script()
            })
            .collect())
    }

    /// Python code of the dataset itself (for detecting the packages it needs).
    pub fn dataset_code(&self) -> String {
        [
            &self.update.imports,
            &self.update.implementation,
            &self.imports,
            &self.unit_tests,
            &self.ref_solution,
        ]
        .map(String::as_str)
        .join("\n")
    }
}
