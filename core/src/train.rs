//! Training one spec end to end: run directory, data, model, rewards, algorithm, evaluators,
//! resume, the loop, and the summary (`summary.json` and the table `recode run` prints).

use crate::plugins::{self as plugin, Plugins};
use crate::progress::Progress;
use crate::registry::{ModelContext, Registry};
use crate::rundir::{latest_checkpoint, RunDir};
use crate::spec::Spec;
use crate::task::{data, prompt};
use crate::tb::HParamValue;
use crate::trainer::{Metrics, TaskItem, Trainer};
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How `train` starts: fresh, or from a run directory's newest checkpoint.
#[derive(Default)]
pub struct Resume<'a> {
    /// None: a fresh run; Some(""): the newest resumable run of the spec's name; Some(dir).
    pub from: Option<&'a str>,
    pub allow_spec_change: bool,
    /// Where to write the run directory's path as soon as it is known (a sweep reads it there).
    pub run_dir_file: Option<&'a Path>,
}

/// Build the model, data and evaluators a spec names and train with `plugins` (its rewards and
/// algorithm, built by the check that accepted the spec: `HostInfo::load_for_run`). Returns a
/// human-readable summary.
pub fn run(
    reg: &Registry,
    spec: &Spec,
    annotated: &str,
    plugins: Plugins,
    resume: Resume<'_>,
    max_steps: Option<usize>,
    report: &dyn Fn(&str),
) -> Result<String> {
    let out_dir = PathBuf::from(&spec.run.output_dir);
    let (run, checkpoint) = match resume.from {
        None => (RunDir::create(&out_dir, &spec.run.name)?, None),
        Some(dir) => {
            let root = if dir.is_empty() {
                RunDir::latest_resumable(&out_dir, &spec.run.name)?
            } else {
                PathBuf::from(dir)
            };
            let (_, ckpt) = latest_checkpoint(&root)?
                .ok_or_else(|| anyhow!("{} has no checkpoint to resume from", root.display()))?;
            (RunDir::open(root)?, Some(ckpt))
        }
    };
    if checkpoint.is_none() {
        run.write_file("spec.toml", annotated.as_bytes())?;
    }
    report(&format!("run directory: {}", run.root.display()));
    crate::reward_py::log_to(&run.root.join("log.txt"));
    if let Some(file) = resume.run_dir_file {
        crate::rundir::write_atomic(file, run.root.display().to_string().as_bytes())?;
    }

    let split_seed = if spec.data.split_seed >= 0 {
        spec.data.split_seed as u64
    } else {
        spec.run.seed
    };
    let dataset = data::load(&spec.data, Path::new("."), split_seed)?;
    report(&format!(
        "data: {} training rows, {} held out ({} read from {})",
        dataset.train.len(),
        dataset.heldout.len(),
        dataset.report.totals.rows,
        spec.data.path
    ));
    let t = Instant::now();
    let ctx = ModelContext {
        spec: &spec.model,
        backend: &spec.backend,
        training: &spec.training,
        seed: spec.run.seed,
    };
    let mut policy = crate::plugins::policy(reg, &ctx)?;
    let init = &spec.model.adapter.init;
    // A resumed run's checkpoint holds the weights; the warm start is for a fresh run only.
    if !init.is_empty() && checkpoint.is_none() {
        let dir = crate::load::adapter_weights_dir(Path::new(init)).context("model.adapter.init")?;
        policy
            .load_adapter(&dir)
            .with_context(|| format!("model.adapter.init: loading {}", dir.display()))?;
        report(&format!("adapter initialised from {}", dir.display()));
    }
    report(&format!(
        "model loaded in {:.1}s ({} trainable parameters)",
        t.elapsed().as_secs_f64(),
        policy.trainable_parameters()
    ));
    let template = policy.codec().chat_template();
    let to_items = |rows: &[data::Row]| {
        rows.iter()
            .map(|row| {
                Ok(TaskItem {
                    id: format!("{}:{}", row.dependency.to_lowercase(), row.line),
                    prompt: prompt::render_prompt(&spec.prompt, row, template.as_deref())?,
                    target: row.new_code.clone(),
                    columns: match serde_json::to_value(row)? {
                        serde_json::Value::Object(m) => m,
                        _ => Default::default(),
                    },
                    sft_target: match spec.training.mode {
                        crate::spec::TrainingMode::Sft => prompt::render_field("sft.target", &spec.sft.target, row)?,
                        crate::spec::TrainingMode::Rl => String::new(),
                    },
                })
            })
            .collect::<Result<Vec<_>>>()
    };
    let items = to_items(&dataset.train)?;
    let heldout = if spec.heldout.every > 0 {
        let h = &spec.heldout;
        let limit = if h.limit == 0 {
            dataset.heldout.len()
        } else {
            h.limit.min(dataset.heldout.len())
        };
        let reward_specs: Vec<crate::spec::RewardSpec> = h
            .rewards
            .iter()
            .map(|name| crate::spec::RewardSpec {
                name: name.clone(),
                ..Default::default()
            })
            .collect();
        Some(crate::trainer::heldout::Heldout {
            items: to_items(&dataset.heldout[..limit])?,
            rewards: plugin::weighted_rewards(reg, &reward_specs).context("heldout.rewards")?,
            every: h.every,
            max_new_tokens: if h.max_new_tokens == 0 {
                spec.generation.max_new_tokens
            } else {
                h.max_new_tokens
            },
            batch_size: if h.batch_size == 0 {
                spec.generation.batch_size
            } else {
                h.batch_size
            },
            stop_strings: spec.generation.stop_strings.clone(),
            max_prompt_tokens: spec.prompt.max_prompt_tokens,
            copy_answers: dataset.heldout[..limit]
                .iter()
                .map(|row| crate::trainer::heldout::copy_answer(&row.old_code))
                .collect(),
        })
    } else {
        None
    };
    let Plugins { rewards, algorithm } = plugins;
    let labels: Vec<String> = rewards.iter().map(|r| r.label.clone()).collect();
    let run_root = run.root.clone();
    let mut trainer = Trainer::new(spec, policy.as_mut(), rewards, algorithm, items, run)?;
    if spec.eval.every > 0 {
        let template = (!spec.prompt.chat_template.is_empty()).then(|| spec.prompt.chat_template.clone());
        trainer.evaluator = Some(crate::eval::training::training_evaluator(
            &spec.eval,
            template,
            run_root,
            spec.run.seed,
        )?);
    }
    trainer.allow_spec_change = resume.allow_spec_change;
    trainer.heldout = heldout;
    if let Some(ckpt) = &checkpoint {
        for d in trainer.resume_from(ckpt)? {
            report(&format!("warning: resuming under a changed spec: {d}"));
        }
        report(&format!(
            "resumed from {} (step {})",
            ckpt.display(),
            trainer.state.step
        ));
    }
    if let Some(b) = trainer.board.as_mut() {
        b.hparams(&hparams(spec), &["reward/total/mean", "loss"]);
    }
    let start_step = trainer.state.step;
    let total = spec.training.steps;
    let stop_at = max_steps.map(|m| (start_step + m).min(total)).unwrap_or(total);
    // A bar on a terminal, a line every few seconds in a log file.
    let mode = crate::progress::Mode::auto(spec.logging.progress);
    let bar = std::sync::Arc::new(Progress::new("train", "steps", total as u64, start_step as u64, mode));
    let bar2 = bar.clone();
    trainer.on_step = Some(Box::new(move |step, m: &Metrics| {
        let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        bar2.set_message(format!(
            "reward {:.3} loss {:.4}, generation {:.1} tokens/s",
            get("reward/total/mean"),
            get("loss"),
            get("throughput/tokens_per_s")
        ));
        bar2.set_position(step as u64);
    }));
    let t0 = Instant::now();
    let history = if stop_at < total {
        let steps = trainer.train_until(stop_at)?;
        trainer.save_checkpoint()?;
        steps
    } else {
        trainer.train()?
    };
    bar.finish();
    let wall = t0.elapsed().as_secs_f64();
    let mut summary = summarize(&trainer, &labels, start_step, &history, wall)?;
    let finished = trainer.state.step >= total;
    let adapter_dir = trainer.run.root.join("adapter");
    drop(trainer);
    if finished
        && matches!(
            spec.model.adapter.kind,
            crate::spec::AdapterKind::Lora | crate::spec::AdapterKind::Dora
        )
    {
        policy
            .export_peft(&adapter_dir)
            .context("exporting the adapter in PEFT format")?;
        summary.push_str(&format!("adapter (PEFT format): {}\n", adapter_dir.display()));
    }
    Ok(summary)
}

fn hparams(spec: &Spec) -> BTreeMap<String, HParamValue> {
    let mut h = BTreeMap::new();
    h.insert("algorithm".into(), HParamValue::Text(spec.algorithm.name.clone()));
    h.insert("lr".into(), HParamValue::Number(spec.training.lr));
    h.insert(
        "num_generations".into(),
        HParamValue::Number(spec.generation.num_generations as f64),
    );
    h.insert("temperature".into(), HParamValue::Number(spec.generation.temperature));
    h.insert(
        "adapter".into(),
        HParamValue::Text(format!("{:?}", spec.model.adapter.kind).to_lowercase()),
    );
    h.insert("rank".into(), HParamValue::Number(spec.model.adapter.rank as f64));
    h.insert("seed".into(), HParamValue::Number(spec.run.seed as f64));
    let rewards: Vec<String> = spec.reward.iter().map(|r| format!("{}*{}", r.weight, r.name)).collect();
    h.insert("rewards".into(), HParamValue::Text(rewards.join("+")));
    h
}

/// Writes summary.json and returns the table printed at the end of a run.
fn summarize(trainer: &Trainer<'_>, labels: &[String], start: usize, history: &[Metrics], wall: f64) -> Result<String> {
    let mut phase = BTreeMap::new();
    for m in history {
        for k in [
            "time/generation_s",
            "time/scoring_s",
            "time/reference_s",
            "time/old_logprobs_s",
            "time/update_s",
        ] {
            *phase
                .entry(k.trim_start_matches("time/").trim_end_matches("_s").to_string())
                .or_insert(0.0) += m.get(k).copied().unwrap_or(0.0);
        }
    }
    let per_step: Vec<serde_json::Value> = history
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut o = serde_json::Map::new();
            o.insert("step".into(), (start + i + 1).into());
            for (k, v) in m {
                o.insert(k.clone(), serde_json::json!(v));
            }
            serde_json::Value::Object(o)
        })
        .collect();
    let heldout = heldout_lines(&trainer.run.root);
    let summary = serde_json::json!({
        "run_dir": trainer.run.root.display().to_string(),
        "steps_completed": trainer.state.step,
        "steps_this_invocation": history.len(),
        "skipped_updates": trainer.state.skipped_updates,
        "wall_time_s": wall,
        "phase_time_s": phase,
        "final": history.last(),
        "steps": per_step,
        "heldout": heldout,
    });
    trainer
        .run
        .write_file("summary.json", serde_json::to_string_pretty(&summary)?.as_bytes())?;

    let mut out = String::new();
    out.push_str(&format!("\n{:>5} {:>9}", "step", "reward"));
    for l in labels {
        out.push_str(&format!(" {:>10}", truncate(l, 10)));
    }
    out.push_str(&format!(" {:>9} {:>8} {:>8}\n", "loss", "len", "time_s"));
    for (i, m) in history.iter().enumerate() {
        let g = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        out.push_str(&format!("{:>5} {:>9.3}", start + i + 1, g("reward/total/mean")));
        for l in labels {
            out.push_str(&format!(" {:>10.3}", g(&format!("reward/{l}/mean"))));
        }
        out.push_str(&format!(
            " {:>9.4} {:>8.1} {:>8.1}\n",
            g("loss"),
            g("completion/length_mean"),
            g("time/step_s")
        ));
    }
    out.push_str(&format!(
        "\nwall time {wall:.1}s; phases: {}\n",
        phase
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}s"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let (Some(first), Some(last)) = (heldout.first(), heldout.last()) {
        let show = |v: &serde_json::Value, prefix: &str| {
            ["exact_rate", "es_star", "em_star", "format"]
                .iter()
                .filter_map(|k| {
                    v.get(format!("{prefix}/{k}"))
                        .and_then(|x| x.as_f64())
                        .map(|x| format!("{k} {x:.3}"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let items = last.get("heldout/items").and_then(|x| x.as_f64()).unwrap_or(0.0);
        out.push_str(&format!(
            "held-out ({items} items, greedy): step {} {}\n",
            first["step"],
            show(first, "heldout")
        ));
        if heldout.len() > 1 {
            out.push_str(&format!(
                "                          step {} {}\n",
                last["step"],
                show(last, "heldout")
            ));
        }
        let copy = show(first, "heldout_copy");
        if !copy.is_empty() {
            out.push_str(&format!("  copying the old code:   {copy}\n"));
        }
    }
    let samples = std::fs::read_to_string(trainer.run.root.join("log.txt")).unwrap_or_default();
    if let Some(pos) = samples.rfind("samples at step") {
        let sample: String = samples[pos..].lines().take(24).collect::<Vec<_>>().join("\n");
        out.push_str(&format!(
            "\nlast logged sample ({}):\n{sample}\n",
            "full text in log.txt and TensorBoard"
        ));
    }
    out.push_str(&format!(
        "\nrun directory: {}\nTensorBoard: tensorboard --logdir {}\n",
        trainer.run.root.display(),
        trainer.run.root.display()
    ));
    Ok(out)
}

/// The held-out scores logged in eval.jsonl, in step order.
fn heldout_lines(run_root: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run_root.join(crate::trainer::EVAL_FILE)).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("heldout/items").is_some())
        .collect()
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
