//! Candidate files for `recode eval --candidates`: JSON lines `{"id": str, "completion": str}`
//! (or `"program": str`), several lines per id for pass@k.

use super::problem::Problem;
use super::report::Candidate;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// The candidates of each problem, in the problems' order; an id that is not a problem is an
/// error naming the file, and a malformed line names its number.
pub fn read_candidates(path: &Path, problems: &[Problem]) -> Result<Vec<Vec<Candidate>>> {
    #[derive(serde::Deserialize)]
    struct Line {
        id: String,
        completion: Option<String>,
        program: Option<String>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut by_id: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    let expected = "expected {\"id\": str, \"completion\": str} (or \"program\": str)";
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let line: Line =
            serde_json::from_str(l).map_err(|e| anyhow!("{}:{}: {expected}: {e}", path.display(), i + 1))?;
        let cand = match (&line.completion, &line.program) {
            (Some(c), _) => Candidate::from_completion(c),
            (None, Some(p)) => Candidate::from_program(p),
            (None, None) => bail!("{}:{}: {expected}", path.display(), i + 1),
        };
        by_id.entry(line.id).or_default().push(cand);
    }
    let known: std::collections::BTreeSet<&str> = problems.iter().map(|p| p.id()).collect();
    if let Some(unknown) = by_id.keys().find(|id| !known.contains(id.as_str())) {
        bail!(
            "{}: candidate id `{unknown}` is not a problem of this benchmark",
            path.display()
        );
    }
    Ok(problems
        .iter()
        .map(|p| by_id.remove(p.id()).unwrap_or_default())
        .collect())
}
