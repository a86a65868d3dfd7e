//! Checks beyond types: value ranges, files that must exist and plugin names that must resolve.
//! Every problem is collected (not just the first) and names the key and where it was set.

use crate::config::LoadedSpec;
use crate::registry::{PluginKind, Registry};
use crate::spec::{AdapterKind, BackendKind, Precision, Spec, TrainingMode};
use std::path::Path;

use crate::plugins::is_library_path;

struct Problems<'a> {
    loaded: &'a LoadedSpec,
    list: Vec<String>,
}

impl Problems<'_> {
    fn push(&mut self, key: &str, msg: String) {
        self.list
            .push(format!("{}: key `{key}`: {msg}", self.loaded.origin(key)));
    }
    fn range(&mut self, key: &str, ok: bool, expected: &str, got: impl std::fmt::Display) {
        if !ok {
            self.push(key, format!("expected {expected}, got {got}"));
        }
    }
    fn file(&mut self, key: &str, path: &str) {
        if !path.is_empty() && !Path::new(path).exists() {
            self.push(
                key,
                format!("file `{path}` does not exist (relative paths are resolved from the working directory)"),
            );
        }
    }
}

/// What validation needs to know about the host.
pub struct HostInfo<'a> {
    pub registry: &'a Registry,
    /// Model ids the host can fetch by name.
    pub known_model_ids: &'a [&'a str],
    /// A runnable experiment (true) or a fragment meant for `extends` (false): fragments may
    /// leave out what a run requires (a model, rewards).
    pub complete: bool,
}

/// Loading a spec with overrides and refusing it unless it validates fully: how `recode run`,
/// `recode validate` and every run of a sweep get their spec. [`HostInfo`] is the real check;
/// tests of the sweep planner bring their own.
pub trait SpecChecker {
    fn load_checked(&self, path: &Path, sets: &[String]) -> anyhow::Result<LoadedSpec>;
}

impl HostInfo<'_> {
    /// The spec (environment and `sets` overrides applied), checked, with its rewards and
    /// algorithm built: what a run starts from.
    pub fn load_for_run(&self, path: &Path, sets: &[String]) -> anyhow::Result<(LoadedSpec, crate::plugins::Plugins)> {
        let loaded = crate::config::load(
            path,
            &crate::config::LoadOptions {
                sets: sets.to_vec(),
                env: true,
            },
        )?;
        if let Err(problems) = check(&loaded, self) {
            anyhow::bail!("invalid spec {}:\n  {}", path.display(), problems.join("\n  "));
        }
        let plugins = crate::plugins::plugins(self.registry, &loaded.spec)
            .map_err(|e| anyhow::anyhow!("invalid spec {}: {e:#}", path.display()))?;
        Ok((loaded, plugins))
    }
}

impl SpecChecker for HostInfo<'_> {
    fn load_checked(&self, path: &Path, sets: &[String]) -> anyhow::Result<LoadedSpec> {
        Ok(self.load_for_run(path, sets)?.0)
    }
}

pub fn check(loaded: &LoadedSpec, host: &HostInfo<'_>) -> Result<(), Vec<String>> {
    let s: &Spec = &loaded.spec;
    let mut p = Problems { loaded, list: vec![] };

    p.range(
        "run.name",
        !s.run.name.is_empty() && !s.run.name.contains('/'),
        "a non-empty name without '/'",
        &s.run.name,
    );
    if s.backend.kind == BackendKind::Cpu && s.backend.precision != Precision::F32 {
        p.push("backend.precision", "the cpu backend supports only \"f32\"".into());
    }

    let m = &s.model;
    plugin_name(&mut p, host.registry, PluginKind::Model, "model.plugin", &m.plugin);
    match (m.id.is_empty(), m.path.is_empty()) {
        (true, true) if host.complete => p.push(
            "model.path",
            "set either model.path (HF folder or .gguf) or model.id".into(),
        ),
        (true, true) => {}
        (false, false) => p.push("model.id", "set model.id or model.path, not both".into()),
        (false, true) if !host.known_model_ids.contains(&m.id.as_str()) => p.push(
            "model.id",
            format!(
                "unknown model id `{}`; known: {}",
                m.id,
                host.known_model_ids.join(", ")
            ),
        ),
        _ => p.file("model.path", &m.path),
    }
    p.file("model.tokenizer", &m.tokenizer);
    p.range(
        "model.architecture",
        ["auto", "qwen2", "llama"].contains(&m.architecture.as_str()),
        "\"auto\", \"qwen2\" or \"llama\"",
        &m.architecture,
    );
    if !matches!(m.adapter.kind, AdapterKind::None | AdapterKind::Full) {
        p.range("model.adapter.rank", m.adapter.rank >= 1, "a rank >= 1", m.adapter.rank);
        p.range(
            "model.adapter.alpha",
            m.adapter.alpha > 0.0,
            "alpha > 0",
            m.adapter.alpha,
        );
        p.range(
            "model.adapter.dropout",
            (0.0..1.0).contains(&m.adapter.dropout),
            "dropout in [0, 1)",
            m.adapter.dropout,
        );
    }

    p.file("data.path", &s.data.path);
    p.range(
        "data.heldout_fraction",
        (0.0..1.0).contains(&s.data.heldout_fraction),
        "a fraction in [0, 1)",
        s.data.heldout_fraction,
    );
    p.range(
        "data.split_by",
        ["update", "row"].contains(&s.data.split_by.as_str()),
        "\"update\" or \"row\"",
        &s.data.split_by,
    );
    p.range(
        "data.split_seed",
        s.data.split_seed >= -1,
        "-1 (the run seed) or a seed >= 0",
        s.data.split_seed,
    );

    let sft = s.training.mode == TrainingMode::Sft;
    if host.complete && s.reward.is_empty() && !sft {
        p.push(
            "reward",
            "a run needs at least one [[reward]] (or training.mode = \"sft\")".into(),
        );
    }
    if sft {
        // Rendered on a row of placeholders: a template that does not compile, or names a field
        // the data rows do not have, is refused here rather than at the first step.
        let row = crate::task::data::Row {
            dependency: "dependency".into(),
            new_version: "1.0".into(),
            description: "description".into(),
            update_info: "update_info".into(),
            old_code: "old_code".into(),
            new_code: "new_code".into(),
            line: 0,
            columns: Default::default(),
        };
        match crate::task::prompt::render_field("sft.target", &s.sft.target, &row) {
            Ok(t) if t.trim().is_empty() => p.push("sft.target", "the target renders empty".into()),
            Ok(_) => {}
            Err(e) => p.push("sft.target", format!("{e:#}")),
        }
    }
    if let Some(init) = Some(&m.adapter.init).filter(|i| !i.is_empty()) {
        if m.adapter.kind == AdapterKind::None {
            p.push(
                "model.adapter.init",
                "adapter.kind is \"none\": there is no adapter to start from".into(),
            );
        } else if let Err(e) = crate::load::adapter_weights_dir(Path::new(init)) {
            p.push("model.adapter.init", format!("{e:#}"));
        }
    }
    for (i, r) in s.reward.iter().enumerate() {
        let key = format!("reward[{i}].name");
        if r.is_python() {
            p.file(&format!("reward[{i}].python"), &r.python);
            p.range(
                &format!("reward[{i}].style"),
                ["trl", "verl"].contains(&r.style.as_str()),
                "\"trl\" or \"verl\"",
                &r.style,
            );
            p.range(
                &format!("reward[{i}].timeout_s"),
                r.timeout_s > 0.0 && r.timeout_s.is_finite(),
                "seconds > 0",
                r.timeout_s,
            );
        } else if r.name.is_empty() {
            p.push(
                &key,
                "every [[reward]] needs a name (a built-in or a plugin path), or `python` / `module` (a Python reward)"
                    .into(),
            );
        } else {
            plugin_name(&mut p, host.registry, PluginKind::Reward, &key, &r.name);
        }
        p.range(
            &format!("reward[{i}].weight"),
            r.weight.is_finite(),
            "a finite weight",
            r.weight,
        );
    }
    plugin_name(
        &mut p,
        host.registry,
        PluginKind::Algorithm,
        "algorithm.name",
        &s.algorithm.name,
    );

    let g = &s.generation;
    p.range(
        "generation.num_generations",
        g.num_generations >= 1,
        "at least 1",
        g.num_generations,
    );
    p.range(
        "generation.max_new_tokens",
        g.max_new_tokens >= 1,
        "at least 1",
        g.max_new_tokens,
    );
    p.range(
        "generation.temperature",
        g.temperature >= 0.0 && g.temperature.is_finite(),
        "a temperature >= 0 (0 = greedy)",
        g.temperature,
    );
    p.range(
        "generation.top_p",
        g.top_p > 0.0 && g.top_p <= 1.0,
        "top_p in (0, 1]",
        g.top_p,
    );
    p.range("generation.batch_size", g.batch_size >= 1, "at least 1", g.batch_size);

    let t = &s.training;
    p.range("training.optimizer", t.optimizer == "adamw", "\"adamw\"", &t.optimizer);
    p.range(
        "training.lr",
        t.lr > 0.0 && t.lr < 1.0,
        "a learning rate in (0, 1)",
        t.lr,
    );
    p.range(
        "training.weight_decay",
        t.weight_decay >= 0.0,
        "weight decay >= 0",
        t.weight_decay,
    );
    p.range(
        "training.adam_beta1",
        (0.0..1.0).contains(&t.adam_beta1),
        "beta1 in [0, 1)",
        t.adam_beta1,
    );
    p.range(
        "training.adam_beta2",
        (0.0..1.0).contains(&t.adam_beta2),
        "beta2 in [0, 1)",
        t.adam_beta2,
    );
    p.range(
        "training.adam_epsilon",
        t.adam_epsilon > 0.0,
        "epsilon > 0",
        t.adam_epsilon,
    );
    p.range(
        "training.warmup_ratio",
        (0.0..1.0).contains(&t.warmup_ratio),
        "a ratio in [0, 1)",
        t.warmup_ratio,
    );
    p.range("training.steps", t.steps >= 1, "at least 1", t.steps);
    p.range(
        "training.prompts_per_step",
        t.prompts_per_step >= 1,
        "at least 1",
        t.prompts_per_step,
    );
    p.range(
        "training.num_iterations",
        t.num_iterations >= 1,
        "at least 1",
        t.num_iterations,
    );
    p.range(
        "training.micro_batch_size",
        t.micro_batch_size >= 1,
        "at least 1",
        t.micro_batch_size,
    );
    p.range(
        "training.max_grad_norm",
        t.max_grad_norm >= 0.0,
        "a norm >= 0 (0 disables clipping)",
        t.max_grad_norm,
    );

    let h = &s.heldout;
    if h.every > 0 {
        p.range(
            "heldout.rewards",
            !h.rewards.is_empty(),
            "at least one reward name",
            format!("{:?}", h.rewards),
        );
        if s.data.heldout_fraction <= 0.0 {
            p.push(
                "heldout.every",
                "scoring the held-out split needs data.heldout_fraction > 0".into(),
            );
        }
    }
    let e = &s.eval;
    p.range(
        "eval.benchmark",
        ["cua", "humaneval"].contains(&e.benchmark.as_str()),
        "\"cua\" or \"humaneval\"",
        &e.benchmark,
    );
    p.range(
        "eval.prompt",
        ["recode", "no_update", "update_prepended"].contains(&e.prompt.as_str()),
        "\"recode\", \"no_update\" or \"update_prepended\"",
        &e.prompt,
    );
    p.range("eval.n_samples", e.n_samples >= 1, "at least 1", e.n_samples);
    if let Some(k) = e.k.iter().find(|&&k| k == 0 || k > e.n_samples) {
        p.push(
            "eval.k",
            format!("every k must be in 1..=n_samples ({}), got {k}", e.n_samples),
        );
    }
    p.range("eval.workers", e.workers >= 1, "at least 1", e.workers);
    p.range("eval.batch_size", e.batch_size >= 1, "at least 1", e.batch_size);
    p.range(
        "eval.timeout_s",
        e.timeout_s > 0.0,
        "a positive number of seconds",
        e.timeout_s,
    );
    p.file("eval.data", &e.data);
    if e.every > 0 && e.data.is_empty() {
        p.push("eval.data", "eval.every > 0 needs eval.data".into());
    }

    if p.list.is_empty() {
        Ok(())
    } else {
        Err(p.list)
    }
}

fn plugin_name(p: &mut Problems<'_>, reg: &Registry, kind: PluginKind, key: &str, name: &str) {
    if is_library_path(name) {
        p.file(key, name);
    } else if !reg.names(kind).iter().any(|n| n == name) {
        p.push(
            key,
            format!(
                "unknown {kind} plugin `{name}`; built-ins: {}; or give a path to a shared library",
                reg.names(kind).join(", ")
            ),
        );
    }
}
