//! Throughput measurements through the `Policy` API (what `recode bench` reports).

use anyhow::{bail, Context, Result};
use recode_core::api::{Policy, SamplingParams, Sequence};
use std::time::Instant;

#[derive(Debug, Clone, serde::Serialize)]
pub struct GenBench {
    pub batch: usize,
    pub prompt_tokens: usize,
    /// Tokens sampled in the timed decode run (all rows).
    pub new_tokens: usize,
    pub prefill_s: f64,
    /// batch * prompt_tokens / prefill time.
    pub prefill_tok_s: f64,
    pub decode_s: f64,
    /// Tokens after the first of each row / (total - prefill) time.
    pub decode_tok_s: f64,
}

/// Prefill and decode speed at each batch size. Prefill = a 1-token generation; decode = the extra
/// time of an `new_tokens` generation (sampled at temperature 1, seed 0, so every repeat samples the
/// same tokens; early EOS counts fewer). Each time is the best of `repeats` runs, as the machine's
/// bandwidth is: on a shared host single runs vary by a third.
pub fn bench_generate(
    policy: &mut dyn Policy,
    prompt: &[u32],
    batches: &[usize],
    new_tokens: usize,
    repeats: usize,
) -> Result<Vec<GenBench>> {
    let mut out = vec![];
    for &b in batches {
        let prompts = vec![prompt.to_vec(); b];
        let p1 = SamplingParams {
            max_new_tokens: 1,
            ..Default::default()
        };
        let pn = SamplingParams {
            max_new_tokens: new_tokens,
            ..Default::default()
        };
        policy.generate(&prompts, &p1)?; // warm-up (allocations, kernels)
        let (mut prefill_s, mut total, mut n) = (f64::MAX, f64::MAX, 0);
        for _ in 0..repeats.max(1) {
            let t = Instant::now();
            policy.generate(&prompts, &p1)?;
            prefill_s = prefill_s.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let gens = policy.generate(&prompts, &pn)?;
            total = total.min(t.elapsed().as_secs_f64());
            n = gens.iter().map(|g| g.tokens.len()).sum();
        }
        let decode_s = (total - prefill_s).max(1e-9);
        out.push(GenBench {
            batch: b,
            prompt_tokens: prompt.len(),
            new_tokens: n,
            prefill_s,
            prefill_tok_s: (b * prompt.len()) as f64 / prefill_s,
            decode_s,
            decode_tok_s: n.saturating_sub(b) as f64 / decode_s,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainBench {
    pub micro_batch: usize,
    /// Prompt + completion tokens per sequence.
    pub seq_tokens: usize,
    pub steps: usize,
    /// Mean forward+backward time of one micro-batch.
    pub fwd_bwd_s: f64,
    /// Sequence tokens processed per second by forward+backward.
    pub tokens_per_s: f64,
    pub optimizer_s: f64,
    pub trainable_parameters: usize,
}

/// Forward+backward (+ AdamW step) speed on `micro_batch` copies of prompt+completion.
pub fn bench_train(
    policy: &mut dyn Policy,
    prompt: &[u32],
    completion: &[u32],
    micro_batch: usize,
    steps: usize,
) -> Result<TrainBench> {
    let seqs = vec![
        Sequence {
            prompt: prompt.to_vec(),
            completion: completion.to_vec()
        };
        micro_batch
    ];
    let mut g = |lp: &[Vec<f32>]| -> Result<Vec<Vec<f32>>> {
        Ok(lp.iter().map(|r| vec![-1.0 / r.len().max(1) as f32; r.len()]).collect())
    };
    policy.accumulate_gradients(&seqs, &mut g)?; // warm-up
    policy.optimizer_step(0.0, Some(1.0))?;
    let (mut fb, mut opt) = (0.0, 0.0);
    for _ in 0..steps.max(1) {
        let t = Instant::now();
        policy.accumulate_gradients(&seqs, &mut g)?;
        fb += t.elapsed().as_secs_f64();
        let t = Instant::now();
        policy.optimizer_step(1e-6, Some(1.0))?;
        opt += t.elapsed().as_secs_f64();
    }
    let n = steps.max(1) as f64;
    let seq_tokens = prompt.len() + completion.len();
    Ok(TrainBench {
        micro_batch,
        seq_tokens,
        steps: steps.max(1),
        fwd_bwd_s: fb / n,
        tokens_per_s: (micro_batch * seq_tokens) as f64 * n / fb,
        optimizer_s: opt / n,
        trainable_parameters: policy.trainable_parameters(),
    })
}

/// FLOP/s of an n x n f32 matmul on "cpu", "wgpu" or "cuda" (best of `reps`): the reference rate
/// that `recode bench train` compares forward+backward with.
pub fn matmul_flops(backend: &str, n: usize, reps: usize) -> Result<f64> {
    Ok(match backend {
        "cpu" => matmul::<burn::backend::NdArray<f32>>(&Default::default(), n, reps),
        #[cfg(feature = "gpu")]
        "wgpu" => matmul::<burn::backend::Wgpu>(&Default::default(), n, reps),
        #[cfg(feature = "gpu")]
        "cuda" => matmul::<burn::backend::Cuda>(&Default::default(), n, reps),
        other => anyhow::bail!("no matmul benchmark for backend `{other}`"),
    })
}

fn matmul<B: burn::tensor::backend::Backend>(dev: &B::Device, n: usize, reps: usize) -> f64 {
    rate::<B>(dev, n, reps, |a, b| a.matmul(b))
}

/// FLOP/s of an n x n f32 product through `gemm_cpu::matmul` on the CPU (the kernels the model's
/// 2-D products use), best of `reps`.
pub fn gemm_flops(n: usize, reps: usize) -> f64 {
    rate::<burn::backend::NdArray<f32>>(&Default::default(), n, reps, crate::gemm_cpu::matmul)
}

fn rate<B: burn::tensor::backend::Backend>(
    dev: &B::Device,
    n: usize,
    reps: usize,
    mm: impl Fn(burn::tensor::Tensor<B, 2>, burn::tensor::Tensor<B, 2>) -> burn::tensor::Tensor<B, 2>,
) -> f64 {
    use burn::tensor::{Distribution, Tensor};
    let a = Tensor::<B, 2>::random([n, n], Distribution::Default, dev);
    let b = Tensor::<B, 2>::random([n, n], Distribution::Default, dev);
    // Reading one value back waits for the device to finish.
    let _ = mm(a.clone(), b.clone()).sum().into_data();
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let _ = mm(a.clone(), b.clone()).sum().into_data();
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best
}

/// The CPU's f32 peak in FLOP/s, from /proc/cpuinfo's clock and the widest FMA this build can
/// use (AVX-512: 16 lanes, AVX2: 8), assuming two FMA units per core (server Xeons and EPYCs;
/// some parts have one): cores x 2 units x lanes x 2 FLOPs x clock. `None` off Linux x86-64.
pub fn cpu_peak_flops() -> Option<(f64, String)> {
    #[cfg(target_arch = "x86_64")]
    {
        let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        let mhz: f64 = info
            .lines()
            .find(|l| l.starts_with("cpu MHz"))?
            .split(':')
            .nth(1)?
            .trim()
            .parse()
            .ok()?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (lanes, isa) = if std::arch::is_x86_feature_detected!("avx512f") {
            (16.0, "AVX-512")
        } else if std::arch::is_x86_feature_detected!("fma") {
            (8.0, "AVX2+FMA")
        } else {
            return None;
        };
        let peak = cores as f64 * 2.0 * lanes * 2.0 * mhz * 1e6;
        Some((
            peak,
            format!("{cores} cores x 2 FMA units x {lanes} lanes ({isa}) x 2 x {mhz:.0} MHz"),
        ))
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Effective weight-read rate (bytes/s) of the CPU decode matmul (`cpu::small_matmul`) on a
/// `[k, n]` f32 weight with `rows` input rows, best of `reps`; `None` where the fast path does not
/// apply (no AVX2). Use a weight far larger than the caches (e.g. 896 x 151936, the 0.5B output).
pub fn decode_matmul_bandwidth(rows: usize, k: usize, n: usize, reps: usize) -> Option<f64> {
    use burn::tensor::{Distribution, Tensor};
    type Cpu = burn::backend::NdArray<f32>;
    let dev = Default::default();
    let x = Tensor::<Cpu, 2>::random([rows, k], Distribution::Default, &dev);
    let w = Tensor::<Cpu, 2>::random([k, n], Distribution::Default, &dev);
    crate::cpu::small_matmul(&x, &w)?;
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let _ = crate::cpu::small_matmul(&x, &w)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Some((k * n * 4) as f64 / best)
}

/// Best-of-`reps` read bandwidth (bytes/s) over `n` f32s, one thread per core, each summing its
/// share with 8 independent AVX2 accumulators (so loads, not additions, set the pace). This is the
/// "memory roofline" the decode benchmark compares with.
pub fn read_bandwidth(n: usize, reps: usize) -> f64 {
    let data: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let threads = std::thread::available_parallelism().map_or(1, |v| v.get());
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let sum: f32 = std::thread::scope(|s| {
            let hs: Vec<_> = data
                .chunks(n.div_ceil(threads))
                .map(|c| s.spawn(move || lanes_sum(c)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        std::hint::black_box(sum);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (n * 4) as f64 / best
}

fn lanes_sum(c: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present.
        return unsafe { lanes_sum_avx2(c) };
    }
    c.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lanes_sum_avx2(c: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 8];
    let blocks = c.chunks_exact(64);
    let tail: f32 = blocks.remainder().iter().sum();
    for b in blocks {
        for (l, a) in acc.iter_mut().enumerate() {
            *a = _mm256_add_ps(*a, _mm256_loadu_ps(b.as_ptr().add(8 * l)));
        }
    }
    let mut lanes = [0f32; 8];
    for a in acc {
        let mut v = [0f32; 8];
        _mm256_storeu_ps(v.as_mut_ptr(), a);
        for (x, y) in lanes.iter_mut().zip(v) {
            *x += y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// A prompt of `n` tokens cut from repeated code text (for throughput runs: content does not
/// change the cost of a step, only its length does).
pub fn synthetic_prompt(policy: &dyn Policy, n: usize) -> Result<Vec<u32>> {
    let text = "def add(a, b):\n    return a + b\n\nclass Stack:\n    def __init__(self):\n        self.items = []\n"
        .repeat(n / 8 + 2);
    let mut ids = policy.codec().encode(&text)?;
    if ids.len() < n {
        bail!("could not build a {n}-token prompt");
    }
    ids.truncate(n);
    Ok(ids)
}

/// The process's peak resident set (VmHWM), Linux only.
pub fn peak_rss_bytes() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .context("unreadable VmHWM")?;
    Ok(kb * 1024)
}
