//! `recode bench step`: the configuration users train, timed per phase. Runs `training.steps = N`
//! of the spec through the same path as `recode run` (checkpoints, evaluation and held-out scoring off), in a
//! temporary output folder, then prints the phases of the first step (warm-up: first-touch of
//! the weights, allocator growth) apart from the mean of the others.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// (label, metric holding its seconds, metric holding its tokens).
const PHASES: [(&str, &str, &str); 5] = [
    ("generation", "time/generation_s", "tokens/generated"),
    ("scoring", "time/scoring_s", ""),
    ("reference", "time/reference_s", "tokens/per_pass"),
    ("old log-probs", "time/old_logprobs_s", "tokens/per_pass"),
    ("update", "time/update_s", "tokens/per_pass"),
];

pub fn bench_step(spec: &Path, steps: usize, sets: &[String], keep: bool) -> Result<()> {
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let out = std::env::temp_dir().join(format!("recode-bench-step-{}", std::process::id()));
    let mut all = sets.to_vec();
    all.extend([
        format!("training.steps={steps}"),
        "training.checkpoint_every=0".into(),
        "eval.every=0".into(),
        // Held-out scoring runs outside the steps; it is timed by `recode run`, not here.
        "heldout.every=0".into(),
        format!("run.output_dir={}", Value::String(out.display().to_string())),
    ]);
    let host = crate::host::Host::new();
    let (loaded, plugins) = host.info(true).load_for_run(spec, &all)?;
    let s = &loaded.spec;
    let sft = s.training.mode == recode_core::spec::TrainingMode::Sft;
    if sft {
        println!(
            "spec {}: SFT (training.mode = \"sft\"), adapter {:?} r{}, {} row(s) per step, backend {:?}",
            spec.display(),
            s.model.adapter.kind,
            s.model.adapter.rank,
            s.training.prompts_per_step,
            s.backend.kind
        );
    } else {
        println!(
        "spec {}: model {}, adapter {:?} r{}, algorithm {}, {} prompt(s) x {} completions, {} new tokens, backend {:?}",
        spec.display(),
        if s.model.id.is_empty() {
            &s.model.path
        } else {
            &s.model.id
        },
        s.model.adapter.kind,
        s.model.adapter.rank,
        s.algorithm.name,
        s.training.prompts_per_step,
        s.generation.num_generations,
        s.generation.max_new_tokens,
        s.backend.kind,
    );
    }
    recode_core::train::run(
        &host.registry,
        s,
        &loaded.annotated_toml()?,
        plugins,
        recode_core::train::Resume::default(),
        None,
        &|l| eprintln!("{l}"),
    )?;
    let summary = find_summary(&out)?;
    let history: Vec<Value> = summary["steps"].as_array().cloned().unwrap_or_default();
    print_table(&history, if sft { None } else { Some(s.algorithm.name.as_str()) });
    println!(
        "peak resident memory: {:.2} GiB",
        recode_model::bench::peak_rss_bytes()? as f64 / (1u64 << 30) as f64
    );
    if keep {
        println!("run folder: {}", out.display());
    } else {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    Ok(())
}

fn find_summary(out: &Path) -> Result<Value> {
    let mut found: Vec<PathBuf> = vec![];
    for name in std::fs::read_dir(out)?.flatten() {
        for stamp in std::fs::read_dir(name.path())?.flatten() {
            let p = stamp.path().join("summary.json");
            if p.exists() {
                found.push(p);
            }
        }
    }
    let [p] = found.as_slice() else {
        bail!(
            "expected one summary.json under {}, found {}",
            out.display(),
            found.len()
        )
    };
    Ok(serde_json::from_str(&std::fs::read_to_string(p)?)?)
}

fn get(m: &Value, k: &str) -> f64 {
    m.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// `algorithm`: None for an SFT spec (only the update runs).
fn print_table(history: &[Value], algorithm: Option<&str>) {
    let rest = &history[1.min(history.len())..];
    let mean = |k: &str| rest.iter().map(|m| get(m, k)).sum::<f64>() / rest.len().max(1) as f64;
    println!(
        "\n{:<14} {:>10} {:>10} {:>10}   {:>10} {:>10} {:>10}",
        "phase", "step 1 tok", "s", "tok/s", "later tok", "s", "tok/s"
    );
    for (label, secs, toks) in PHASES {
        let (s1, t1) = (
            get(&history[0], secs),
            if toks.is_empty() { 0.0 } else { get(&history[0], toks) },
        );
        let (s2, t2) = (mean(secs), if toks.is_empty() { 0.0 } else { mean(toks) });
        // A phase that did not run still takes a timer read (nanoseconds).
        if s1 < 1e-3 && s2 < 1e-3 {
            let why = match (label, algorithm) {
                (_, None) => "not in SFT (the update is the whole step)".into(),
                ("reference", Some(a)) => format!("skipped: {a} has no KL term"),
                ("old log-probs", _) => "skipped: one pass per rollout (the current policy is the old one)".into(),
                _ => "0".into(),
            };
            println!("{label:<14} {why}");
            continue;
        }
        let rate = |t: f64, s: f64| {
            if t > 0.0 && s > 0.0 {
                format!("{:.1}", t / s)
            } else {
                "-".into()
            }
        };
        println!(
            "{label:<14} {t1:>10.0} {s1:>10.2} {:>10}   {t2:>10.0} {s2:>10.2} {:>10}",
            rate(t1, s1),
            rate(t2, s2)
        );
    }
    let later = if rest.is_empty() {
        "-".into()
    } else {
        format!("{:.2}", mean("time/step_s"))
    };
    println!(
        "{:<14} {:>10} {:>10.2} {:>10}   {:>10} {:>10}",
        "step",
        "",
        get(&history[0], "time/step_s"),
        "",
        "",
        later
    );
    println!("({} step(s) after the first)", rest.len());
}
