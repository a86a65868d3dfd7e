//! The loop with a fake policy: a non-finite loss skips the update, is counted, and the
//! checkpoint written after it holds the last good state.

use super::*;
use crate::api::{
    FinishReason, Generation, LossBatch, LossOutput, OptimStats, RewardInput, SamplingParams, Sequence, TextCodec,
};
use crate::spec::Spec;

struct Codec;
impl TextCodec for Codec {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(ids.iter().map(|&i| char::from(i as u8)).collect())
    }
    fn eos_ids(&self) -> Vec<u32> {
        vec![0]
    }
    fn pad_id(&self) -> u32 {
        0
    }
    fn chat_template(&self) -> Option<String> {
        None
    }
}

/// Returns NaN log-probs on its `nan_call`-th forward with gradient; counts updates.
#[derive(Default)]
struct FakePolicy {
    nan_call: usize,
    calls: usize,
    applied: usize,
    discarded: usize,
}

impl Policy for FakePolicy {
    fn codec(&self) -> &dyn TextCodec {
        &Codec
    }
    fn generate(&mut self, prompts: &[Vec<u32>], _p: &SamplingParams) -> Result<Vec<Generation>> {
        // Completions "0", "1", "2", ... so rewards vary within a group.
        Ok((0..prompts.len())
            .map(|i| Generation {
                tokens: vec![48 + i as u32],
                text: i.to_string(),
                logprobs: vec![-1.0],
                finish: FinishReason::Eos,
            })
            .collect())
    }
    fn logprobs(&mut self, seqs: &[Sequence], _adapters: bool) -> Result<Vec<Vec<f32>>> {
        Ok(seqs.iter().map(|s| vec![-1.0; s.completion.len()]).collect())
    }
    fn accumulate_gradients(&mut self, seqs: &[Sequence], loss_grad: &mut crate::api::LossGradFn<'_>) -> Result<()> {
        self.calls += 1;
        let v = if self.calls == self.nan_call { f32::NAN } else { -1.0 };
        loss_grad(&seqs.iter().map(|s| vec![v; s.completion.len()]).collect::<Vec<_>>())?;
        Ok(())
    }
    fn optimizer_step(&mut self, lr: f64, _clip: Option<f64>) -> Result<OptimStats> {
        self.applied += 1;
        Ok(OptimStats {
            grad_norm: 1.0,
            lr,
            applied: true,
        })
    }
    fn discard_gradients(&mut self) -> Result<()> {
        self.discarded += 1;
        Ok(())
    }
    fn trainable_parameters(&self) -> usize {
        1
    }
    fn save(&self, dir: &std::path::Path) -> Result<()> {
        std::fs::write(dir.join("applied"), self.applied.to_string())?;
        Ok(())
    }
    fn load(&mut self, dir: &std::path::Path) -> Result<()> {
        self.applied = std::fs::read_to_string(dir.join("applied"))?.parse()?;
        Ok(())
    }
}

/// Reward = the completion read as a number.
struct Digit;
impl Reward for Digit {
    fn name(&self) -> &str {
        "digit"
    }
    fn score(&self, batch: &[RewardInput<'_>]) -> Result<Vec<f64>> {
        Ok(batch.iter().map(|x| x.completion.parse().unwrap_or(0.0)).collect())
    }
}

/// Group-centred advantages and a plain -A·logp token-mean loss.
struct Plain;
impl Algorithm for Plain {
    fn name(&self) -> &str {
        "plain"
    }
    fn advantages(&self, rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
        crate::algo::group_centred(rewards, group_size)
    }
    fn needs_reference(&self) -> bool {
        false
    }
    fn loss(&self, b: &LossBatch<'_>) -> Result<LossOutput> {
        let mut out = LossOutput {
            grad: vec![0.0; b.rows * b.cols],
            ..Default::default()
        };
        for r in 0..b.rows {
            for c in 0..b.cols {
                let i = r * b.cols + c;
                if b.mask[i] > 0.0 {
                    let g = -b.advantages[r] / b.norm_tokens as f32;
                    out.loss += (g * b.logp[i]) as f64;
                    out.grad[i] = g;
                }
            }
        }
        Ok(out)
    }
}

#[test]
fn non_finite_loss_skips_the_update_and_never_reaches_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::default();
    spec.training.steps = 3;
    spec.training.checkpoint_every = 1;
    spec.training.keep_checkpoints = 0;
    spec.generation.num_generations = 3;
    spec.training.micro_batch_size = 3;
    spec.logging.tensorboard = false;
    let mut policy = FakePolicy {
        nan_call: 2,
        ..Default::default()
    };
    let items = vec![TaskItem {
        id: "a".into(),
        prompt: "p".into(),
        target: String::new(),
        sft_target: String::new(),
        columns: Default::default(),
    }];
    let rewards = vec![WeightedReward {
        label: "digit".into(),
        weight: 1.0,
        reward: Box::new(Digit),
    }];
    let run = RunDir::create(tmp.path(), "nan").unwrap();
    let root = run.root.clone();
    let mut t = Trainer::new(&spec, &mut policy, rewards, Box::new(Plain), items, run).unwrap();
    let metrics = t.train().unwrap();
    assert_eq!(t.state.skipped_updates, 1);
    assert_eq!(
        metrics.iter().map(|m| m["update/skipped"]).collect::<Vec<_>>(),
        vec![0.0, 1.0, 0.0]
    );
    assert!(metrics[1]["loss"].is_finite(), "a skipped update logs no NaN loss");
    drop(t);
    assert_eq!((policy.applied, policy.discarded), (2, 1));
    // The step-2 checkpoint holds the state after the only good update so far.
    let saved = std::fs::read_to_string(root.join("checkpoints/step-000002/policy/applied")).unwrap();
    assert_eq!(saved, "1");
    assert!(std::fs::read_to_string(root.join("log.txt"))
        .unwrap()
        .contains("update skipped"));
}
