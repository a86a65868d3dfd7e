//! A sweep file and its expansion into runs.
//!
//! ```toml
//! base = "../experiments/tiny-grpo.toml"   # relative to this file
//! name = "lr-sweep"                        # default: the file's stem
//! set = { "training.steps" = 20 }          # overrides for every run
//! seeds = [1, 2, 3]                        # an axis over run.seed
//! metrics = ["reward/*/mean", "eval/*"]    # summary columns ('*' matches anything)
//!
//! [[variant]]                              # named variants: any keys
//! name = "dapo"
//! set = { "algorithm.name" = "dapo", "generation.max_num_gen_batches" = 8 }
//!
//! [[variant]]                              # a variant may start from another experiment
//! name = "dr_grpo"                         # (overrides merge tables key by key, so another
//! base = "../experiments/other.toml"       # algorithm's options need their own base)
//!
//! [grid]                                   # cartesian product
//! "training.lr" = [0.003, 0.01]
//!
//! [zip]                                    # equal-length lists, taken together
//! "generation.num_generations" = [4, 8]
//! "training.micro_batch_size" = [8, 16]
//! ```
//!
//! Runs = variants x zip rows x grid points x seeds, named from their axis values
//! (`dapo-lr=0.003-seed=1`). Overrides apply in the order: `set`, the variant's `set`, zip, grid,
//! seed, then the command line's `--set`.

use crate::config::{self, LoadOptions};
use crate::spec::Spec;
use crate::validate::SpecChecker;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    base: String,
    name: Option<String>,
    #[serde(default)]
    set: BTreeMap<String, toml::Value>,
    #[serde(default)]
    seeds: Vec<u64>,
    #[serde(default)]
    metrics: Vec<String>,
    #[serde(default)]
    variant: Vec<VariantFile>,
    #[serde(default)]
    grid: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    zip: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    slurm: SlurmSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantFile {
    name: String,
    /// Another experiment to start from (relative to the sweep file): for variants whose
    /// sections cannot be reached by overrides, e.g. another algorithm's options.
    base: Option<String>,
    #[serde(default)]
    set: BTreeMap<String, toml::Value>,
}

/// Summary columns when a sweep file names none.
pub const DEFAULT_METRICS: &[&str] = &["reward/total/mean", "reward/*/mean", "eval/*"];

/// One run of a sweep, resolved and validated.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// Unique in the sweep; also the run's `run.name`.
    pub name: String,
    /// The `[[variant]]` it came from ("" without variants).
    pub variant: String,
    /// The experiment it starts from: the sweep's base or its variant's.
    pub base: PathBuf,
    /// The name without the seed: runs that differ only in their seed share it.
    pub group: String,
    pub seed: Option<u64>,
    /// Every override, in the order applied, as `key=value` (TOML values).
    pub sets: Vec<String>,
    pub spec: Spec,
    /// The resolved spec as TOML, each value annotated with its origin.
    pub annotated: String,
}

/// A sweep file expanded: its runs, where they go, and what differs between them.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub file: PathBuf,
    pub base: PathBuf,
    /// The sweep folder: `<base run.output_dir>/<name>` unless given.
    pub dir: PathBuf,
    pub runs: Vec<PlannedRun>,
    /// Dotted keys of the resolved specs whose values are not the same in every run.
    pub varied: Vec<String>,
    /// Summary metric patterns.
    pub metrics: Vec<String>,
    /// Job settings for `--executor slurm` (`[slurm]` in the sweep file).
    pub slurm: SlurmSpec,
}

/// How a sweep file is expanded.
#[derive(Default)]
pub struct ExpandOptions {
    /// `key=value` overrides applied to every run, last.
    pub sets: Vec<String>,
    /// The sweep folder (default `<base run.output_dir>/<sweep name>`).
    pub dir: Option<PathBuf>,
}

/// A sweep file has a `base`; an experiment does not.
pub fn is_sweep_file(file: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let t: toml::Table = toml::from_str(&text).map_err(|e| anyhow!("{}: invalid TOML: {e}", file.display()))?;
    Ok(t.contains_key("base"))
}

/// Keys a sweep sets itself.
const RESERVED: &[&str] = &["run.name", "run.output_dir"];

/// Expand a sweep file into runs and validate every one before returning; all problems are
/// reported together, each naming the run, its variant and the key.
pub fn expand(file: &Path, opts: &ExpandOptions, checker: &dyn SpecChecker) -> Result<Plan> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read sweep file {}", file.display()))?;
    let f: SweepFile = toml::from_str(&text).map_err(|e| anyhow!("{}: {}", file.display(), e.message().trim()))?;
    let at = |what: String| anyhow!("{}: {what}", file.display());
    let base = file.parent().unwrap_or(Path::new(".")).join(&f.base);
    if !base.exists() {
        return Err(at(format!("key `base`: {} does not exist", base.display())));
    }
    let name = f
        .name
        .clone()
        .unwrap_or_else(|| file.file_stem().and_then(|s| s.to_str()).unwrap_or("sweep").to_string());
    if sanitize(&name) != name || name.is_empty() {
        return Err(at(format!(
            "key `name`: `{name}` must be letters, digits and -_.=+ only"
        )));
    }

    // Overrides by source, checked for keys the sweep owns.
    let mut sources: Vec<(String, &BTreeMap<String, toml::Value>)> = vec![("set".into(), &f.set)];
    for v in &f.variant {
        sources.push((format!("variant `{}`", v.name), &v.set));
    }
    for (src, table) in &sources {
        for key in table.keys() {
            if RESERVED.contains(&key.as_str()) {
                return Err(at(format!(
                    "{src}: key `{key}` is set by the sweep itself (run names come from the axes)"
                )));
            }
            if key == "run.seed" && !f.seeds.is_empty() {
                return Err(at(format!("{src}: key `run.seed` conflicts with `seeds`")));
            }
        }
    }
    for key in f.grid.keys().chain(f.zip.keys()) {
        if RESERVED.contains(&key.as_str()) || (key == "run.seed" && !f.seeds.is_empty()) {
            return Err(at(format!(
                "axis key `{key}` is set by the sweep itself; use `seeds` for run.seed"
            )));
        }
    }
    if let Some(k) = f.grid.keys().find(|k| f.zip.contains_key(*k)) {
        return Err(at(format!("key `{k}` is both in [grid] and in [zip]")));
    }

    // Axes: each a list of points; a point is (overrides, name label).
    let mut variants: Vec<(String, PathBuf, Vec<(String, toml::Value)>)> = Vec::new();
    for v in &f.variant {
        if v.name.is_empty() || sanitize(&v.name) != v.name {
            return Err(at(format!(
                "variant `{}`: key `name` must be non-empty, letters, digits and -_.=+ only",
                v.name
            )));
        }
        if variants.iter().any(|(n, _, _)| n == &v.name) {
            return Err(at(format!("variant `{}` appears twice", v.name)));
        }
        let vbase = match &v.base {
            None => base.clone(),
            Some(b) => file.parent().unwrap_or(Path::new(".")).join(b),
        };
        if !vbase.exists() {
            return Err(at(format!(
                "variant `{}`: key `base`: {} does not exist",
                v.name,
                vbase.display()
            )));
        }
        variants.push((
            v.name.clone(),
            vbase,
            v.set.iter().map(|(k, x)| (k.clone(), x.clone())).collect(),
        ));
    }
    if variants.is_empty() {
        variants.push((String::new(), base.clone(), vec![]));
    }
    let labels = short_labels(f.grid.keys().chain(f.zip.keys()));
    let zip_rows = zip_points(&f.zip, &labels).map_err(at)?;
    let grid_points = grid_points(&f.grid, &labels).map_err(at)?;
    let seed_points: Vec<Option<u64>> = if f.seeds.is_empty() {
        vec![None]
    } else {
        f.seeds.iter().map(|s| Some(*s)).collect()
    };
    if let Some(dup) = f.seeds.iter().enumerate().find(|(i, s)| f.seeds[..*i].contains(s)) {
        return Err(at(format!("key `seeds`: seed {} appears twice", dup.1)));
    }

    let common: Vec<String> = f.set.iter().map(|(k, x)| format!("{k}={x}")).collect();
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => {
            let sets: Vec<String> = common.iter().chain(&opts.sets).cloned().collect();
            let loaded = config::load(&base, &LoadOptions { sets, env: true })
                .with_context(|| format!("{}: base {}", file.display(), base.display()))?;
            PathBuf::from(&loaded.spec.run.output_dir).join(&name)
        }
    };

    let mut drafts = Vec::new();
    for (vname, vbase, vsets) in &variants {
        for (zsets, zlabel) in &zip_rows {
            for (gsets, glabel) in &grid_points {
                for seed in &seed_points {
                    let mut parts: Vec<String> = Vec::new();
                    if !vname.is_empty() {
                        parts.push(vname.clone());
                    }
                    parts.extend(zlabel.iter().cloned());
                    parts.extend(glabel.iter().cloned());
                    let group = if parts.is_empty() {
                        "base".to_string()
                    } else {
                        sanitize(&parts.join("-"))
                    };
                    let name = match seed {
                        Some(s) if parts.is_empty() => format!("seed={s}"),
                        Some(s) => format!("{group}-seed={s}"),
                        None => group.clone(),
                    };
                    let mut sets = common.clone();
                    sets.extend(vsets.iter().chain(zsets).chain(gsets).map(|(k, x)| format!("{k}={x}")));
                    if let Some(s) = seed {
                        sets.push(format!("run.seed={s}"));
                    }
                    sets.extend(opts.sets.iter().cloned());
                    sets.push(format!("run.name={}", toml::Value::String(name.clone())));
                    sets.push(format!(
                        "run.output_dir={}",
                        toml::Value::String(dir.display().to_string())
                    ));
                    drafts.push((name, vname.clone(), vbase.clone(), group, *seed, sets));
                }
            }
        }
    }
    check_unique(&drafts.iter().map(|d| d.0.clone()).collect::<Vec<_>>()).map_err(at)?;

    // Validate everything before anything runs.
    let mut problems = Vec::new();
    let mut runs = Vec::new();
    let total = drafts.len();
    for (name, variant, base, group, seed, sets) in drafts {
        let who = if variant.is_empty() {
            format!("run `{name}`")
        } else {
            format!("run `{name}` (variant `{variant}`)")
        };
        match checker
            .load_checked(&base, &sets)
            .and_then(|l| Ok((l.annotated_toml()?, l.spec)))
        {
            Ok((annotated, spec)) => {
                if spec.generation.max_num_gen_batches == 0 {
                    problems.push(format!(
                        "{who}: key `generation.max_num_gen_batches` = 0 (unlimited resampling) could hang the sweep; \
                         give a bound (the default is 4)"
                    ));
                }
                runs.push(PlannedRun {
                    name,
                    variant,
                    base,
                    group,
                    seed,
                    sets,
                    spec,
                    annotated,
                });
            }
            Err(e) => problems.push(format!("{who}: {}", format!("{e:#}").replace('\n', "\n    "))),
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}: {} problems in {total} runs; nothing was started:\n  {}",
            file.display(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    let varied = varied_keys(&runs)?;
    let metrics = if f.metrics.is_empty() {
        DEFAULT_METRICS.iter().map(|s| s.to_string()).collect()
    } else {
        f.metrics
    };
    Ok(Plan {
        name,
        file: file.to_path_buf(),
        base,
        dir,
        runs,
        varied,
        metrics,
        slurm: f.slurm,
    })
}

/// `training.lr` -> `lr`, unless two axis keys end the same; then the whole key.
fn short_labels<'a>(keys: impl Iterator<Item = &'a String>) -> BTreeMap<String, String> {
    let keys: Vec<&String> = keys.collect();
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    keys.iter()
        .map(|k| {
            let short = last(k);
            let clash = keys.iter().filter(|o| last(o) == short).count() > 1;
            ((*k).clone(), if clash { (*k).clone() } else { short })
        })
        .collect()
}

type Point = (Vec<(String, toml::Value)>, Vec<String>);

fn zip_points(
    zip: &BTreeMap<String, Vec<toml::Value>>,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<Point>, String> {
    let Some(n) = zip.values().map(Vec::len).next() else {
        return Ok(vec![(vec![], vec![])]);
    };
    if let Some((k, v)) = zip.iter().find(|(_, v)| v.len() != n) {
        let lens: Vec<String> = zip.iter().map(|(k, v)| format!("`{k}` {}", v.len())).collect();
        return Err(format!(
            "[zip] lists must have equal lengths; `{k}` has {} ({})",
            v.len(),
            lens.join(", ")
        ));
    }
    if n == 0 {
        return Err("[zip] lists are empty".into());
    }
    Ok((0..n)
        .map(|i| {
            let sets = zip.iter().map(|(k, v)| (k.clone(), v[i].clone())).collect();
            let names = zip
                .iter()
                .map(|(k, v)| format!("{}={}", labels[k], label(&v[i], i)))
                .collect();
            (sets, names)
        })
        .collect())
}

fn grid_points(
    grid: &BTreeMap<String, Vec<toml::Value>>,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<Point>, String> {
    let mut points: Vec<Point> = vec![(vec![], vec![])];
    for (key, values) in grid {
        if values.is_empty() {
            return Err(format!("[grid] key `{key}` has no values"));
        }
        points = points
            .into_iter()
            .flat_map(|(sets, names)| {
                values.iter().enumerate().map(move |(i, x)| {
                    let mut s = sets.clone();
                    s.push((key.clone(), x.clone()));
                    let mut n = names.clone();
                    n.push(format!("{}={}", labels[key], label(x, i)));
                    (s, n)
                })
            })
            .collect();
    }
    Ok(points)
}

/// A value as it appears in a run name: scalars as written, reward lists by their names,
/// anything else by its 1-based position in the axis.
fn label(v: &toml::Value, index: usize) -> String {
    match v {
        toml::Value::String(s) => sanitize(s),
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => v.to_string(),
        toml::Value::Array(a) if a.iter().all(|x| x.get("name").and_then(|n| n.as_str()).is_some()) => {
            sanitize(&render(v))
        }
        _ => format!("{}", index + 1),
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn check_unique(names: &[String]) -> Result<(), String> {
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(format!(
                "two runs are both named `{n}`; give the variants or axis values distinct names"
            ));
        }
    }
    Ok(())
}

/// A resolved value for tables and names: strings unquoted, reward lists as `format+0.5*em`.
pub fn render(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a)
            if !a.is_empty() && a.iter().all(|x| x.get("name").and_then(|n| n.as_str()).is_some()) =>
        {
            a.iter()
                .map(|x| {
                    let name = x.get("name").and_then(|n| n.as_str()).unwrap_or_default();
                    match x.get("weight").and_then(|w| w.as_float()) {
                        Some(w) if w != 1.0 => format!("{w}*{name}"),
                        _ => name.to_string(),
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        }
        toml::Value::Table(t) if t.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

fn varied_keys(runs: &[PlannedRun]) -> Result<Vec<String>> {
    let flat: Vec<BTreeMap<String, toml::Value>> = runs.iter().map(|r| r.spec.flatten()).collect::<Result<_>>()?;
    let mut keys: Vec<String> = flat.iter().flat_map(|m| m.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter(|k| !RESERVED.contains(&k.as_str()))
        .filter(|k| flat.iter().any(|m| m.get(k) != flat[0].get(k)))
        .collect())
}

impl Plan {
    /// A resolved value of a run for tables: `-` where the run's spec lacks the key.
    pub fn value(run: &PlannedRun, key: &str) -> String {
        run.spec
            .flatten()
            .ok()
            .and_then(|m| m.get(key).map(render))
            .unwrap_or_else(|| "-".into())
    }
}

/// `[slurm]` in a sweep file: the job's resources, one array task per run. Empty values are not
/// passed, so the cluster's defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmSpec {
    pub partition: String,
    /// Wall-time limit per task, in sbatch's format ("2:00:00").
    pub time: String,
    /// CPUs per task (0: the cluster default).
    pub cpus: usize,
    /// Memory per task ("16G"); ask for it, or a task may wait for a whole node's memory.
    pub mem: String,
    /// Generic resources per task ("gpu:1").
    pub gres: String,
    pub account: String,
    /// At most this many tasks at once (`--array=...%N`; 0: no limit).
    pub max_parallel: usize,
    /// Further lines for the script's header, verbatim (e.g. "#SBATCH --qos=high").
    pub extra: Vec<String>,
}

/// `*` matches any run of characters.
pub fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else { return false };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::LoadedSpec;

    /// Loads without a registry and refuses one range, so the planner's error paths are seen.
    pub(crate) struct TestChecker;
    impl SpecChecker for TestChecker {
        fn load_checked(&self, base: &Path, sets: &[String]) -> Result<LoadedSpec> {
            let l = config::load(
                base,
                &LoadOptions {
                    sets: sets.to_vec(),
                    env: false,
                },
            )?;
            if l.spec.training.lr > 1.0 {
                bail!("key `training.lr`: must be at most 1");
            }
            Ok(l)
        }
    }

    pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub(crate) fn base(dir: &Path) -> PathBuf {
        write(dir, "base.toml", "[run]\nname = \"b\"\n[[reward]]\nname = \"format\"\n")
    }

    /// Two variants (one with a weighted reward list), a grid, a zip and two seeds.
    pub(crate) fn four_axis_plan(dir: &Path) -> Plan {
        base(dir);
        let f = write(
            dir,
            "s.toml",
            r#"base = "base.toml"
seeds = [1, 2]
[[variant]]
name = "a"
[[variant]]
name = "b"
set = { "algorithm.name" = "dapo", reward = [{ name = "format" }, { name = "em", weight = 0.5 }] }
[grid]
"training.lr" = [0.1, 0.2]
[zip]
"generation.num_generations" = [4, 8]
"generation.top_k" = [0, 5]
"#,
        );
        expand(&f, &ExpandOptions::default(), &TestChecker).unwrap()
    }

    #[test]
    fn variants_zip_grid_and_seeds_multiply_with_readable_unique_names() {
        let d = tempfile::tempdir().unwrap();
        let p = four_axis_plan(d.path());
        assert_eq!(p.runs.len(), 2 * 2 * 2 * 2);
        assert_eq!(p.runs[0].name, "a-num_generations=4-top_k=0-lr=0.1-seed=1");
        assert_eq!(p.runs[0].group, "a-num_generations=4-top_k=0-lr=0.1");
        let b = p.runs.iter().find(|r| r.variant == "b").unwrap();
        assert_eq!(b.spec.algorithm.name, "dapo");
        assert_eq!(Plan::value(b, "reward"), "format+0.5*em");
        assert_eq!(p.dir, Path::new("runs").join("s"));
        for k in [
            "algorithm.name",
            "generation.num_generations",
            "generation.top_k",
            "reward",
            "run.seed",
            "training.lr",
        ] {
            assert!(p.varied.contains(&k.to_string()), "{k} not in {:?}", p.varied);
        }
        assert!(!p.varied.contains(&"run.name".to_string()));
    }

    #[test]
    fn problems_name_the_run_the_variant_and_the_key_and_nothing_is_planned() {
        let d = tempfile::tempdir().unwrap();
        base(d.path());
        let f = write(d.path(), "s.toml", "base = \"base.toml\"\n[[variant]]\nname = \"ok\"\n[[variant]]\nname = \"bad\"\nset = { \"training.lr\" = 5.0 }\n");
        let e = format!("{:#}", expand(&f, &ExpandOptions::default(), &TestChecker).unwrap_err());
        assert!(
            e.contains("run `bad` (variant `bad`)") && e.contains("training.lr"),
            "{e}"
        );
        let f = write(
            d.path(),
            "u.toml",
            "base = \"base.toml\"\n[[variant]]\nname = \"x\"\nset = { \"generation.max_num_gen_batches\" = 0 }\n",
        );
        let e = format!("{:#}", expand(&f, &ExpandOptions::default(), &TestChecker).unwrap_err());
        assert!(
            e.contains("variant `x`") && e.contains("generation.max_num_gen_batches"),
            "{e}"
        );
        let f = write(
            d.path(),
            "z.toml",
            "base = \"base.toml\"\n[zip]\n\"training.lr\" = [0.1]\n\"generation.top_k\" = [1, 2]\n",
        );
        let e = format!("{:#}", expand(&f, &ExpandOptions::default(), &TestChecker).unwrap_err());
        assert!(e.contains("equal lengths"), "{e}");
        let f = write(
            d.path(),
            "r.toml",
            "base = \"base.toml\"\nset = { \"run.name\" = \"x\" }\n",
        );
        assert!(format!("{:#}", expand(&f, &ExpandOptions::default(), &TestChecker).unwrap_err()).contains("run.name"));
    }

    #[test]
    fn colliding_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        base(d.path());
        // "a b" and "a_b" both sanitise to `a_b`.
        let f = write(
            d.path(),
            "s.toml",
            "base = \"base.toml\"\n[grid]\n\"prompt.system\" = [\"a b\", \"a_b\"]\n",
        );
        let e = format!("{:#}", expand(&f, &ExpandOptions::default(), &TestChecker).unwrap_err());
        assert!(e.contains("both named `system=a_b`"), "{e}");
    }
}
