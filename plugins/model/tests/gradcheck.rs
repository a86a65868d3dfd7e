//! Finite-difference check of the autodiff gradients (LoRA, DoRA magnitude, full fine-tuning) on
//! a tiny model in f64. It has a test binary of its own: burn 0.21 keeps one float dtype per device
//! *type* for the whole process, set by whichever backend creates a tensor first, and NdArray<f32>
//! and NdArray<f64> share a device type. Beside the f32 tests, this "f64" model was silently built
//! from f32 tensors: the gaps of up to 1.7% seen before, varying with test order, were f32 rounding.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{DType, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recode_core::spec::AdapterKind;
use recode_model::generate::completion_logprobs;
use recode_model::load::load_transformer;
use recode_model::model::{Fwd, ParamMut, Transformer};
use recode_model::weights::SafetensorsSource;

mod common;
use common::{adapter, config, seqs, write_tiny};

#[test]
fn finite_difference_gradients() {
    type D = NdArray<f64>;
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 13);
    let src = SafetensorsSource::from_dir(dir.path()).unwrap();
    let s = seqs();
    let g: Vec<f64> = (0..s.len() * 7).map(|i| ((i * 37 % 11) as f64 - 5.0) / 10.0).collect();
    for kind in [AdapterKind::Lora, AdapterKind::Dora, AdapterKind::Full] {
        let mut m = load_transformer::<Autodiff<D>>(
            &config(dir.path()),
            &src,
            &adapter(kind, &["q_proj", "up_proj"]),
            1,
            &Default::default(),
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        // Set A as well as B: the loader draws A from burn's process-wide generator, whose state
        // depends on which tests ran before in this process; the instance checked must not.
        m.visit_params(&mut |n, mut p| {
            if n.contains("lora_A") || n.contains("lora_B") {
                let len: usize = p.shape().iter().product();
                p.set((0..len).map(|_| 0.3 * (rng.gen::<f32>() - 0.5)).collect());
            }
        });
        let gt = || Tensor::<Autodiff<D>, 2>::from_data(TensorData::new(g.clone(), [s.len(), 7]), &Default::default());
        let loss = |m: &Transformer<Autodiff<D>>| -> Tensor<Autodiff<D>, 1> {
            (completion_logprobs(
                m,
                &s,
                0,
                Fwd {
                    adapters: true,
                    train: false,
                },
            )
            .unwrap()
                * gt())
            .sum()
        };
        // The whole model must really be f64 (see the module comment).
        assert_eq!(m.embed_tokens.val().dtype(), DType::F64);
        m.visit_params(&mut |n, p| {
            if let ParamMut::D2(q) = p {
                assert_eq!(q.val().dtype(), DType::F64, "{n}");
            }
        });
        let grads = loss(&m).backward();
        // Check a few entries of some trainable matrices (DoRA's A/B see a detached norm, as in
        // PEFT, so their analytic gradient is not the true derivative: check m there instead).
        let (mut checked, mut worst) = (0, 0f64);
        let mut probe = m.clone();
        probe.visit_params(&mut |n, p| {
            let want = match kind {
                AdapterKind::Dora => n.contains("magnitude"),
                AdapterKind::Lora => n.contains("lora_"),
                _ => {
                    n.contains("layers.1.self_attn.q_proj.weight")
                        || n.contains("layers.0.mlp.up_proj.weight")
                        || n.contains("norm.weight")
                }
            };
            if !want || checked >= 6 {
                return;
            }
            let (analytic, vals, shape): (Vec<f64>, Vec<f32>, Vec<usize>) = match &p {
                ParamMut::D1(q) => (
                    q.val().grad(&grads).unwrap().into_data().iter::<f64>().collect(),
                    p.to_vec(),
                    p.shape(),
                ),
                ParamMut::D2(q) => (
                    q.val().grad(&grads).unwrap().into_data().iter::<f64>().collect(),
                    p.to_vec(),
                    p.shape(),
                ),
            };
            let _ = shape;
            for k in [0, vals.len() / 2, vals.len() - 1] {
                // Parameters are set through f32: use the step actually stored, not the one asked for.
                let stored = |delta: f64| (vals[k] as f64 + delta) as f32 as f64;
                let eval = |delta: f64| -> f64 {
                    let mut mm = m.clone();
                    let name = n.to_string();
                    mm.visit_params(&mut |nn, mut pp| {
                        if nn == name {
                            let mut v = pp.to_vec();
                            v[k] = stored(delta) as f32;
                            pp.set(v);
                        }
                    });
                    loss(&mm).into_data().iter::<f64>().next().unwrap()
                };
                let (e1, e2) = (eval(0.0), eval(0.0));
                assert_eq!(e1, e2, "{kind:?} {n}: the loss is not reproducible");
                // Central differences converge as h shrinks to ~1e-2 (one lora_A entry: gap 3.5e-4 at
                // h = 1e-1, 3.4e-6 at 1e-2) and then get worse (7e-4 at 1e-4, 7e-2 at 1e-6): the
                // loss still jitters by ~1e-8 between neighbouring f32 parameter values, although
                // every tensor is f64 and the projections alone are smooth to f64 precision. Where
                // that comes from is not found (issue #3). At h = 1e-2 the worst gap seen over all
                // entries is 1.6e-4.
                let h = 1e-2f64;
                let fd = (eval(h) - eval(-h)) / (stored(h) - stored(-h));
                let err = (fd - analytic[k]).abs() / fd.abs().max(analytic[k].abs()).max(1e-3);
                worst = worst.max(err);
                assert!(
                    err < 1e-3,
                    "{kind:?} {n}[{k}]: analytic {} vs finite difference {fd}",
                    analytic[k]
                );
            }
            checked += 1;
        });
        assert!(checked > 0, "{kind:?}: nothing checked");
        eprintln!("{kind:?}: worst relative gap between analytic and finite-difference gradients {worst:.2e}");
    }
}
