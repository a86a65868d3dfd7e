//! The summaries of a sweep built from its record and its runs' logs: `summary.md`,
//! `summary.csv`, `summary-variants.csv` (mean/std/CI over seeds), `summary-heldout.csv`, the
//! plots, and the text tables `recode sweep` prints.

use super::plan::{glob, Plan};
use super::record::{read_series, MetricSummary, RunRecord, Series, SpreadRecord, Status, SweepRecord, VariantStats};
use super::stats::spread;
use crate::rundir::write_atomic;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Keys matched by the patterns, in pattern order, each once.
fn select(patterns: &[String], keys: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in patterns {
        for k in keys {
            if glob(p, k) && !out.contains(k) {
                out.push(k.clone());
            }
        }
    }
    out
}

fn summarise_series(s: &[(usize, f64)]) -> Option<MetricSummary> {
    let last = s.last()?.1;
    let (best_step, best) = s
        .iter()
        .filter(|x| x.1.is_finite())
        .fold((0, f64::NEG_INFINITY), |a, x| if x.1 > a.1 { (x.0, x.1) } else { a });
    Some(MetricSummary { last, best, best_step })
}

/// Rebuild every summary of the sweep in `dir` from its runs' logs: metrics of each run,
/// per-variant spread over seeds, sweep.json, summary.md, summary.csv and the plots.
pub fn summarise(dir: &Path) -> Result<SweepRecord> {
    let mut rec = SweepRecord::load(dir)?;
    refresh(dir, &mut rec)?;
    Ok(rec)
}

/// As [`summarise`], on a record in memory (the executor's).
pub fn refresh(dir: &Path, rec: &mut SweepRecord) -> Result<()> {
    let series: Vec<Series> = rec
        .runs
        .iter()
        .map(|r| {
            r.run_dir
                .as_ref()
                .map(|d| read_series(&dir.join(d)))
                .unwrap_or_default()
        })
        .collect();
    let mut keys: Vec<String> = series.iter().flat_map(|s| s.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    rec.metrics = select(&rec.metric_patterns, &keys);
    for (run, s) in rec.runs.iter_mut().zip(&series) {
        run.metrics = rec
            .metrics
            .iter()
            .filter_map(|k| Some((k.clone(), summarise_series(s.get(k)?)?)))
            .collect();
        run.steps_done = s.values().filter_map(|v| v.last().map(|x| x.0)).max().unwrap_or(0);
    }
    rec.variants = variant_stats(rec);
    rec.heldout = heldout_changes(dir, rec);
    rec.save(dir)?;
    if !rec.heldout.is_empty() {
        write_atomic(&dir.join("summary-heldout.csv"), heldout_csv(rec).as_bytes())?;
    }
    write_atomic(&dir.join("summary.csv"), runs_csv(rec).as_bytes())?;
    if !rec.variants.is_empty() {
        write_atomic(&dir.join("summary-variants.csv"), variants_csv(rec).as_bytes())?;
    }
    let plots = super::plot::plot_all(dir, rec, &series)?;
    write_atomic(&dir.join("summary.md"), markdown(dir, rec, &plots).as_bytes())?;
    Ok(())
}

/// The runs' groups (variants without the seed), each once, in run order.
fn groups(rec: &SweepRecord) -> Vec<&String> {
    let mut groups: Vec<&String> = Vec::new();
    for r in &rec.runs {
        if !groups.contains(&&r.group) {
            groups.push(&r.group);
        }
    }
    groups
}

fn variant_stats(rec: &SweepRecord) -> Vec<VariantStats> {
    if rec.runs.iter().all(|r| r.seed.is_none()) {
        return vec![];
    }
    groups(rec)
        .into_iter()
        .map(|g| {
            let members: Vec<&RunRecord> = rec.runs.iter().filter(|r| &r.group == g).collect();
            let done: Vec<&RunRecord> = members
                .iter()
                .copied()
                .filter(|r| r.status == Status::Finished)
                .collect();
            let mut values = members[0].values.clone();
            values.remove("run.seed");
            let metrics = rec
                .metrics
                .iter()
                .map(|k| {
                    let xs: Vec<f64> = done.iter().filter_map(|r| r.metrics.get(k).map(|m| m.last)).collect();
                    (k.clone(), spread(&xs).into())
                })
                .collect();
            VariantStats {
                group: g.clone(),
                values,
                runs: members.len(),
                metrics,
            }
        })
        .collect()
}

/// Each group's held-out change from its finished runs' per-item records (groups without any
/// held-out scores are left out).
fn heldout_changes(dir: &Path, rec: &SweepRecord) -> Vec<(String, Vec<super::heldout_change::HeldoutChange>)> {
    groups(rec)
        .into_iter()
        .filter_map(|g| {
            let dirs: Vec<PathBuf> = rec
                .runs
                .iter()
                .filter(|r| &r.group == g && r.status == Status::Finished)
                .filter_map(|r| r.run_dir.as_ref().map(|d| dir.join(d)))
                .collect();
            let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
            let ch = super::heldout_change::variant_changes(&refs);
            (!ch.is_empty()).then(|| (g.clone(), ch))
        })
        .collect()
}

fn heldout_rows(rec: &SweepRecord, md: bool) -> Vec<Vec<String>> {
    let mut rows = vec![if md {
        [
            "variant",
            "score",
            "items",
            "runs",
            "step 0",
            "end",
            "change [95% CI]",
            "change per run",
            "copy",
            "end - copy [95% CI]",
        ]
        .map(String::from)
        .to_vec()
    } else {
        [
            "variant",
            "score",
            "items",
            "runs",
            "before",
            "after",
            "change",
            "ci_low",
            "ci_high",
            "per_run",
            "copy",
            "vs_copy",
            "vs_copy_low",
            "vs_copy_high",
        ]
        .map(String::from)
        .to_vec()
    }];
    for (g, changes) in &rec.heldout {
        for c in changes {
            let per_run = c.per_run.iter().map(|x| num(*x)).collect::<Vec<_>>().join(" ");
            let mut row = vec![
                g.clone(),
                c.score.clone(),
                c.items.to_string(),
                c.runs.to_string(),
                num(c.before),
                num(c.after),
            ];
            if md {
                row.push(format!("{:+.3} [{:+.3}, {:+.3}]", c.change, c.ci_low, c.ci_high));
                row.push(per_run);
                row.push(num(c.copy));
                row.push(if c.vs_copy.is_nan() {
                    String::new()
                } else {
                    format!("{:+.3} [{:+.3}, {:+.3}]", c.vs_copy, c.vs_copy_low, c.vs_copy_high)
                });
            } else {
                row.extend([num(c.change), num(c.ci_low), num(c.ci_high), per_run]);
                row.extend([num(c.copy), num(c.vs_copy), num(c.vs_copy_low), num(c.vs_copy_high)]);
            }
            rows.push(row);
        }
    }
    rows
}

fn heldout_csv(rec: &SweepRecord) -> String {
    csv(&heldout_rows(rec, false))
}

fn num(x: f64) -> String {
    if x.is_nan() {
        String::new()
    } else {
        format!("{x:.6}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(rows: &[Vec<String>]) -> String {
    rows.iter()
        .map(|r| r.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",") + "\n")
        .collect()
}

fn status_name(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// Final values only.
    Text,
    /// Final, and best with its step in one cell.
    Markdown,
    /// Final, best and best step in columns of their own.
    Csv,
}

fn run_rows(rec: &SweepRecord, layout: Layout) -> Vec<Vec<String>> {
    let mut header: Vec<String> = ["run", "status", "steps", "wall_s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if layout == Layout::Csv {
        header[2] = "steps_done".into();
        header.insert(3, "steps_total".into());
    }
    header.extend(rec.varied.iter().cloned());
    for m in &rec.metrics {
        header.push(format!("{m} final"));
        match layout {
            Layout::Text => {}
            Layout::Markdown => header.push(format!("{m} best")),
            Layout::Csv => header.extend([format!("{m} best"), format!("{m} best_step")]),
        }
    }
    let mut rows = vec![header];
    for r in &rec.runs {
        let mut row = vec![r.name.clone(), status_name(r.status)];
        match layout {
            Layout::Csv => row.extend([r.steps_done.to_string(), r.steps_total.to_string()]),
            _ => row.push(format!("{}/{}", r.steps_done, r.steps_total)),
        }
        row.push(format!("{:.1}", r.wall_s));
        row.extend(
            rec.varied
                .iter()
                .map(|k| r.values.get(k).cloned().unwrap_or_else(|| "-".into())),
        );
        for m in &rec.metrics {
            let s = r.metrics.get(m);
            row.push(s.map(|s| num(s.last)).unwrap_or_default());
            match layout {
                Layout::Text => {}
                Layout::Markdown => row.push(
                    s.map(|s| format!("{} @{}", num(s.best), s.best_step))
                        .unwrap_or_default(),
                ),
                Layout::Csv => row.extend([
                    s.map(|s| num(s.best)).unwrap_or_default(),
                    s.map(|s| s.best_step.to_string()).unwrap_or_default(),
                ]),
            }
        }
        rows.push(row);
    }
    rows
}

fn runs_csv(rec: &SweepRecord) -> String {
    csv(&run_rows(rec, Layout::Csv))
}

fn variant_rows(rec: &SweepRecord, md: bool) -> Vec<Vec<String>> {
    let keys: Vec<&String> = rec.varied.iter().filter(|k| *k != "run.seed").collect();
    let mut header = vec!["variant".to_string(), "finished".to_string()];
    header.extend(keys.iter().map(|k| k.to_string()));
    for m in &rec.metrics {
        if md {
            header.push(format!("{m} (mean ± 95% CI, std)"));
        } else {
            header.extend(["mean", "std", "ci95"].iter().map(|s| format!("{m} {s}")));
        }
    }
    let mut rows = vec![header];
    for v in &rec.variants {
        let n = v.metrics.values().map(|s| s.n).max().unwrap_or(0);
        let mut row = vec![v.group.clone(), format!("{n}/{}", v.runs)];
        row.extend(
            keys.iter()
                .map(|k| v.values.get(*k).cloned().unwrap_or_else(|| "-".into())),
        );
        for m in &rec.metrics {
            let s = v.metrics.get(m).copied().unwrap_or(SpreadRecord {
                n: 0,
                mean: f64::NAN,
                std: f64::NAN,
                ci95: f64::NAN,
            });
            if md {
                row.push(match (s.n, s.ci95.is_nan()) {
                    (0, _) => String::new(),
                    (_, true) => format!("{} (one seed)", num(s.mean)),
                    _ => format!("{} ± {}, {}", num(s.mean), num(s.ci95), num(s.std)),
                });
            } else {
                row.extend([num(s.mean), num(s.std), num(s.ci95)]);
            }
        }
        rows.push(row);
    }
    rows
}

fn variants_csv(rec: &SweepRecord) -> String {
    csv(&variant_rows(rec, false))
}

fn md_table(rows: &[Vec<String>]) -> String {
    let esc = |s: &String| s.replace('|', "\\|");
    let mut out = format!("| {} |\n", rows[0].iter().map(esc).collect::<Vec<_>>().join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(rows[0].len())));
    for r in &rows[1..] {
        out.push_str(&format!("| {} |\n", r.iter().map(esc).collect::<Vec<_>>().join(" | ")));
    }
    out
}

/// Columns padded to their widest cell, for a terminal.
pub fn text_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s:<w$}", w = width[c]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The runs table for a terminal (final values only), then the tables over seeds and of the
/// held-out change when there are any.
pub fn runs_text(rec: &SweepRecord) -> String {
    let mut s = text_table(&run_rows(rec, Layout::Text));
    if !rec.variants.is_empty() {
        s.push('\n');
        s.push_str(&text_table(&variant_rows(rec, true)));
    }
    if !rec.heldout.is_empty() {
        s.push_str("\nheld-out change over step 0 (95 % paired-bootstrap interval over items):\n");
        s.push_str(&text_table(&heldout_rows(rec, true)));
    }
    s
}

fn markdown(dir: &Path, rec: &SweepRecord, plots: &[(String, PathBuf, Vec<(String, String)>)]) -> String {
    let mut s = format!("# Sweep `{}`\n\n", rec.name);
    s.push_str(&format!(
        "{} runs of `{}` (sweep file `{}`): {} finished, {} failed, {} interrupted, {} pending.\n\n",
        rec.runs.len(),
        rec.base,
        rec.file,
        rec.count(Status::Finished),
        rec.count(Status::Failed),
        rec.count(Status::Interrupted),
        rec.count(Status::Pending) + rec.count(Status::Running),
    ));
    s.push_str(&format!(
        "TensorBoard, every run overlaid: `tensorboard --logdir {}`\n\n",
        dir.display()
    ));
    s.push_str("## Runs\n\nfinal: value at the last step; best: the largest value and its step.\n\n");
    s.push_str(&md_table(&run_rows(rec, Layout::Markdown)));
    if !rec.variants.is_empty() {
        s.push_str("\n## Over seeds\n\nFinal values of the finished runs of each variant: mean ± half-width of the 95 % confidence interval (Student's t), then the sample standard deviation.\n\n");
        s.push_str(&md_table(&variant_rows(rec, true)));
    }
    if !rec.heldout.is_empty() {
        s.push_str(&format!(
            "\n## Held-out change over the untrained model\n\nGreedy scores of the held-out migrations at step 0 and at each run's last evaluation (`heldout.jsonl`), items paired; `exact` is the share with EM = 1. Change: mean over items of (end - step 0), each item averaged over the variant's finished runs; 95 % interval: paired bootstrap over items ({} resamples, seeded). Change per run: each seed alone. Copy: the same items scored with the old code as the answer, correctly formatted (`heldout-copy.jsonl`); end - copy: whether the trained model beats copying, paired over items.\n\n",
            super::heldout_change::BOOTSTRAP_RESAMPLES
        ));
        s.push_str(&md_table(&heldout_rows(rec, true)));
    }
    let failed: Vec<&RunRecord> = rec.runs.iter().filter(|r| r.status == Status::Failed).collect();
    if !failed.is_empty() {
        s.push_str("\n## Failed runs\n");
        for r in failed {
            let code = r
                .exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none (killed)".into());
            s.push_str(&format!(
                "\n### `{}` (exit code {code}, log `{}`)\n\n```\n{}\n```\n",
                r.name,
                r.log_file,
                r.log_tail.join("\n")
            ));
        }
    }
    if !plots.is_empty() {
        s.push_str("\n## Plots\n\nOne line per run against the step; the y axis spans the values shown (min and max under each plot).\n");
        for (metric, path, legend) in plots {
            let rel = path.strip_prefix(dir).unwrap_or(path);
            s.push_str(&format!("\n### {metric}\n\n![{metric}]({})\n\n", rel.display()));
            for (run, colour) in legend {
                s.push_str(&format!("- <span style=\"color:{colour}\">■</span> `{colour}` {run}\n"));
            }
        }
    }
    s
}

/// What `--dry-run` prints: the runs and the values of the keys in which they differ.
pub fn describe(plan: &Plan) -> String {
    let mut rows = vec![std::iter::once("run".to_string())
        .chain(plan.varied.iter().cloned())
        .collect::<Vec<_>>()];
    for r in &plan.runs {
        rows.push(
            std::iter::once(r.name.clone())
                .chain(plan.varied.iter().map(|k| Plan::value(r, k)))
                .collect(),
        );
    }
    let mut out = format!(
        "sweep `{}`: {} runs of {} into {}\n",
        plan.name,
        plan.runs.len(),
        plan.base.display(),
        plan.dir.display()
    );
    if plan.varied.is_empty() {
        out.push_str("(the runs' resolved specs do not differ)\n");
    }
    out.push_str(&text_table(&rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_shows_each_run_by_its_varied_values() {
        let d = tempfile::tempdir().unwrap();
        let p = super::super::plan::tests::four_axis_plan(d.path());
        assert!(describe(&p).contains("format+0.5*em"));
    }

    #[test]
    fn glob_matches_segments_and_wholes() {
        assert!(glob("reward/*/mean", "reward/format/mean"));
        assert!(!glob("reward/*/mean", "reward/format/std"));
        assert!(glob("eval/*", "eval/pass@1"));
        assert!(glob("loss", "loss") && !glob("loss", "loss2"));
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(
            csv(&[vec!["a,b".into(), "c\"d".into(), "e".into()]]),
            "\"a,b\",\"c\"\"d\",e\n"
        );
    }
}
