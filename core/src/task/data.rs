//! The ReCode dataset: loading, defect accounting, seeded shuffling and splitting.
//!
//! Rows are JSON lines or one JSON array of objects with the fields `dependency`, `new_version`,
//! `description`, `update_info`, `old_code`, `new_code`. Malformed input (not JSON, a field of the
//! wrong type) is an error naming the file and line; known defects of the public training set
//! (null fields, versions without "==", unparsable targets, unchanged code) are counted per library.

use crate::spec::DataSpec;
use crate::task::pysyntax;
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One migration example. Serialized fields are what prompt templates see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Library name as written in the data (e.g. "PyTorch").
    pub dependency: String,
    /// Version without the leading "==" (e.g. "2.0.0").
    pub new_version: String,
    pub description: String,
    pub update_info: String,
    pub old_code: String,
    pub new_code: String,
    /// 1-based line (JSON lines) or element index + 1 (JSON array) in the source file.
    #[serde(skip)]
    pub line: usize,
    /// The row's other columns (e.g. `tests`), as read: in scope for prompt templates and seen
    /// by rewards (`RewardInput::columns`).
    #[serde(flatten)]
    pub columns: BTreeMap<String, serde_json::Value>,
}

const FIELDS: [&str; 6] = [
    "dependency",
    "new_version",
    "description",
    "update_info",
    "old_code",
    "new_code",
];

#[derive(Deserialize)]
struct RawRow {
    dependency: Option<String>,
    new_version: Option<String>,
    description: Option<String>,
    update_info: Option<String>,
    old_code: Option<String>,
    new_code: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// "==0.4.38", "0.4.38" and " == 0.4.38 " all give "0.4.38" (the paper's `[2:]` assumed "==").
pub fn normalize_version(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix("==").map(str::trim).unwrap_or(v)
}

/// Counts of one library (or of the whole file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub rows: usize,
    /// Rows left after the options' filters.
    pub kept: usize,
    /// Rows with a null or missing field (always skipped).
    pub null_fields: usize,
    pub version_without_eq: usize,
    pub unparsable_targets: usize,
    pub unparsable_old_code: usize,
    pub unchanged: usize,
}

/// A row that was not kept, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub line: usize,
    pub dependency: String,
    pub reason: String,
}

/// What `recode data inspect` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InspectReport {
    pub path: String,
    /// "jsonl" or "json-array".
    pub format: String,
    pub totals: Counts,
    /// Keyed by lowercase dependency name.
    pub libraries: BTreeMap<String, Counts>,
    /// Spellings of each library seen in the data (e.g. seaborn: ["Seaborn", "seaborn"]).
    pub spellings: BTreeMap<String, Vec<String>>,
    /// How often each field was null or missing.
    pub null_field_counts: BTreeMap<String, usize>,
    pub dropped_unparsable_targets: usize,
    pub dropped_unchanged: usize,
    pub skipped: Vec<Skipped>,
}

/// Rows ready for training, with what was done to get them.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub train: Vec<Row>,
    pub heldout: Vec<Row>,
    pub report: InspectReport,
}

/// Parse a file into (line, raw row) pairs; errors name the file and line.
fn read_raw(path: &Path) -> Result<(String, Vec<(usize, RawRow)>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading dataset {}", path.display()))?;
    let shown = path.display();
    if text.trim_start().starts_with('[') {
        let items: Vec<serde_json::Value> =
            serde_json::from_str(&text).with_context(|| format!("{shown}: not a JSON array of rows"))?;
        let rows = items
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let row = serde_json::from_value(v).with_context(|| {
                    format!(
                        "{shown}: element {}: expected an object with string or null fields {FIELDS:?}",
                        i + 1
                    )
                })?;
                Ok((i + 1, row))
            })
            .collect::<Result<_>>()?;
        return Ok(("json-array".into(), rows));
    }
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str(line).with_context(|| {
            format!(
                "{shown}:{}: expected a JSON object with string or null fields {FIELDS:?}",
                i + 1
            )
        })?;
        rows.push((i + 1, row));
    }
    Ok(("jsonl".into(), rows))
}

/// Apply the spec's filters and count every defect. Returns kept rows in file order.
pub fn load_rows(path: &Path, spec: &DataSpec) -> Result<(Vec<Row>, InspectReport)> {
    let (format, raw) = read_raw(path)?;
    let mut report = InspectReport {
        path: path.display().to_string(),
        format,
        ..Default::default()
    };
    let mut kept = Vec::new();
    for (line, r) in raw {
        let dependency = r.dependency.clone().unwrap_or_default();
        let lib = dependency.trim().to_lowercase();
        let mut c = Counts {
            rows: 1,
            ..Default::default()
        };
        let spellings = report.spellings.entry(lib.clone()).or_default();
        if !spellings.contains(&dependency) {
            spellings.push(dependency.clone());
        }
        let values = [
            &r.dependency,
            &r.new_version,
            &r.description,
            &r.update_info,
            &r.old_code,
            &r.new_code,
        ];
        let nulls: Vec<&str> = FIELDS
            .iter()
            .zip(values)
            .filter(|(_, v)| v.is_none())
            .map(|(f, _)| *f)
            .collect();
        let mut reason = None;
        if !nulls.is_empty() {
            c.null_fields = 1;
            for f in &nulls {
                *report.null_field_counts.entry(f.to_string()).or_default() += 1;
            }
            reason = Some(format!("null or missing field(s): {}", nulls.join(", ")));
        }
        if r.new_version.as_deref().is_some_and(|v| !v.trim().starts_with("==")) {
            c.version_without_eq = 1;
        }
        if let Some(code) = &r.new_code {
            if !pysyntax::parses(code) {
                c.unparsable_targets = 1;
                if reason.is_none() && spec.drop_unparsable_targets {
                    report.dropped_unparsable_targets += 1;
                    reason = Some("new_code does not parse as Python".into());
                }
            }
        }
        if let Some(code) = &r.old_code {
            c.unparsable_old_code = usize::from(!pysyntax::parses(code));
            if r.new_code.as_ref() == Some(code) {
                c.unchanged = 1;
                if reason.is_none() && spec.drop_unchanged {
                    report.dropped_unchanged += 1;
                    reason = Some("old_code equals new_code".into());
                }
            }
        }
        match reason {
            Some(reason) => report.skipped.push(Skipped {
                line,
                dependency,
                reason,
            }),
            None => {
                c.kept = 1;
                kept.push(Row {
                    dependency,
                    new_version: normalize_version(r.new_version.as_deref().unwrap_or_default()).to_string(),
                    description: r.description.unwrap_or_default(),
                    update_info: r.update_info.unwrap_or_default(),
                    old_code: r.old_code.unwrap_or_default(),
                    new_code: r.new_code.unwrap_or_default(),
                    line,
                    columns: r.other,
                });
            }
        }
        add(&mut report.totals, &c);
        add(report.libraries.entry(lib).or_default(), &c);
    }
    Ok((kept, report))
}

fn add(into: &mut Counts, c: &Counts) {
    into.rows += c.rows;
    into.kept += c.kept;
    into.null_fields += c.null_fields;
    into.version_without_eq += c.version_without_eq;
    into.unparsable_targets += c.unparsable_targets;
    into.unparsable_old_code += c.unparsable_old_code;
    into.unchanged += c.unchanged;
}

/// Inspect a file with the given filter options (what `recode data inspect` shows).
pub fn inspect(path: &Path, spec: &DataSpec) -> Result<InspectReport> {
    Ok(load_rows(path, spec)?.1)
}

/// Load `spec.path` (relative paths against `base`), filter, cap at `max_items`, split off the
/// held-out part with `seed`. Both parts stay in file order; use [`epoch_order`] to shuffle.
pub fn load(spec: &DataSpec, base: &Path, seed: u64) -> Result<Dataset> {
    if !(0.0..1.0).contains(&spec.heldout_fraction) {
        bail!(
            "data.heldout_fraction: expected a value in [0, 1), got {}",
            spec.heldout_fraction
        );
    }
    let path = base.join(&spec.path);
    let (mut rows, report) = load_rows(&path, spec)?;
    if spec.max_items > 0 {
        rows.truncate(spec.max_items);
    }
    let (train, heldout) = match spec.split_by.as_str() {
        "update" => split_by_update(rows, spec.heldout_fraction, seed),
        "row" => split(rows, spec.heldout_fraction, seed),
        other => bail!("data.split_by: expected \"update\" or \"row\", got {other:?}"),
    };
    if train.is_empty() {
        bail!(
            "{}: no training rows left after filtering ({} rows read)",
            path.display(),
            report.totals.rows
        );
    }
    Ok(Dataset { train, heldout, report })
}

/// Seeded split: `round(len * fraction)` rows chosen by a ChaCha8 permutation are held out.
pub fn split(rows: Vec<Row>, heldout_fraction: f64, seed: u64) -> (Vec<Row>, Vec<Row>) {
    let groups = (0..rows.len()).map(|i| vec![i]).collect();
    split_groups(rows, groups, heldout_fraction, seed)
}

/// Seeded split by update: rows sharing an `update_info` (trimmed) form one group, held out
/// whole, so no held-out update has a row in training. With every update distinct this is
/// [`split`]. Both parts stay in file order.
pub fn split_by_update(rows: Vec<Row>, heldout_fraction: f64, seed: u64) -> (Vec<Row>, Vec<Row>) {
    // Groups in order of first appearance, so the permutation depends on the file alone.
    let mut group_of: BTreeMap<&str, usize> = BTreeMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let g = *group_of.entry(row.update_info.trim()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    split_groups(rows, groups, heldout_fraction, seed)
}

/// The groups (row indices) permuted by ChaCha8 and held out whole until at least
/// `round(len * fraction)` rows are held out; both parts in file order.
fn split_groups(rows: Vec<Row>, groups: Vec<Vec<usize>>, heldout_fraction: f64, seed: u64) -> (Vec<Row>, Vec<Row>) {
    let n_held = (rows.len() as f64 * heldout_fraction).round() as usize;
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut held = vec![false; rows.len()];
    let mut count = 0;
    for g in order {
        if count >= n_held {
            break;
        }
        for &i in &groups[g] {
            held[i] = true;
        }
        count += groups[g].len();
    }
    let (mut train, mut heldout) = (Vec::new(), Vec::new());
    for (row, h) in rows.into_iter().zip(held) {
        if h {
            heldout.push(row)
        } else {
            train.push(row)
        }
    }
    (train, heldout)
}

/// The order of rows in epoch `epoch` (seeded; the identity when `shuffle` is false).
pub fn epoch_order(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch + 1); // stream 0 is the split's
        order.shuffle(&mut rng);
    }
    order
}

impl InspectReport {
    /// Human-readable summary.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let t = &self.totals;
        let _ = writeln!(s, "{} ({}): {} rows, {} kept", self.path, self.format, t.rows, t.kept);
        let _ = writeln!(
            s,
            "defects (a row dropped for one reason is not counted as dropped for another):"
        );
        let nulls: Vec<String> = self.null_field_counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            s,
            "  null/missing fields     {:>5}  (skipped; {})",
            t.null_fields,
            nulls.join(", ")
        );
        let _ = writeln!(
            s,
            "  version without \"==\"    {:>5}  (normalised)",
            t.version_without_eq
        );
        let _ = writeln!(
            s,
            "  unparsable new_code     {:>5}  ({} dropped)",
            t.unparsable_targets, self.dropped_unparsable_targets
        );
        let _ = writeln!(s, "  unparsable old_code     {:>5}  (kept)", t.unparsable_old_code);
        let _ = writeln!(
            s,
            "  old_code == new_code    {:>5}  ({} dropped)",
            t.unchanged, self.dropped_unchanged
        );
        let mixed: Vec<String> = self
            .spellings
            .values()
            .filter(|v| v.len() > 1)
            .map(|v| v.join("/"))
            .collect();
        let _ = writeln!(
            s,
            "  mixed-case library names: {}",
            if mixed.is_empty() {
                "none".into()
            } else {
                mixed.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "{:<16}{:>6}{:>6}{:>6}{:>8}{:>8}{:>8}{:>8}",
            "library", "rows", "kept", "null", "no-==", "bad-new", "bad-old", "same"
        );
        for (lib, c) in &self.libraries {
            let _ = writeln!(
                s,
                "{:<16}{:>6}{:>6}{:>6}{:>8}{:>8}{:>8}{:>8}",
                lib,
                c.rows,
                c.kept,
                c.null_fields,
                c.version_without_eq,
                c.unparsable_targets,
                c.unparsable_old_code,
                c.unchanged
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn row_json(dep: &str, ver: &str, old: &str, new: &str) -> String {
        serde_json::json!({"dependency": dep, "new_version": ver, "description": "d", "update_info": "u",
            "old_code": old, "new_code": new})
        .to_string()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn spec(drop_bad: bool, drop_same: bool) -> DataSpec {
        DataSpec {
            drop_unparsable_targets: drop_bad,
            drop_unchanged: drop_same,
            ..Default::default()
        }
    }

    #[test]
    fn versions_keep_all_digits() {
        assert_eq!(normalize_version("==0.4.38"), "0.4.38");
        assert_eq!(normalize_version("0.4.38"), "0.4.38");
        assert_eq!(normalize_version(" == 2.0 "), "2.0");
    }

    #[test]
    fn counts_and_filters_defects() {
        let null_row = r#"{"dependency":"Numpy","new_version":"==2.0","description":"d","update_info":null,"old_code":null,"new_code":"x"}"#;
        let text = [
            row_json("Numpy", "==2.0", "a = np.product(x)", "a = np.prod(x)"),
            row_json("numpy", "2.0", "x = 1", "x = 1"),
            row_json("pandas", "==2.0", "df.append(o)", "def f(:"),
            null_row.to_string(),
        ]
        .join("\n");
        let f = file(&text);
        let (rows, rep) = load_rows(f.path(), &spec(false, false)).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].new_version, "2.0");
        assert_eq!(rows[2].line, 3);
        let np = &rep.libraries["numpy"];
        assert_eq!(
            (np.rows, np.kept, np.null_fields, np.version_without_eq, np.unchanged),
            (3, 2, 1, 1, 1)
        );
        assert_eq!(rep.libraries["pandas"].unparsable_targets, 1);
        assert_eq!(rep.null_field_counts["old_code"], 1);
        assert_eq!(rep.spellings["numpy"], vec!["Numpy", "numpy"]);
        assert_eq!(rep.skipped[0].line, 4);
        let (rows, rep) = load_rows(f.path(), &spec(true, true)).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rep.dropped_unparsable_targets, rep.dropped_unchanged, rep.totals.kept),
            (1, 1, 1)
        );
        assert!(rep.to_text().contains("Numpy/numpy"));
    }

    #[test]
    fn json_array_and_errors_name_the_line() {
        let f = file(&format!(
            "[{}, {}]",
            row_json("a", "==1", "x", "y"),
            row_json("b", "==1", "x", "y")
        ));
        let (rows, rep) = load_rows(f.path(), &spec(true, false)).unwrap();
        assert_eq!((rows.len(), rep.format.as_str(), rows[1].line), (2, "json-array", 2));
        let f = file(&format!("{}\n{{not json\n", row_json("a", "==1", "x", "y")));
        let err = format!("{:#}", load_rows(f.path(), &spec(true, false)).unwrap_err());
        assert!(err.contains(&format!("{}:2:", f.path().display())), "{err}");
        let f =
            file(r#"{"dependency":"a","new_version":1,"description":"","update_info":"","old_code":"","new_code":""}"#);
        let err = format!("{:#}", load_rows(f.path(), &spec(true, false)).unwrap_err());
        assert!(err.contains(":1:") && err.contains("invalid type"), "{err}");
    }

    #[test]
    fn seeded_split_and_order() {
        let rows: Vec<Row> = (0..100)
            .map(|i| Row {
                dependency: format!("{i}"),
                new_version: String::new(),
                description: String::new(),
                update_info: String::new(),
                old_code: String::new(),
                new_code: String::new(),
                line: i,
                columns: Default::default(),
            })
            .collect();
        let (t1, h1) = split(rows.clone(), 0.1, 7);
        let (t2, h2) = split(rows.clone(), 0.1, 7);
        let (_, h3) = split(rows, 0.1, 8);
        assert_eq!((t1.len(), h1.len()), (90, 10));
        assert_eq!((&t1, &h1), (&t2, &h2));
        assert_ne!(h1, h3);
        assert!(h1.windows(2).all(|w| w[0].line < w[1].line));
        let (a, b) = (epoch_order(50, 1, 0, true), epoch_order(50, 1, 1, true));
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(50, 1, 0, true));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_eq!(epoch_order(3, 1, 0, false), vec![0, 1, 2]);
    }

    #[test]
    fn split_by_update_holds_out_whole_updates() {
        // 60 rows over 25 updates: update u has 1 + u % 4 rows, interleaved over the file.
        let mut rows = Vec::new();
        for round in 0..4 {
            for u in 0..25 {
                if round < 1 + u % 4 && rows.len() < 60 {
                    rows.push(Row {
                        dependency: "lib".into(),
                        new_version: String::new(),
                        description: String::new(),
                        update_info: format!(" update {u} "),
                        old_code: String::new(),
                        new_code: format!("{u}.{round}"),
                        line: rows.len() + 1,
                        columns: Default::default(),
                    });
                }
            }
        }
        let (train, held) = split_by_update(rows.clone(), 0.2, 3);
        assert_eq!(train.len() + held.len(), rows.len());
        assert!(held.len() >= 12 && held.len() <= 12 + 3, "held out {} rows", held.len());
        let held_updates: std::collections::BTreeSet<&str> = held.iter().map(|r| r.update_info.as_str()).collect();
        assert!(
            train.iter().all(|r| !held_updates.contains(r.update_info.as_str())),
            "a held-out update is trained on"
        );
        assert!(held.windows(2).all(|w| w[0].line < w[1].line));
        assert_eq!(split_by_update(rows.clone(), 0.2, 3).1, held, "seeded");
        assert_ne!(split_by_update(rows.clone(), 0.2, 4).1, held);
        assert!(split_by_update(rows.clone(), 0.0, 3).1.is_empty());
        // All updates distinct: the row split, row for row.
        let distinct: Vec<Row> = rows
            .into_iter()
            .enumerate()
            .map(|(i, r)| Row {
                update_info: format!("u{i}"),
                ..r
            })
            .collect();
        assert_eq!(split_by_update(distinct.clone(), 0.2, 3), split(distinct, 0.2, 3));
    }
}
