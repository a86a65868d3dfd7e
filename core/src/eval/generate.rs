//! Completions for evaluation, generated in batches across problems and their n samples.
//!
//! Every row (problem p, sample i) samples from its own generator, ChaCha8 seeded with
//! `derive_seed(seed, [p])` on stream i (`SamplingParams::row_seeds`), so a completion does not
//! depend on the batch size or on which rows share its batch. (Before batching, one generate call
//! per problem gave its n rows the same seed and streams 0..n, so reports match those too.)

use super::problem::{EvalOptions, Problem};
use super::prompts::PromptVariant;
use super::report::{Candidate, EvalReport};
use crate::api::{ChatMessage, Policy, RowSeed, SamplingParams};
use crate::progress::{Mode, Progress};
use crate::spec::EvalSpec;
use crate::trainer::data_order::derive_seed;
use anyhow::{anyhow, ensure, Context, Result};
use std::time::Instant;

/// What generation cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenStats {
    pub rows: usize,
    /// Tokens generated (EOS included).
    pub tokens: usize,
    pub prompt_tokens: usize,
    /// Time inside the policy's generate calls.
    pub seconds: f64,
    pub batches: usize,
}

impl GenStats {
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// The generator of sample `sample` of problem `problem`.
pub fn row_seed(seed: u64, problem: usize, sample: usize) -> RowSeed {
    RowSeed {
        seed: derive_seed(seed, &[problem as u64]),
        stream: sample as u64,
    }
}

/// The prompt of every problem as token ids. `template` overrides the model's chat template.
pub fn prompt_ids(
    policy: &dyn Policy,
    problems: &[Problem],
    variant: PromptVariant,
    template: Option<&str>,
) -> Result<Vec<Vec<u32>>> {
    let template = match template {
        Some(t) => t.to_string(),
        None => policy
            .codec()
            .chat_template()
            .ok_or_else(|| anyhow!("the model ships no chat template; set prompt.chat_template"))?,
    };
    problems
        .iter()
        .map(|p| {
            let mut msgs = p.prompt_messages(variant);
            let prefill = matches!(p, Problem::Cua(_)) && variant == PromptVariant::Recode;
            if prefill {
                msgs.push(ChatMessage {
                    role: "assistant".into(),
                    content: super::prompts::PREFILL.into(),
                });
            }
            let text = crate::chat::render(&template, &msgs, !prefill, prefill)
                .with_context(|| format!("prompt of {}", p.id()))?;
            policy.codec().encode(&text)
        })
        .collect()
}

/// Generates `spec.n_samples` completions per problem, `spec.batch_size` rows per call, and
/// hands each problem's completions (in sample order) to `done` as soon as all are generated.
/// Rows are ordered by prompt length so a batch wastes little on padding.
pub fn generate(
    policy: &mut dyn Policy,
    problems: &[Problem],
    spec: &EvalSpec,
    seed: u64,
    template: Option<&str>,
    progress: &Progress,
    mut done: impl FnMut(usize, Vec<String>) -> Result<()>,
) -> Result<GenStats> {
    let variant: PromptVariant = spec.prompt.parse()?;
    let prompts = prompt_ids(&*policy, problems, variant, template)?;
    let n = spec.n_samples;
    let mut rows: Vec<(usize, usize)> = (0..problems.len()).flat_map(|p| (0..n).map(move |s| (p, s))).collect();
    rows.sort_by_key(|&(p, _)| std::cmp::Reverse(prompts[p].len()));
    let mut texts: Vec<Vec<Option<String>>> = vec![vec![None; n]; problems.len()];
    let mut left = vec![n; problems.len()];
    let mut stats = GenStats {
        rows: rows.len(),
        ..GenStats::default()
    };
    if n == 0 {
        for p in 0..problems.len() {
            done(p, vec![])?;
        }
    }
    for batch in rows.chunks(spec.batch_size.max(1)) {
        let params = SamplingParams {
            max_new_tokens: spec.max_new_tokens,
            temperature: spec.temperature,
            top_p: spec.top_p,
            seed,
            row_seeds: batch.iter().map(|&(p, s)| row_seed(seed, p, s)).collect(),
            ..SamplingParams::default()
        };
        let ids: Vec<Vec<u32>> = batch.iter().map(|&(p, _)| prompts[p].clone()).collect();
        let t = Instant::now();
        let gens = policy.generate(&ids, &params)?;
        stats.seconds += t.elapsed().as_secs_f64();
        ensure!(
            gens.len() == batch.len(),
            "the model returned {} completions for {} prompts",
            gens.len(),
            batch.len()
        );
        stats.batches += 1;
        stats.prompt_tokens += ids.iter().map(Vec::len).sum::<usize>();
        let tokens: usize = gens.iter().map(|g| g.tokens.len()).sum();
        stats.tokens += tokens;
        progress.add_tokens(tokens as u64);
        let mut finished = 0;
        for (&(p, s), g) in batch.iter().zip(gens) {
            texts[p][s] = Some(g.text);
            left[p] -= 1;
            if left[p] == 0 {
                done(
                    p,
                    texts[p]
                        .iter_mut()
                        .map(|t| t.take().expect("every sample generated"))
                        .collect(),
                )?;
                finished += 1;
            }
        }
        progress.inc(finished);
    }
    Ok(stats)
}

/// Generates with `policy` and evaluates, the sandbox running finished problems while later
/// batches generate. `show`: progress on stderr (a bar, or lines when stderr is not a terminal).
pub fn evaluate_policy(
    policy: &mut dyn Policy,
    problems: &[Problem],
    spec: &EvalSpec,
    opts: &EvalOptions,
    seed: u64,
    template: Option<&str>,
    show: bool,
) -> Result<(EvalReport, GenStats)> {
    let bar = Progress::new("eval", "problems generated", problems.len() as u64, 0, Mode::auto(show));
    let total = problems.len();
    let executed = |n: usize| bar.set_message(format!("{n}/{total} executed"));
    let (report, stats) = super::run::evaluate_streaming(problems, opts, &executed, |submit| {
        generate(policy, problems, spec, seed, template, &bar, |pi, texts| {
            submit(pi, texts.iter().map(|t| Candidate::from_completion(t)).collect())
        })
    })?;
    bar.finish();
    Ok((report, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Generation, OptimStats, Sequence, TextCodec};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    struct Bytes;
    impl TextCodec for Bytes {
        fn encode(&self, text: &str) -> Result<Vec<u32>> {
            Ok(text.bytes().map(u32::from).collect())
        }
        fn decode(&self, ids: &[u32]) -> Result<String> {
            Ok(ids.iter().map(|&i| char::from(i as u8)).collect())
        }
        fn eos_ids(&self) -> Vec<u32> {
            vec![]
        }
        fn pad_id(&self) -> u32 {
            0
        }
        fn chat_template(&self) -> Option<String> {
            Some("{% for m in messages %}{{ m.content }}{% endfor %}".into())
        }
    }

    /// Samples letters from each row's own generator, mixed with the prompt's length; records
    /// batch sizes.
    struct Letters {
        codec: Bytes,
        calls: Vec<usize>,
    }
    impl Policy for Letters {
        fn codec(&self) -> &dyn TextCodec {
            &self.codec
        }
        fn generate(&mut self, prompts: &[Vec<u32>], p: &SamplingParams) -> Result<Vec<Generation>> {
            self.calls.push(prompts.len());
            (0..prompts.len())
                .map(|r| {
                    let rs = p.row_seed(r, prompts.len())?;
                    let mut g = ChaCha8Rng::seed_from_u64(rs.seed);
                    g.set_stream(rs.stream);
                    let tokens: Vec<u32> = (0..p.max_new_tokens)
                        .map(|_| 97 + (g.gen::<u32>() + prompts[r].len() as u32) % 26)
                        .collect();
                    let text = self.codec.decode(&tokens)?;
                    Ok(Generation {
                        logprobs: vec![0.0; tokens.len()],
                        tokens,
                        text,
                        finish: crate::api::FinishReason::Length,
                    })
                })
                .collect()
        }
        fn logprobs(&mut self, _: &[Sequence], _: bool) -> Result<Vec<Vec<f32>>> {
            unreachable!()
        }
        fn accumulate_gradients(&mut self, _: &[Sequence], _: &mut crate::api::LossGradFn<'_>) -> Result<()> {
            unreachable!()
        }
        fn optimizer_step(&mut self, _: f64, _: Option<f64>) -> Result<OptimStats> {
            unreachable!()
        }
        fn trainable_parameters(&self) -> usize {
            0
        }
        fn save(&self, _: &std::path::Path) -> Result<()> {
            Ok(())
        }
        fn load(&mut self, _: &std::path::Path) -> Result<()> {
            Ok(())
        }
    }

    fn problems() -> Vec<Problem> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/humaneval-sample.jsonl");
        super::super::problem::load_problems("humaneval", &path).unwrap()
    }

    fn run(batch: usize, seed: u64) -> (Vec<Vec<String>>, Vec<usize>, Vec<usize>) {
        let spec = EvalSpec {
            n_samples: 3,
            max_new_tokens: 6,
            batch_size: batch,
            ..EvalSpec::default()
        };
        let mut policy = Letters {
            codec: Bytes,
            calls: vec![],
        };
        let probs = problems();
        let mut out = vec![vec![]; probs.len()];
        let mut order = vec![];
        let progress = Progress::new("test", "problems", probs.len() as u64, 0, Mode::Hidden);
        let stats = generate(&mut policy, &probs, &spec, seed, None, &progress, |p, c| {
            order.push(p);
            out[p] = c;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            (stats.rows, stats.tokens, stats.batches),
            (3 * probs.len(), 6 * 3 * probs.len(), policy.calls.len())
        );
        (out, policy.calls, order)
    }

    #[test]
    fn completions_do_not_depend_on_the_batch_size() {
        let (one, calls1, _) = run(1, 5);
        let (eight, calls8, order) = run(8, 5);
        assert_eq!(one, eight);
        let rows = 3 * problems().len();
        assert_eq!(calls1, vec![1; rows]);
        assert_eq!(calls8.iter().sum::<usize>(), rows);
        assert!(
            calls8.iter().all(|&b| b <= 8) && calls8.len() == rows.div_ceil(8),
            "{calls8:?}"
        );
        // Every problem handed over once; samples of one problem differ (own streams).
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..problems().len()).collect::<Vec<_>>());
        assert!(one.iter().all(|c| c.len() == 3 && c[0] != c[1]), "{one:?}");
        // Another seed, other completions.
        assert_ne!(run(8, 6).0, one);
    }
}
