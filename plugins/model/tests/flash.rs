//! The blockwise attention (src/flash.rs) against the plain path: values and the gradients of q,
//! k and v for several shapes, block sizes and paddings, and the whole tiny model's log-probs and
//! adapter gradients with `attention = "blockwise"` against `"plain"`.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recode_core::api::Sequence;
use recode_core::spec::{AdapterKind, TrainingSpec};
use recode_model::byte_codec::ByteCodec;
use recode_model::flash::{self, AttentionMode, Spec};
use recode_model::generate::{completion_logprobs, packed_logprobs};
use recode_model::load::load_transformer;
use recode_model::model::Fwd;
use recode_model::weights::SafetensorsSource;
use recode_model::TransformerPolicy;

mod common;
use common::{adapter, config, write_tiny};

type B = NdArray<f32>;
type AD = Autodiff<B>;

fn random<const D: usize>(rng: &mut ChaCha8Rng, shape: [usize; D]) -> Tensor<AD, D> {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// The plain path of `Attention::forward`, with the mask built as `Step::new` builds it.
fn plain(q: Tensor<AD, 4>, k: Tensor<AD, 4>, v: Tensor<AD, 4>, valid: &[Vec<bool>], past: usize) -> Tensor<AD, 4> {
    let ([b, nh, t, hd], [_, kvh, s, _]) = (q.dims(), k.dims());
    let g = nh / kvh;
    let mut mask = Vec::new();
    for row in valid {
        for i in 0..t {
            for (j, &ok) in row.iter().enumerate() {
                mask.push(if j <= past + i && (ok || j == past + i) {
                    0.0f32
                } else {
                    -1e9
                });
            }
        }
    }
    let mask = Tensor::<AD, 5>::from_data(TensorData::new(mask, [b, 1, 1, t, s]), &Default::default());
    let scores = q.reshape([b, kvh, g * t, hd]).matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt());
    let probs = softmax(scores.reshape([b, kvh, g, t, s]) + mask, 4).reshape([b, kvh, g * t, s]);
    probs.matmul(v).reshape([b, nh, t, hd])
}

fn key_ok(valid: &[Vec<bool>]) -> Tensor<AD, 2> {
    let v: Vec<f32> = valid.iter().flatten().map(|&ok| if ok { 1.0 } else { 0.0 }).collect();
    Tensor::from_data(TensorData::new(v, [valid.len(), valid[0].len()]), &Default::default())
}

fn values(t: Tensor<AD, 4>) -> Vec<f32> {
    t.inner().into_data().to_vec::<f32>().unwrap()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().map(|x| x.abs()).fold(0f32, f32::max).max(1e-3);
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= tol * scale, "{what}: max difference {worst} at scale {scale}");
}

/// Per row: left padding in the first, right padding (some queries see only the past and
/// themselves) in the second, none in the rest.
fn paddings(b: usize, s: usize) -> Vec<Vec<bool>> {
    (0..b)
        .map(|r| match r {
            0 => (0..s).map(|j| j >= s / 3).collect(),
            1 => (0..s).map(|j| j < s - s / 3).collect(),
            _ => vec![true; s],
        })
        .collect()
}

/// (b, nh, kvh, hd, past, t, bq, bk)
const CASES: [(usize, usize, usize, usize, usize, usize, usize, usize); 7] = [
    (2, 4, 2, 8, 0, 9, 4, 3), // self-attention, GQA 2, ragged blocks, online softmax across key blocks
    (2, 4, 2, 8, 5, 6, 2, 4), // queries after a 5-key prompt (the shared-prompt path)
    (1, 2, 1, 4, 0, 1, 1, 1), // one query, multi-query attention
    (3, 6, 6, 8, 7, 5, 5, 12), // no GQA, one block of each
    (3, 4, 2, 8, 4, 11, 16, 64), // blocks larger than the shapes
    (2, 14, 2, 16, 3, 20, 8, 23), // the 0.5B's 7 query heads per kv head
    (1, 14, 2, 64, 24, 40, 16, 32), // the 0.5B's attention shape (14 heads, 2 kv heads, head dim 64) after a prompt
];

#[test]
fn values_and_gradients_match_the_plain_attention() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (case, &(b, nh, kvh, hd, past, t, bq, bk)) in CASES.iter().enumerate() {
        let s = past + t;
        let valid = paddings(b, s);
        let (q, k, v) = (
            random(&mut rng, [b, nh, t, hd]),
            random(&mut rng, [b, kvh, s, hd]),
            random(&mut rng, [b, kvh, s, hd]),
        );
        let w = random(&mut rng, [b, nh, t, hd]);
        let sp = Spec {
            past,
            groups: nh / kvh,
            bq,
            bk,
            scale: 1.0 / (hd as f64).sqrt(),
        };
        // What the model calls: it finds the autodiff backend, and declines an inference one.
        assert!(flash::try_attention(&q, &k, &v, &key_ok(&valid), sp).is_some());
        assert!(flash::try_attention(
            &q.clone().inner(),
            &k.clone().inner(),
            &v.clone().inner(),
            &key_ok(&valid).inner(),
            sp
        )
        .is_none());
        for k_tracked in [true, false] {
            let run = |blockwise: bool| {
                let (q, v) = (q.clone().detach().require_grad(), v.clone().detach().require_grad());
                let k = if k_tracked {
                    k.clone().detach().require_grad()
                } else {
                    k.clone().detach()
                };
                let out = if blockwise {
                    flash::attention(q.clone(), k.clone(), v.clone(), key_ok(&valid), sp)
                } else {
                    plain(q.clone(), k.clone(), v.clone(), &valid, past)
                };
                let grads = (out.clone() * w.clone()).sum().backward();
                let grad = |x: &Tensor<AD, 4>| x.grad(&grads).map(|g| g.into_data().to_vec::<f32>().unwrap());
                (values(out), grad(&q).unwrap(), grad(&k), grad(&v).unwrap())
            };
            let (want, got) = (run(false), run(true));
            let what = format!("case {case} (k tracked: {k_tracked})");
            assert_close(&got.0, &want.0, 1e-5, &format!("{what} output"));
            assert_close(&got.1, &want.1, 1e-4, &format!("{what} dq"));
            assert_close(&got.3, &want.3, 1e-4, &format!("{what} dv"));
            match (got.2, want.2) {
                (Some(a), Some(b)) => assert_close(&a, &b, 1e-4, &format!("{what} dk")),
                (None, None) => assert!(!k_tracked),
                (a, b) => panic!("{what}: dk present {} against {}", a.is_some(), b.is_some()),
            }
        }
    }
}

#[test]
fn spec_blocks_depend_on_shapes_only_and_stay_within_the_budget() {
    let sp = Spec::for_shapes(8, 14, 2048, 2048, 64, 0, 7);
    assert_eq!(sp.bk, 2048);
    assert!(sp.bq >= 16 && sp.bq < 2048, "{sp:?}");
    assert!(3 * 4 * 8 * 14 * 2048 * sp.bq <= 64 << 20, "{sp:?}");
    let small = Spec::for_shapes(1, 2, 5, 9, 4, 4, 1);
    assert_eq!((small.bq, small.bk), (5, 9));
    assert!(AttentionMode::Auto.blockwise_for(512, 512) && !AttentionMode::Auto.blockwise_for(100, 500));
    assert!(!AttentionMode::Plain.blockwise_for(4096, 4096) && AttentionMode::Blockwise.blockwise_for(1, 1));
}

/// The tiny model with DoRA, log-probs and adapter gradients through both scoring paths (shared
/// prompt and packed), blockwise against plain.
#[test]
fn the_model_gives_the_same_logprobs_and_gradients_with_blockwise_attention() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 23);
    let spec = adapter(AdapterKind::Dora, &["q_proj", "k_proj", "v_proj"]);
    let (a, b) = (vec![5u32, 9, 33, 2, 77, 1, 64], vec![12u32, 40]);
    let seqs = vec![
        Sequence {
            prompt: a.clone(),
            completion: vec![8, 8, 100, 3],
        },
        Sequence {
            prompt: b.clone(),
            completion: vec![4, 90, 17],
        },
        Sequence {
            prompt: a.clone(),
            completion: vec![1, 2, 3, 4, 5, 6, 7],
        },
    ];
    let train = Fwd {
        adapters: true,
        train: true,
    };
    let run = |mode: AttentionMode, packed: bool| {
        let src = SafetensorsSource::from_dir(dir.path()).unwrap();
        let mut m = load_transformer::<AD>(&config(dir.path()), &src, &spec, 3, &Default::default()).unwrap();
        m.attention = mode;
        let training = TrainingSpec {
            lr: 1e-2,
            ..Default::default()
        };
        let p = TransformerPolicy::new(
            m,
            Box::new(ByteCodec { eos: vec![127], pad: 0 }),
            spec.clone(),
            &training,
        )
        .unwrap();
        let lp = if packed {
            packed_logprobs(p.model(), &seqs, 0, train)
        } else {
            completion_logprobs(p.model(), &seqs, 0, train)
        }
        .unwrap();
        let [rows, cols] = lp.dims();
        let mut w = vec![0f32; rows * cols];
        for (r, s) in seqs.iter().enumerate() {
            for j in 0..s.completion.len() {
                w[r * cols + j] = ((r * 7 + j) % 5) as f32 - 2.0;
            }
        }
        let values = lp.clone().inner().into_data().to_vec::<f32>().unwrap();
        let w = Tensor::<AD, 2>::from_data(TensorData::new(w, [rows, cols]), &Default::default());
        let g = (lp * w).sum().backward();
        let l0 = &p.model().layers[0].self_attn;
        let grad = |t: Tensor<AD, 2>| t.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap();
        let grads = [
            grad(l0.q_proj.lora_b.as_ref().unwrap().val()),
            grad(l0.k_proj.lora_b.as_ref().unwrap().val()),
            grad(l0.v_proj.lora_b.as_ref().unwrap().val()),
        ];
        (values, grads)
    };
    for packed in [false, true] {
        let (want, got) = (run(AttentionMode::Plain, packed), run(AttentionMode::Blockwise, packed));
        assert_close(&got.0, &want.0, 1e-5, &format!("log-probs (packed: {packed})"));
        for (i, (x, y)) in got.1.iter().zip(&want.1).enumerate() {
            assert!(y.iter().any(|v| *v != 0.0), "gradient {i} did not reach the adapter");
            assert_close(x, y, 1e-4, &format!("adapter gradient {i} (packed: {packed})"));
        }
    }
}
