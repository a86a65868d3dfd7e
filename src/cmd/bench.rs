//! `recode bench`: measured speed, never asserted in tests.

use anyhow::{bail, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// es_star over a ReCode file (every target against its old code), Rust vs a pure-Python reference.
    Reward {
        /// ReCode JSON lines (default: ../shared/data/recode-train.jsonl, else the shipped sample).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Repeat the Rust measurement this many times and report the best.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },

    /// Prefill and decode tokens/s at several batch sizes, beside the machine's memory bandwidth.
    Generate {
        /// A .gguf, an HF folder or a known model id.
        #[arg(long, default_value = "qwen2.5-coder-0.5b-instruct")]
        model: String,
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        batch: Vec<usize>,
        #[arg(long, default_value_t = 32)]
        new_tokens: usize,
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        /// cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// none, lora or dora (rank 16 on the attention projections, as the quickstart).
        #[arg(long, default_value = "none")]
        adapter: String,
        /// Time each generation this many times and report the best.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// Evaluation cost: generation tokens/s and problems/min per batch size, sandbox programs/s.
    Eval(super::bench_eval::BenchEvalArgs),
    /// N training steps of a spec, timed per phase (the first step, with its warm-up, apart).
    Step {
        /// Experiment spec (TOML), e.g. experiments/quickstart.toml.
        spec: PathBuf,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Override a key, as for `recode run` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Keep the run folder (default: a temporary folder, removed afterwards).
        #[arg(long)]
        keep: bool,
    },
    /// Forward+backward tokens/s with a LoRA adapter, beside the backend's plain matmul FLOP rate.
    Train {
        #[arg(long, default_value = "qwen2.5-coder-0.5b-instruct")]
        model: String,
        #[arg(long, default_value_t = 2)]
        micro_batch: usize,
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 64)]
        completion_tokens: usize,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        #[arg(long, default_value_t = 16)]
        rank: usize,
        /// cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// The transformer's `attention` option: auto, plain or blockwise (default: the plugin's).
        #[arg(long)]
        attention: Option<String>,
    },
}

fn default_data() -> PathBuf {
    let shared = PathBuf::from("../shared/data/recode-train.jsonl");
    if shared.exists() {
        shared
    } else {
        PathBuf::from("data/sample-migrations.jsonl")
    }
}

pub fn bench(c: BenchCommand) -> Result<()> {
    match c {
        BenchCommand::Reward { data, repeats } => {
            let data = data.unwrap_or_else(default_data);
            // Best of `repeats`, single-threaded and on every core (what training uses).
            let best = |threads: usize| -> Result<recode_reward::bench::BenchReport> {
                let mut best: Option<recode_reward::bench::BenchReport> = None;
                for _ in 0..repeats.max(1) {
                    let r = recode_reward::bench::bench_es_star_threads(&data, threads)?;
                    if best.as_ref().is_none_or(|b| r.seconds < b.seconds) {
                        best = Some(r);
                    }
                }
                Ok(best.expect("at least one repeat"))
            };
            let one = best(1)?;
            let all = best(0)?;
            let script = PathBuf::from("tests/reference/es_star_py_bench.py");
            let py = recode_reward::bench::bench_es_star_python(&script, &data)?;
            println!("data: {} ({} items)", data.display(), one.items);
            println!(
                "python (pure-Python DP Levenshtein): {:.4}s  mean es_star {:.6}",
                py.seconds, py.mean_reward
            );
            for r in [&one, &all] {
                if (py.mean_reward - r.mean_reward).abs() > 1e-9 {
                    bail!(
                        "the implementations disagree: mean {} vs {}",
                        r.mean_reward,
                        py.mean_reward
                    );
                }
                println!(
                    "rust, {} thread(s): {:.4}s  mean es_star {:.6}  speed-up {:.0}x",
                    r.threads,
                    r.seconds,
                    r.mean_reward,
                    py.seconds / r.seconds.max(1e-12)
                );
            }
        }
        BenchCommand::Eval(args) => super::bench_eval::bench_eval(args)?,
        BenchCommand::Step {
            spec,
            steps,
            sets,
            keep,
        } => super::bench_step::bench_step(&spec, steps, &sets, keep)?,
        BenchCommand::Generate {
            model,
            batch,
            new_tokens,
            prompt_tokens,
            backend,
            adapter,
            repeats,
        } => {
            let mut args = super::model::ModelArgs::new(&model);
            args.backend = backend;
            match adapter.as_str() {
                "none" => {}
                "lora" | "dora" => args.adapter = Some((adapter.clone(), 16)),
                other => bail!("--adapter {other}: expected none, lora or dora"),
            }
            println!("adapter: {adapter} (merged into the weights for generation)");
            let mut policy = super::model::load_policy(&args)?;
            let prompt = recode_model::bench::synthetic_prompt(policy.as_ref(), prompt_tokens)?;
            let weight_bytes = decode_weight_bytes(&model)?;
            // The host-memory roofline applies to the CPU backend only.
            let bw = (args.backend == "cpu").then(|| recode_model::bench::read_bandwidth(128 << 20, 5));
            if let Some(bw) = bw {
                println!(
                    "memory read bandwidth (one thread per core, 512 MiB): {:.1} GB/s",
                    bw / 1e9
                );
                // The model's largest matrix, the output projection [hidden, vocab].
                let cfg = recode_model_formats::model_config(&model)?;
                let (k, n) = (cfg.hidden_size, cfg.vocab_size);
                for rows in [1, 8] {
                    if let Some(r) = recode_model::bench::decode_matmul_bandwidth(rows, k, n, 3) {
                        println!(
                            "decode matmul kernel, {rows} row(s) x [{k}, {n}] f32: reads weights at {:.1} GB/s",
                            r / 1e9
                        );
                    }
                }
            }
            println!("weights read per decode step (f32): {:.2} GB", weight_bytes / 1e9);
            println!(
                "{:>5} {:>8} {:>12} {:>12} {:>14} {:>9}",
                "batch", "prompt", "prefill t/s", "decode t/s", "roofline t/s", "of roof"
            );
            for r in recode_model::bench::bench_generate(policy.as_mut(), &prompt, &batch, new_tokens, repeats)? {
                // Decode is bound by reading every weight once per step, for the whole batch.
                let roof = bw.map(|bw| r.batch as f64 * bw / weight_bytes);
                let (roof_s, pct) = match roof {
                    Some(x) => (format!("{x:.2}"), format!("{:.0}%", 100.0 * r.decode_tok_s / x)),
                    None => ("-".into(), "-".into()),
                };
                println!(
                    "{:>5} {:>8} {:>12.1} {:>12.2} {:>14} {:>9}",
                    r.batch, r.prompt_tokens, r.prefill_tok_s, r.decode_tok_s, roof_s, pct
                );
            }
        }
        BenchCommand::Train {
            model,
            micro_batch,
            prompt_tokens,
            completion_tokens,
            steps,
            rank,
            backend,
            attention,
        } => {
            let mut args = super::model::ModelArgs::new(&model);
            args.backend = backend;
            args.adapter = Some(("lora".into(), rank));
            if let Some(a) = attention {
                println!("attention: {a}");
                args.options.insert("attention".into(), toml::Value::String(a));
            }
            let mut policy = super::model::load_policy(&args)?;
            let prompt = recode_model::bench::synthetic_prompt(policy.as_ref(), prompt_tokens)?;
            let completion = recode_model::bench::synthetic_prompt(policy.as_ref(), completion_tokens)?;
            let n = if args.backend == "cpu" { 512 } else { 4096 };
            let burn_flops = recode_model::bench::matmul_flops(&args.backend, n, 3)?;
            println!(
                "plain matmul ({} backend, {n}x{n} f32, burn): {:.1} GFLOP/s",
                args.backend,
                burn_flops / 1e9
            );
            // On the CPU the model's products run on the gemm crate's kernels (gemm_cpu.rs): that
            // rate, and the CPU's peak, are the references.
            let (flops, peak) = if args.backend == "cpu" {
                let gemm = recode_model::bench::gemm_flops(n, 3);
                println!(
                    "plain matmul (cpu, {n}x{n} f32, gemm kernels): {:.1} GFLOP/s",
                    gemm / 1e9
                );
                (gemm, recode_model::bench::cpu_peak_flops())
            } else {
                (burn_flops, None)
            };
            if let Some((p, how)) = &peak {
                println!("f32 peak of this CPU: {:.0} GFLOP/s ({how})", p / 1e9);
            }
            let r = recode_model::bench::bench_train(policy.as_mut(), &prompt, &completion, micro_batch, steps)?;
            let params = recode_model_formats::model_config(&model)?.matmul_parameters();
            // Forward + backward of a dense decoder is about 6 FLOPs per parameter per token
            // (2 forward, 4 backward); with frozen base weights it is closer to 4.
            let achieved = 4.0 * params * r.tokens_per_s;
            println!(
                "forward+backward: {:.1} tokens/s ({} x {} tokens, {:.2}s per micro-batch; AdamW {:.3}s; {} trainable parameters)",
                r.tokens_per_s, r.micro_batch, r.seq_tokens, r.fwd_bwd_s, r.optimizer_s, r.trainable_parameters
            );
            println!(
                "about {:.1} GFLOP/s at 4 FLOPs/parameter/token = {:.0}% of the plain matmul rate",
                achieved / 1e9,
                100.0 * achieved / flops
            );
            if let Some((p, _)) = peak {
                println!("= {:.0}% of the CPU's f32 peak", 100.0 * achieved / p);
            }
        }
    }
    Ok(())
}

/// Bytes of f32 weights a decode step reads (every linear layer and the output head).
fn decode_weight_bytes(model: &str) -> Result<f64> {
    Ok(4.0 * recode_model_formats::model_config(model)?.matmul_parameters())
}
