//! Reading benchmark files (JSON lines), every value with the `file:line` it came from.

use anyhow::Result;
use std::path::Path;

/// The JSON value of every non-empty line of a JSON-lines file, each with its `file:line`.
pub fn jsonl_values(path: &Path) -> Result<Vec<(String, serde_json::Value)>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let at = format!("{}:{}", path.display(), i + 1);
            let v = serde_json::from_str(line).with_context(|| format!("{at}: invalid JSON"))?;
            Ok((at, v))
        })
        .collect()
}
