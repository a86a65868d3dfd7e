//! Loading a spec: `extends` fragments, the file itself, `RECODE_SECTION__KEY` environment
//! overrides and `--set section.key=value` overrides, merged in that order (later wins), then
//! strictly decoded into [`Spec`]. Every value remembers where it came from.

use crate::spec::Spec;
use anyhow::{anyhow, bail, Context, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata};
use std::path::{Path, PathBuf};

/// A resolved spec and the figment that produced it (for provenance).
pub struct LoadedSpec {
    pub spec: Spec,
    /// The spec file, then every fragment it pulled in.
    pub files: Vec<PathBuf>,
    figment: Figment,
}

/// Environment variables starting with this prefix and containing `__` override keys:
/// `RECODE_TRAINING__LR=1e-5` sets `training.lr`.
pub const ENV_PREFIX: &str = "RECODE_";

/// Options for [`load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `section.key=value` overrides; the value is parsed as TOML, else taken as a string.
    pub sets: Vec<String>,
    /// Read `RECODE_*__*` environment overrides.
    pub env: bool,
}

pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedSpec> {
    let mut chain = Vec::new();
    collect_chain(path, &mut Vec::new(), &mut chain)?;
    let mut figment = Figment::from(Serialized::defaults(Spec::default()));
    for file in &chain {
        figment = figment.merge(Toml::file_exact(file));
    }
    if opts.env {
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
    }
    for set in &opts.sets {
        let (key, value) = parse_set(set)?;
        figment = figment.merge(Serialized::default(&key, value).profile(figment::Profile::Default));
    }
    let mut spec: Spec = figment.extract().map_err(|e| describe_figment_error(e, path))?;
    // Fragments' own `extends` were followed already; keep the top file's list for the record.
    spec.extends = read_extends(path)?;
    chain.reverse();
    Ok(LoadedSpec {
        spec,
        files: chain,
        figment,
    })
}

/// Depth-first: a file's fragments come before the file. Cycles are errors.
fn collect_chain(path: &Path, stack: &mut Vec<PathBuf>, out: &mut Vec<PathBuf>) -> Result<()> {
    let canon = path
        .canonicalize()
        .with_context(|| format!("spec file `{}` not found", path.display()))?;
    if stack.contains(&canon) {
        bail!("`extends` cycle: {} includes itself", path.display());
    }
    stack.push(canon.clone());
    let dir = canon.parent().map(Path::to_path_buf).unwrap_or_default();
    for frag in read_extends(path)? {
        let frag_path = dir.join(&frag);
        if !frag_path.exists() {
            bail!(
                "{}: `extends` names `{frag}`, but {} does not exist",
                path.display(),
                frag_path.display()
            );
        }
        collect_chain(&frag_path, stack, out)?;
    }
    stack.pop();
    if !out.contains(&canon) {
        out.push(canon);
    }
    Ok(())
}

fn read_extends(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read spec file `{}`", path.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| anyhow!("{}: invalid TOML: {e}", path.display()))?;
    match table.get("extends") {
        None => Ok(vec![]),
        Some(toml::Value::String(s)) => Ok(vec![s.clone()]),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                anyhow!(
                    "{}: key `extends`: expected a list of file paths (strings)",
                    path.display()
                )
            }),
        Some(_) => bail!(
            "{}: key `extends`: expected a file path or a list of file paths",
            path.display()
        ),
    }
}

/// `training.lr=1e-5` → ("training.lr", 1e-5). Values parse as TOML, falling back to a string.
pub fn parse_set(set: &str) -> Result<(String, toml::Value)> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| anyhow!("--set `{set}`: expected `section.key=value`"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|part| part.is_empty()) {
        bail!("--set `{set}`: the key must be a dotted path like `training.lr`");
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    Ok((key.to_string(), value))
}

fn source_name(md: &Metadata) -> String {
    match &md.source {
        Some(figment::Source::File(p)) => p.display().to_string(),
        // Defaults are the serialised `Spec`; every other value from code is a --set override.
        Some(figment::Source::Code(_)) if md.name.contains("spec::Spec") => "built-in default".into(),
        Some(figment::Source::Code(_)) => "--set".into(),
        _ if md.name.contains("environment") => "environment".into(),
        _ => md.name.to_string(),
    }
}

fn describe_figment_error(err: figment::Error, top: &Path) -> anyhow::Error {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = e
                .metadata
                .as_ref()
                .map(source_name)
                .unwrap_or_else(|| top.display().to_string());
            let what = e.kind.to_string();
            if key.is_empty() {
                format!("{origin}: {what}")
            } else {
                format!("{origin}: key `{key}`: {what}")
            }
        })
        .collect();
    anyhow!("invalid spec {}:\n  {}", top.display(), lines.join("\n  "))
}

impl LoadedSpec {
    /// Where the value at a dotted key came from: a file, the environment, --set, or the default.
    pub fn origin(&self, key: &str) -> String {
        self.figment
            .find_metadata(key)
            .map(source_name)
            .unwrap_or_else(|| "built-in default".into())
    }

    /// The resolved spec as TOML with each leaf's origin as a trailing comment.
    pub fn annotated_toml(&self) -> Result<String> {
        let value = toml::Value::try_from(&self.spec)?;
        let mut out = String::new();
        let table = value
            .as_table()
            .ok_or_else(|| anyhow!("spec did not serialise to a table"))?;
        // Top-level scalars first, as TOML requires.
        for (k, v) in table {
            if k == "extends" {
                // Already merged below; kept as a record only, so the resolved spec loads alone.
                out.push_str(&format!("# extends = {} (merged into this file)\n", inline(v)));
            } else if !matches!(v, toml::Value::Table(_)) && !is_table_array(v) {
                out.push_str(&format!("{k} = {}  # {}\n", inline(v), self.origin(k)));
            }
        }
        for (k, v) in table {
            if let toml::Value::Table(t) = v {
                self.write_table(&mut out, k, t);
            } else if is_table_array(v) {
                for item in v.as_array().into_iter().flatten() {
                    out.push_str(&format!("\n[[{k}]]  # {}\n", self.origin(k)));
                    for (ik, iv) in item.as_table().into_iter().flatten() {
                        out.push_str(&format!("{ik} = {}\n", inline(iv)));
                    }
                }
            }
        }
        Ok(out)
    }

    fn write_table(&self, out: &mut String, prefix: &str, table: &toml::Table) {
        out.push_str(&format!("\n[{prefix}]\n"));
        let mut nested = Vec::new();
        for (k, v) in table {
            let key = format!("{prefix}.{k}");
            match v {
                toml::Value::Table(t) if !t.is_empty() || !is_options(k) => nested.push((key, t)),
                _ => out.push_str(&format!("{k} = {}  # {}\n", inline(v), self.origin(&key))),
            }
        }
        for (key, t) in nested {
            self.write_table(out, &key, t);
        }
    }
}

fn is_options(key: &str) -> bool {
    key == "options"
}

fn is_table_array(v: &toml::Value) -> bool {
    matches!(v, toml::Value::Array(a) if !a.is_empty() && a.iter().all(|x| x.is_table()))
}

fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) if t.is_empty() => "{}".into(),
        toml::Value::Table(t) => {
            let parts: Vec<String> = t.iter().map(|(k, v)| format!("{k} = {}", inline(v))).collect();
            format!("{{ {} }}", parts.join(", "))
        }
        other => other.to_string(),
    }
}
