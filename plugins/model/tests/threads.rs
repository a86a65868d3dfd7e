//! The large matmuls (prefill, log-probs, the whole training pass) run on every core: the 2-D
//! products through the gemm crate (src/gemm_cpu.rs), attention's 4-D ones through
//! matrixmultiply. Both split the output into tiles and keep each element's k sum whole and in
//! order. This test runs the same log-probs, backward pass and AdamW step in child processes with
//! MATMUL_NUM_THREADS=1, 2 and 3 (read once per process; 3 splits the tiles unevenly on two
//! cores) and requires bit-identical results. Sequences are long enough (4 x 120 tokens) that the
//! tiny model's MLP, output head and weight-gradient products cross the threading thresholds.

use burn::backend::{Autodiff, NdArray};
use recode_core::api::{Policy, Sequence};
use recode_core::spec::{AdapterKind, TrainingSpec};
use recode_model::byte_codec::ByteCodec;
use recode_model::load::load_transformer;
use recode_model::weights::SafetensorsSource;
use recode_model::TransformerPolicy;
use std::path::Path;
use std::process::Command;

mod common;
use common::{adapter, config, write_tiny};

type B = NdArray<f32>;
const CHILD: &str = "RECODE_THREADS_TEST_OUT";

fn long_seqs() -> Vec<Sequence> {
    (0..4u32)
        .map(|r| Sequence {
            prompt: (0..70).map(|j| (r * 31 + j * 7) % 127).collect(),
            completion: (0..50).map(|j| (r * 17 + j * 5 + 3) % 127).collect(),
        })
        .collect()
}

/// What the child computes: log-probs before, the trainable tensors after one update, and the
/// log-probs after it, as text with every float's bits.
fn compute(dir: &Path) -> String {
    let spec = adapter(AdapterKind::Dora, &["all-linear"]);
    let src = SafetensorsSource::from_dir(dir).unwrap();
    let m = load_transformer::<Autodiff<B>>(&config(dir), &src, &spec, 3, &Default::default()).unwrap();
    let training = TrainingSpec {
        lr: 1e-2,
        ..Default::default()
    };
    let mut p = TransformerPolicy::new(m, Box::new(ByteCodec { eos: vec![127], pad: 0 }), spec, &training).unwrap();
    let s = long_seqs();
    let mut out = String::new();
    let mut dump = |tag: &str, xs: &[f32]| {
        out.push_str(&format!(
            "{tag} {}\n",
            xs.iter().map(|x| format!("{:08x}", x.to_bits())).collect::<String>()
        ))
    };
    dump("logprobs", &p.logprobs(&s, false).unwrap().concat());
    let mut lg = |lp: &[Vec<f32>]| -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(lp
            .iter()
            .enumerate()
            .map(|(r, row)| row.iter().map(|x| (r as f32 - 1.5) * (1.0 + x.exp())).collect())
            .collect())
    };
    for _ in 0..2 {
        p.accumulate_gradients(&s[..2], &mut lg).unwrap();
        p.accumulate_gradients(&s[2..], &mut lg).unwrap();
        let st = p.optimizer_step(1e-2, Some(1.0)).unwrap();
        assert!(st.applied);
        dump("grad_norm", &[st.grad_norm as f32]);
    }
    for (n, _, v) in p.trainable_tensors() {
        dump(&n, &v);
    }
    dump("logprobs_after", &p.logprobs(&s, true).unwrap().concat());
    out
}

fn run_child(dir: &Path, threads: &str) -> String {
    let out = dir.join(format!("out-{threads}.txt"));
    let st = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "update_is_bit_identical_for_any_thread_count", "--nocapture"])
        .env(CHILD, &out)
        .env("MATMUL_NUM_THREADS", threads)
        .status()
        .unwrap();
    assert!(st.success(), "child with MATMUL_NUM_THREADS={threads} failed");
    std::fs::read_to_string(out).unwrap()
}

#[test]
fn update_is_bit_identical_for_any_thread_count() {
    if let Ok(out) = std::env::var(CHILD) {
        let dir = Path::new(&out).parent().unwrap();
        std::fs::write(&out, compute(dir)).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 17);
    let one = run_child(dir.path(), "1");
    assert!(one.lines().count() > 10, "child wrote too little:\n{one}");
    for n in ["2", "3"] {
        let other = run_child(dir.path(), n);
        assert_eq!(one.lines().count(), other.lines().count());
        for (a, b) in one.lines().zip(other.lines()) {
            let tag = a.split(' ').next().unwrap();
            assert_eq!(a, b, "`{tag}` differs between 1 and {n} matmul threads");
        }
    }
}
