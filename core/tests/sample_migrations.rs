//! The shipped sample dataset is clean: every row loads, parses, changes code and renders a prompt.

use recode_core::spec::DataSpec;
use recode_core::task::{data, prompt, pysyntax};
use std::path::PathBuf;

#[test]
fn sample_migrations_are_valid() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let raw = std::fs::read_to_string(repo.join("data/sample-migrations.jsonl")).unwrap();
    let keep_all = DataSpec {
        drop_unparsable_targets: false,
        drop_unchanged: false,
        ..Default::default()
    };
    let set = data::load(&keep_all, &repo, 42).unwrap();
    let rows = &set.train;
    assert!(rows.len() >= 40, "only {} rows", rows.len());
    assert_eq!(rows.len(), raw.lines().filter(|l| !l.trim().is_empty()).count());
    let spec = prompt::load_prompt_spec(&repo.join("configs/prompt-recode.toml")).unwrap();
    for r in rows {
        for (field, code) in [("old_code", &r.old_code), ("new_code", &r.new_code)] {
            assert!(
                pysyntax::check(code).is_ok(),
                "line {} {field}: {:?}",
                r.line,
                pysyntax::check(code)
            );
        }
        assert_ne!(r.old_code, r.new_code, "line {}", r.line);
        assert!(r.dependency == r.dependency.to_lowercase(), "line {}", r.line);
        let p = prompt::render_prompt(&spec, r, None).unwrap();
        assert!(p.contains(&format!("<doc>\n{}\n</doc>", r.update_info)) && p.ends_with("<think>"));
    }
    let t = &set.report.totals;
    assert_eq!(
        (t.null_fields, t.version_without_eq, t.unparsable_targets, t.unchanged),
        (0, 0, 0, 0)
    );
    let libs: Vec<&String> = set.report.libraries.keys().collect();
    assert!(libs.len() >= 6, "{libs:?}");
}
