//! `recode plugins`, `recode data inspect`, `recode reward score`.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use recode_core::api::RewardInput;
use recode_core::plugins;
use recode_core::spec::{DataSpec, Options, RewardSpec};
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Args)]
pub struct PluginsArgs {
    /// Folders to search for plugin shared libraries (.so / .dylib) and Python reward files (.py).
    #[arg(long = "dir")]
    dirs: Vec<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn plugins(a: PluginsArgs) -> Result<()> {
    let reg = crate::host::registry();
    let mut all = reg.builtins();
    let mut problems = Vec::new();
    for dir in &a.dirs {
        let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read plugin folder {}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths.iter().filter(|p| p.extension().is_some_and(|x| x == "py")) {
            all.extend(recode_core::reward_py::describe_file(p));
        }
        for p in paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "so" || x == "dylib" || x == "dll"))
        {
            match recode_core::plugin_abi::describe(&p) {
                Ok(info) => all.push(info),
                Err(e) => problems.push(format!("{}: {e:#}", p.display())),
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        println!(
            "{:<10} {:<14} {:<8} {:<40} description",
            "kind", "name", "version", "source"
        );
        for p in &all {
            println!(
                "{:<10} {:<14} {:<8} {:<40} {}",
                p.kind.to_string(),
                p.name,
                p.version,
                p.source,
                p.description
            );
        }
    }
    for p in problems {
        eprintln!("not a usable plugin: {p}");
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Counts per library and per defect.
    Inspect {
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn data(c: DataCommand) -> Result<()> {
    match c {
        DataCommand::Inspect { file, json } => {
            // Inspect reports every defect; it filters nothing out of the counts.
            let spec = DataSpec {
                drop_unparsable_targets: false,
                drop_unchanged: false,
                ..DataSpec::default()
            };
            let report = recode_core::task::data::inspect(&file, &spec)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(())
        }
    }
}

#[derive(Subcommand)]
pub enum RewardCommand {
    /// Score JSON lines `{"completion": ..., "target": ...}`; prints one JSON line per input.
    Score(ScoreArgs),
}

#[derive(Args)]
pub struct ScoreArgs {
    /// Reward: a built-in name or plugin path, optionally `:WEIGHT` (repeatable).
    #[arg(long = "reward", value_name = "NAME[:WEIGHT]")]
    rewards: Vec<String>,
    /// Take the [[reward]] list from an experiment spec instead.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Reward option `KEY=VALUE` given to every --reward (value parsed as TOML).
    #[arg(long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,
    /// JSON lines with `completion`, `target` and optionally `prompt`, `completion_tokens`.
    #[arg(long)]
    input: PathBuf,
}

fn parse_reward_arg(arg: &str, options: &Options) -> Result<RewardSpec> {
    let (name, weight) = match arg.rsplit_once(':') {
        Some((n, w)) if w.parse::<f64>().is_ok() => (n, w.parse::<f64>()?),
        _ => (arg, 1.0),
    };
    Ok(RewardSpec {
        name: name.to_string(),
        weight,
        options: options.clone(),
        ..Default::default()
    })
}

#[derive(serde::Deserialize)]
struct ScoreLine {
    completion: String,
    target: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    completion_tokens: Option<usize>,
}

pub fn reward(c: RewardCommand) -> Result<()> {
    let RewardCommand::Score(a) = c;
    let reg = crate::host::registry();
    let mut options = Options::new();
    for o in &a.options {
        let (k, v) = recode_core::config::parse_set(o)?;
        options.insert(k, v);
    }
    let specs: Vec<RewardSpec> = match &a.spec {
        Some(path) => super::load_checked(path, &[])?.spec.reward,
        None => a
            .rewards
            .iter()
            .map(|r| parse_reward_arg(r, &options))
            .collect::<Result<_>>()?,
    };
    if specs.is_empty() {
        bail!("name at least one --reward (or --spec with [[reward]] entries)");
    }
    let rewards = plugins::weighted_rewards(&reg, &specs)?;
    let file = std::fs::File::open(&a.input).with_context(|| format!("cannot open {}", a.input.display()))?;
    let mut lines = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ScoreLine = serde_json::from_str(&line).map_err(|e| {
            anyhow!(
                "{}:{}: expected {{\"completion\": str, \"target\": str}}: {e}",
                a.input.display(),
                i + 1
            )
        })?;
        lines.push((i + 1, parsed));
    }
    let inputs: Vec<RewardInput> = lines
        .iter()
        .map(|(_, l)| RewardInput {
            prompt: &l.prompt,
            completion: &l.completion,
            target: &l.target,
            completion_tokens: l
                .completion_tokens
                .unwrap_or_else(|| l.completion.split_whitespace().count()),
            ..Default::default()
        })
        .collect();
    let mut totals = vec![0.0; inputs.len()];
    let mut components = vec![serde_json::Map::new(); inputs.len()];
    for r in &rewards {
        let scores = r
            .reward
            .score(&inputs)
            .with_context(|| format!("reward `{}`", r.label))?;
        if scores.len() != inputs.len() {
            bail!(
                "reward `{}` returned {} scores for {} inputs",
                r.label,
                scores.len(),
                inputs.len()
            );
        }
        for (i, s) in scores.iter().enumerate() {
            totals[i] += r.weight * s;
            components[i].insert(r.label.clone(), serde_json::json!(s));
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (i, (line, _)) in lines.iter().enumerate() {
        let v = serde_json::json!({"line": line, "reward": totals[i], "components": components[i]});
        writeln!(out, "{v}")?;
    }
    Ok(())
}
