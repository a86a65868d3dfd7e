//! The network: next-token logits from the previous `context` tokens.

use burn::module::{Module, ParamId};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

#[derive(Module, Debug)]
pub struct WindowMlp<B: Backend> {
    embed: Embedding<B>,
    hidden: Linear<B>,
    out: Linear<B>,
    context: usize,
}

impl<B: Backend> WindowMlp<B> {
    pub fn new(vocab: usize, context: usize, embedding: usize, hidden: usize, device: &B::Device) -> Self {
        Self {
            embed: EmbeddingConfig::new(vocab, embedding).init(device),
            hidden: LinearConfig::new(context * embedding, hidden).init(device),
            out: LinearConfig::new(hidden, vocab).init(device),
            context,
        }
    }

    pub fn context(&self) -> usize {
        self.context
    }

    /// Logits `[n, vocab]` for `n` windows of `context` token ids each (row-major).
    pub fn logits(&self, windows: &[i64]) -> Tensor<B, 2> {
        let n = windows.len() / self.context;
        let device = self.embed.weight.device();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(windows.to_vec(), [n, self.context]), &device);
        let d = self.embed.weight.dims()[1];
        let x = self.embed.forward(ids).reshape([n, self.context * d]);
        self.out.forward(gelu(self.hidden.forward(x)))
    }

    /// Every parameter with its rank (for the global gradient norm).
    pub fn param_ids(&self) -> Vec<(ParamId, usize)> {
        let bias = |l: &Linear<B>| l.bias.as_ref().map(|b| (b.id, 1));
        let mut v = vec![
            (self.embed.weight.id, 2),
            (self.hidden.weight.id, 2),
            (self.out.weight.id, 2),
        ];
        v.extend(bias(&self.hidden));
        v.extend(bias(&self.out));
        v
    }
}

/// The window of `context` ids ending just before position `end` of `tokens`, left-padded.
pub fn window(tokens: &[u32], end: usize, context: usize, pad: u32) -> impl Iterator<Item = i64> + '_ {
    (0..context).map(move |k| {
        let back = context - k;
        if end >= back {
            tokens[end - back] as i64
        } else {
            pad as i64
        }
    })
}
