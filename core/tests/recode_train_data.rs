//! Checks against the public ReCode training set when it is present next to the repository
//! (`../shared/data/recode-train.jsonl`); skipped with a message otherwise, failed under CI=true
//! (CI has the shared data).

use recode_core::spec::DataSpec;
use recode_core::task::{data, pysyntax};
use std::path::PathBuf;
use std::process::Command;

fn train_file() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/recode-train.jsonl");
    if p.exists() {
        Some(p)
    } else {
        recode_test_support::skip_or_fail_in_ci(&format!(
            "checks on the ReCode training set: {} not found",
            p.display()
        ));
        None
    }
}

/// rustpython-parser and CPython's ast.parse agree on every old_code and new_code.
#[test]
fn parser_matches_cpython_ast_parse() {
    let Some(path) = train_file() else { return };
    // One python run over the whole file: per row [old_ok, new_ok] (null for a null field).
    let script = r#"
import ast, json, sys
def ok(code):
    if code is None:
        return None
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False
out = []
for line in open(sys.argv[1], encoding="utf-8"):
    if line.strip():
        r = json.loads(line)
        out.append([ok(r["old_code"]), ok(r["new_code"])])
print(json.dumps(out))
"#;
    let Some(python) = recode_test_support::python("CPython's ast.parse on the training set") else {
        return;
    };
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("the tests' python");
    assert!(
        out.status.success(),
        "the ast.parse script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<[Option<bool>; 2]> = serde_json::from_slice(&out.stdout).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), verdicts.len());
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for (i, (row, v)) in rows.iter().zip(&verdicts).enumerate() {
        for (k, field) in ["old_code", "new_code"].iter().enumerate() {
            if let (Some(code), Some(expected)) = (row[field].as_str(), v[k]) {
                checked += 1;
                let got = pysyntax::check(code);
                if got.is_ok() != expected {
                    mismatches.push(format!("line {} {field}: ast.parse ok={expected}, ours={got:?}", i + 1));
                }
            }
        }
    }
    assert!(checked > 3000, "checked only {checked} snippets");
    assert!(
        mismatches.is_empty(),
        "{} of {checked} verdicts differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// The known defects of the public file are all found and counted.
#[test]
fn inspect_counts_known_defects() {
    let Some(path) = train_file() else { return };
    let keep_all = DataSpec {
        drop_unparsable_targets: false,
        drop_unchanged: false,
        ..Default::default()
    };
    let rep = data::inspect(&path, &keep_all).unwrap();
    let t = &rep.totals;
    assert_eq!(
        (
            t.rows,
            t.null_fields,
            t.version_without_eq,
            t.unparsable_targets,
            t.unchanged
        ),
        (1781, 21, 96, 50, 132)
    );
    assert_eq!(t.kept, 1781 - 21);
    assert_eq!(rep.null_field_counts["update_info"], 21);
    assert_eq!(rep.spellings["seaborn"].len(), 2);
    assert!(rep.libraries.keys().all(|k| *k == k.to_lowercase()));
    let per_lib: usize = rep.libraries.values().map(|c| c.rows).sum();
    assert_eq!(per_lib, 1781);
    let strict = DataSpec {
        drop_unparsable_targets: true,
        drop_unchanged: true,
        ..Default::default()
    };
    let rep = data::inspect(&path, &strict).unwrap();
    assert_eq!(rep.totals.kept + rep.skipped.len(), 1781);
    assert_eq!(
        rep.dropped_unparsable_targets + rep.dropped_unchanged + 21,
        rep.skipped.len()
    );
    let (rows, _) = data::load_rows(&path, &keep_all).unwrap();
    assert!(rows.iter().all(|r| !r.new_version.starts_with('=')));
    assert!(rows.iter().any(|r| r.new_version == "0.4.38"));
    println!("{}", rep.to_text());
}
