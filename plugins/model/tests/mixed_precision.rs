//! Mixed precision (#28 item 3): frozen weights and activations in the compute dtype, trainable
//! parameters, gradients, AdamW state and log-probs in f32.
//!
//! - On the CPU (every CI run): burn-ndarray refuses to mix dtypes ("Data type mismatch"), so a
//!   model computing in f64 with f32 masters panics wherever a cast is missing, where wgpu or cuda
//!   would silently compute garbage. Its log-probs and gradients must match the all-f32 model's.
//! - On wgpu (Mesa's lavapipe in CI): f16 against f32 through the plugin factory, three AdamW steps
//!   at lr 5e-5, including DoRA magnitudes near 1.0 that must move by about 5e-5 a step (stored in
//!   f16 they could not: the spacing of f16 numbers near 1.0 is 9.8e-4).
//!
//! Own test binary: burn keeps one default float dtype per device type and process.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use recode_core::api::{Policy, Sequence};
use recode_core::spec::{AdapterKind, TrainingSpec};
use recode_model::byte_codec::ByteCodec;
use recode_model::flash::AttentionMode;
use recode_model::generate::completion_logprobs;
use recode_model::load::{load_transformer, load_transformer_in};
use recode_model::loss_scale::{LossScaler, GROWTH_INTERVAL};
use recode_model::model::{Fwd, ParamMut, Transformer};
use recode_model::weights::{SafetensorsSource, WeightSource};
use recode_model::TransformerPolicy;
use std::path::Path;

mod common;
use common::{adapter, config, factory_spec, has_vulkan, seqs, transformer_factory, write_tiny};

type AD = Autodiff<NdArray<f32>>;

fn load(dir: &Path, compute: Option<FloatDType>, mode: AttentionMode) -> Transformer<AD> {
    let src = SafetensorsSource::from_dir(dir).unwrap();
    let spec = adapter(AdapterKind::Dora, &["all-linear"]);
    let mut m = match compute {
        Some(c) => load_transformer_in::<AD>(&config(dir), &src, &spec, 3, &Default::default(), c).unwrap(),
        None => load_transformer::<AD>(&config(dir), &src, &spec, 3, &Default::default()).unwrap(),
    };
    m.attention = mode;
    // A non-zero B, so that the adapters change the output and A gets a gradient.
    m.visit_params(&mut |n, mut p| {
        if n.contains("lora_B") {
            let len: usize = p.shape().iter().product();
            p.set((0..len).map(|i| ((i * 7919 % 13) as f32 - 6.0) * 0.01).collect());
        }
    });
    m
}

fn loss_weights(rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols).map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0).collect()
}

/// Log-probs (as f64) and the gradients of a weighted sum of them for every trainable tensor.
fn logprobs_and_grads(m: &Transformer<AD>, s: &[Sequence]) -> (Vec<f64>, Vec<(String, DType, Vec<f64>)>) {
    let lp = completion_logprobs(
        m,
        s,
        0,
        Fwd {
            adapters: true,
            train: true,
        },
    )
    .unwrap();
    assert_eq!(lp.dtype(), DType::F32, "log-probs are made in the masters' dtype");
    let [rows, cols] = lp.dims();
    let w = Tensor::<AD, 2>::from_data(
        TensorData::new(loss_weights(rows, cols), [rows, cols]),
        &Default::default(),
    );
    let values = lp.clone().inner().into_data().iter::<f64>().collect();
    let grads = (lp * w).sum().backward();
    let mut out = vec![];
    let mut probe = m.clone();
    probe.visit_params(&mut |n, p| {
        if !p.require_grad() {
            return;
        }
        let (dt, g) = match &p {
            ParamMut::D1(q) => {
                let g = q.val().grad(&grads).unwrap();
                (g.dtype(), g.into_data().iter::<f64>().collect())
            }
            ParamMut::D2(q) => {
                let g = q.val().grad(&grads).unwrap();
                (g.dtype(), g.into_data().iter::<f64>().collect())
            }
        };
        out.push((n.to_string(), dt, g));
    });
    (values, out)
}

fn max_rel(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0f64, |a, x| a.max(x.abs())).max(1e-12);
    got.iter().zip(want).fold(0f64, |a, (x, y)| a.max((x - y).abs())) / scale
}

#[test]
fn f64_compute_with_f32_masters_matches_f32_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 31);
    let s = seqs();
    for mode in [AttentionMode::Plain, AttentionMode::Blockwise] {
        let mut mixed = load(dir.path(), Some(FloatDType::F64), mode);
        let plain = load(dir.path(), None, mode);
        mixed.visit_params(&mut |n, p| {
            let dt = match &p {
                ParamMut::D1(q) => q.val().dtype(),
                ParamMut::D2(q) => q.val().dtype(),
            };
            let want = if p.require_grad() { DType::F32 } else { DType::F64 };
            assert_eq!(dt, want, "{n} (trainable: {})", p.require_grad());
        });
        let (lp_mixed, g_mixed) = logprobs_and_grads(&mixed, &s);
        let (lp_plain, g_plain) = logprobs_and_grads(&plain, &s);
        assert!(
            max_rel(&lp_mixed, &lp_plain) < 1e-5,
            "{mode:?}: log-probs differ by {}",
            max_rel(&lp_mixed, &lp_plain)
        );
        assert_eq!(g_mixed.len(), g_plain.len());
        let mut magnitudes = 0;
        for ((n, dt, a), (_, _, b)) in g_mixed.iter().zip(&g_plain) {
            assert_eq!(*dt, DType::F32, "{n}: gradients of f32 masters are f32");
            assert!(b.iter().any(|x| *x != 0.0), "{n}: no gradient reached it");
            assert!(
                max_rel(a, b) < 1e-3,
                "{mode:?} {n}: gradients differ by {} of their scale",
                max_rel(a, b)
            );
            magnitudes += n.contains("magnitude") as usize;
        }
        assert_eq!(magnitudes, 14, "2 layers x 7 projections with a DoRA magnitude");
    }
}

#[test]
fn a_step_and_a_merge_keep_every_tensor_in_its_dtype() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 32);
    let s = seqs();
    let m = load(dir.path(), Some(FloatDType::F64), AttentionMode::Auto);
    let before = TransformerPolicy::<NdArray<f32>>::new(
        m.clone(),
        Box::new(ByteCodec { eos: vec![127], pad: 0 }),
        adapter(AdapterKind::Dora, &["all-linear"]),
        &TrainingSpec::default(),
    )
    .unwrap()
    .trainable_tensors();
    let mut p = TransformerPolicy::<NdArray<f32>>::new(
        m,
        Box::new(ByteCodec { eos: vec![127], pad: 0 }),
        adapter(AdapterKind::Dora, &["all-linear"]),
        &TrainingSpec::default(),
    )
    .unwrap();
    p.accumulate_gradients(&s, &mut |lp: &[Vec<f32>]| {
        Ok(lp.iter().map(|r| r.iter().map(|_| 0.5).collect()).collect())
    })
    .unwrap();
    let st = p.optimizer_step(1e-3, Some(1.0)).unwrap();
    assert!(st.applied && st.grad_norm.is_finite() && st.grad_norm > 0.0, "{st:?}");
    let after = p.trainable_tensors();
    let moved = before.iter().zip(&after).filter(|(a, b)| a.2 != b.2).count();
    assert_eq!(moved, after.len(), "every trainable tensor moves on the first step");
    let mut model = p.model().clone();
    model.visit_params(&mut |n, q| {
        let dt = match &q {
            ParamMut::D1(t) => t.val().dtype(),
            ParamMut::D2(t) => t.val().dtype(),
        };
        assert_eq!(
            dt,
            if q.require_grad() { DType::F32 } else { DType::F64 },
            "{n} after an optimizer step"
        );
    });
    // The merged copy keeps the frozen weights' dtype and computes the same function.
    let merged = p.model().with_adapters_merged();
    assert_eq!(merged.layers[0].self_attn.q_proj.weight.val().dtype(), DType::F64);
    let fwd = Fwd {
        adapters: true,
        train: false,
    };
    let want: Vec<f64> = completion_logprobs(p.model(), &s, 0, fwd)
        .unwrap()
        .inner()
        .into_data()
        .iter::<f64>()
        .collect();
    let got: Vec<f64> = completion_logprobs(&merged, &s, 0, fwd)
        .unwrap()
        .inner()
        .into_data()
        .iter::<f64>()
        .collect();
    assert!(
        max_rel(&got, &want) < 1e-5,
        "merged against unmerged: {}",
        max_rel(&got, &want)
    );
}

/// Through the plugin factory, as a run builds it: wgpu at f16 against wgpu at f32, the same
/// three steps of the same loss.
#[test]
fn f16_on_wgpu_trains_like_f32_and_moves_dora_magnitudes() {
    if !has_vulkan("WGPU f16 check") {
        return;
    }
    use recode_core::registry::ModelContext;
    use recode_core::spec::{BackendKind, BackendSpec, Precision};
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 33);
    let factory = transformer_factory();
    let s = seqs();
    let run = |precision: Precision| {
        let spec = factory_spec(dir.path(), adapter(AdapterKind::Dora, &["all-linear"]));
        let backend = BackendSpec {
            kind: BackendKind::Wgpu,
            device: 0,
            precision,
        };
        let training = TrainingSpec {
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut p = factory(&ModelContext {
            spec: &spec,
            backend: &backend,
            training: &training,
            seed: 5,
        })
        .unwrap_or_else(|e| panic!("{precision:?}: {e:#}"));
        let lp: Vec<f64> = p
            .logprobs(&s, true)
            .unwrap()
            .concat()
            .iter()
            .map(|&x| x as f64)
            .collect();
        let save = |p: &dyn Policy, name: &str| {
            let d = dir.path().join(format!("{precision:?}-{name}"));
            p.save(&d).unwrap();
            let src = SafetensorsSource::from_files(&[d.join("trainable.safetensors")]).unwrap();
            let mut names = vec![];
            for l in 0..2 {
                for (part, proj) in [
                    ("self_attn", "q_proj"),
                    ("self_attn", "k_proj"),
                    ("self_attn", "v_proj"),
                    ("self_attn", "o_proj"),
                    ("mlp", "gate_proj"),
                    ("mlp", "up_proj"),
                    ("mlp", "down_proj"),
                ] {
                    for what in ["lora_magnitude_vector", "lora_B.weight"] {
                        names.push(format!("model.layers.{l}.{part}.{proj}.{what}"));
                    }
                }
            }
            names
                .into_iter()
                .map(|n| (n.clone(), src.tensor(&n).unwrap_or_else(|e| panic!("{n}: {e:#}")).1))
                .collect::<Vec<_>>()
        };
        let start = save(p.as_ref(), "start");
        let (mut norms, mut skipped) = (vec![], 0);
        for step in 0..3 {
            // f16: a step whose scaled gradients overflowed is skipped (the scale halves) and
            // the same batch runs again, as a trainer's next step would.
            loop {
                p.accumulate_gradients(&s, &mut |lp: &[Vec<f32>]| {
                    Ok(lp
                        .iter()
                        .enumerate()
                        .map(|(r, row)| {
                            row.iter()
                                .enumerate()
                                .map(|(j, _)| ((r * 5 + j + step) % 7) as f32 / 7.0 - 0.4)
                                .collect()
                        })
                        .collect())
                })
                .unwrap();
                let st = p.optimizer_step(5e-5, Some(1.0)).unwrap();
                if st.applied {
                    norms.push(st.grad_norm);
                    break;
                }
                assert!(
                    precision == Precision::F16 && !st.grad_norm.is_finite(),
                    "{precision:?} step {step} not applied: {st:?}"
                );
                skipped += 1;
                assert!(skipped < 20, "the loss scale never came down");
            }
        }
        eprintln!("{precision:?}: {skipped} step(s) skipped for overflow");
        let end = save(p.as_ref(), "end");
        let deltas: Vec<(String, Vec<f64>)> = start
            .iter()
            .zip(&end)
            .map(|((n, a), (_, b))| (n.clone(), a.iter().zip(b).map(|(x, y)| (*y - *x) as f64).collect()))
            .collect();
        (lp, norms, deltas)
    };
    let (lp32, n32, d32) = run(Precision::F32);
    let (lp16, n16, d16) = run(Precision::F16);
    let worst = lp16.iter().zip(&lp32).fold(0f64, |a, (x, y)| a.max((x - y).abs()));
    eprintln!("f16 against f32: log-probs {worst:.2e} apart; grad norms {n16:?} against {n32:?}");
    // Measured on lavapipe: 2.9e-3 and 2.5e-4 of the norm at worst.
    assert!(worst < 1e-2, "log-probs: f16 {worst} from f32");
    for (a, b) in n16.iter().zip(&n32) {
        assert!((a - b).abs() <= 1e-3 * b, "grad norm: f16 {a} against f32 {b}");
    }
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let gap = |a: &[f64], b: &[f64]| norm(&a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>()) / norm(b);
    let worst = |kind: &str| {
        d16.iter()
            .zip(&d32)
            .filter(|((n, _), _)| n.contains(kind))
            .map(|((_, a), (_, b))| gap(a, b))
            .fold(0f64, f64::max)
    };
    eprintln!(
        "f16 change against f32 change, worst tensor: magnitudes {:.4}, lora_B {:.4}",
        worst("magnitude"),
        worst("lora_B")
    );
    let mut magnitudes = 0;
    for ((n, a), (_, b)) in d16.iter().zip(&d32) {
        assert!(norm(b) > 0.0, "{n} did not move in f32");
        // Adam's first steps are about lr * sign(g): an element whose gradient is near 0 can
        // move the other way in f16, hence a few percent for lora_B. Measured 2026-12-05 on
        // lavapipe (the eprintln above): magnitudes 0.0046, lora_B 0.050 at worst; bound at 3x.
        let tol = if n.contains("magnitude") { 0.015 } else { 0.15 };
        assert!(
            gap(a, b) <= tol,
            "{n}: the f16 run's change is {:.3} of the f32 run's away from it",
            gap(a, b)
        );
        if n.contains("magnitude") {
            magnitudes += 1;
            // Three Adam steps of 5e-5 move each element by at most 1.5e-4, far below f16's
            // spacing near the magnitudes' values: only an f32 master can hold them.
            assert!(
                a.iter().filter(|x| x.abs() > 0.0).count() * 10 >= a.len() * 9,
                "{n}: most magnitudes did not move in f16"
            );
        }
    }
    assert_eq!(magnitudes, 14);
}

#[test]
fn the_loss_scale_halves_on_overflow_doubles_after_the_interval_and_stays_at_least_one() {
    let mut s = LossScaler::default();
    s.backoff();
    assert_eq!(
        s,
        LossScaler {
            scale: 32768.0,
            good: 0
        }
    );
    for _ in 0..GROWTH_INTERVAL - 1 {
        s.grow();
    }
    assert_eq!(
        s,
        LossScaler {
            scale: 32768.0,
            good: GROWTH_INTERVAL - 1
        }
    );
    s.grow();
    assert_eq!(
        s,
        LossScaler {
            scale: 65536.0,
            good: 0
        }
    );
    s.grow();
    s.backoff();
    assert_eq!(s.good, 0, "an overflow restarts the count");
    for _ in 0..40 {
        s.backoff();
    }
    assert_eq!(s.scale, 1.0);
}

/// An f16 run saved after its first step and resumed in a fresh policy ends where the run that
/// went on ends: the AdamW record (f32) and the loss scale (loss_scale.json) come back.
#[test]
fn an_f16_checkpoint_resumes_exactly() {
    if !has_vulkan("WGPU f16 resume") {
        return;
    }
    use recode_core::registry::ModelContext;
    use recode_core::spec::{BackendKind, BackendSpec, Precision};
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 34);
    let factory = transformer_factory();
    let spec = factory_spec(dir.path(), adapter(AdapterKind::Dora, &["all-linear"]));
    let backend = BackendSpec {
        kind: BackendKind::Wgpu,
        device: 0,
        precision: Precision::F16,
    };
    let training = TrainingSpec {
        weight_decay: 0.01,
        ..Default::default()
    };
    let mk = || {
        factory(&ModelContext {
            spec: &spec,
            backend: &backend,
            training: &training,
            seed: 5,
        })
        .unwrap()
    };
    let s = seqs();
    let step = |p: &mut Box<dyn Policy>, k: usize| {
        for _ in 0..20 {
            p.accumulate_gradients(&s, &mut |lp: &[Vec<f32>]| {
                Ok(lp
                    .iter()
                    .enumerate()
                    .map(|(r, row)| {
                        row.iter()
                            .enumerate()
                            .map(|(j, _)| ((r * 3 + j + k) % 5) as f32 / 5.0 - 0.4)
                            .collect()
                    })
                    .collect())
            })
            .unwrap();
            if p.optimizer_step(1e-3, Some(1.0)).unwrap().applied {
                return;
            }
        }
        panic!("step {k} never applied");
    };
    let tensors = |d: &Path| {
        let src = SafetensorsSource::from_files(&[d.join("trainable.safetensors")]).unwrap();
        let n = "model.layers.1.mlp.down_proj.lora_magnitude_vector";
        let m = "model.layers.0.self_attn.q_proj.lora_B.weight";
        (src.tensor(n).unwrap().1, src.tensor(m).unwrap().1)
    };
    let (ckpt, end_a, end_b) = (dir.path().join("ckpt"), dir.path().join("a"), dir.path().join("b"));
    let mut a = mk();
    step(&mut a, 0);
    a.save(&ckpt).unwrap();
    let scale: LossScaler =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("loss_scale.json")).unwrap()).unwrap();
    eprintln!("loss scale in the checkpoint: {scale:?}");
    step(&mut a, 1);
    step(&mut a, 2);
    a.save(&end_a).unwrap();
    let mut b = mk();
    b.load(&ckpt).unwrap();
    step(&mut b, 1);
    step(&mut b, 2);
    b.save(&end_b).unwrap();
    assert_eq!(
        tensors(&end_a),
        tensors(&end_b),
        "resumed run differs from the uninterrupted one"
    );
    assert_eq!(
        std::fs::read_to_string(end_a.join("loss_scale.json")).unwrap(),
        std::fs::read_to_string(end_b.join("loss_scale.json")).unwrap()
    );
    assert_ne!(
        tensors(&ckpt),
        tensors(&end_a),
        "the steps after the checkpoint moved the weights"
    );
}

/// Full fine-tuning at a low compute dtype: the weights train as f32 masters and the frozen
/// reference is kept in the compute dtype (half the memory in bf16/f16; its forward casts every
/// weight to the compute dtype anyway).
#[test]
fn full_fine_tuning_keeps_f32_masters_and_a_compute_dtype_reference() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 35);
    let src = SafetensorsSource::from_dir(dir.path()).unwrap();
    let spec = adapter(AdapterKind::Full, &[]);
    let m = load_transformer_in::<AD>(
        &config(dir.path()),
        &src,
        &spec,
        3,
        &Default::default(),
        FloatDType::F64,
    )
    .unwrap();
    assert_eq!(
        m.layers[0].mlp.up_proj.weight.val().dtype(),
        DType::F32,
        "trained weights are f32 masters"
    );
    let mut p = TransformerPolicy::<NdArray<f32>>::new(
        m,
        Box::new(ByteCodec { eos: vec![127], pad: 0 }),
        spec,
        &TrainingSpec::default(),
    )
    .unwrap();
    let reference = p.inference_model_for(false);
    assert_eq!(
        reference.layers[0].mlp.up_proj.weight.val().dtype(),
        DType::F64,
        "the reference is stored in the compute dtype"
    );
    assert_eq!(reference.embed_tokens.val().dtype(), DType::F64);
}
