//! Tiny random Qwen2/Llama checkpoints checked against an independent numpy reference
//! (tests/reference/qwen2_ref.py), plus adapters, training, sampling and the factory.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recode_core::api::{FinishReason, Policy, SamplingParams, Sequence};
use recode_core::spec::{AdapterKind, AdapterSpec, TrainingSpec};
use recode_model::byte_codec::ByteCodec;
use recode_model::generate::{completion_logprobs, trim};
use recode_model::load::load_transformer;
use recode_model::model::{Fwd, Step, Transformer};
use recode_model::policy::set_params;
use recode_model::weights::SafetensorsSource;
use recode_model::TransformerPolicy;
use std::path::Path;

mod common;
use common::{adapter, config, seqs, write_tiny};

type B = NdArray<f32>;

/// Tests in this binary run one at a time, so their timings and memory use do not mix. (The
/// call-to-call differences once blamed on concurrency came from burn-ndarray's "simd" feature,
/// now off; see burn/Cargo.toml.)
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn policy(dir: &Path, adapter: AdapterSpec) -> TransformerPolicy<B> {
    let src = SafetensorsSource::from_dir(dir).unwrap();
    let m = load_transformer::<Autodiff<B>>(&config(dir), &src, &adapter, 3, &Default::default()).unwrap();
    let training = TrainingSpec {
        lr: 1e-2,
        ..Default::default()
    };
    TransformerPolicy::new(m, Box::new(ByteCodec { eos: vec![127], pad: 0 }), adapter, &training).unwrap()
}

fn no_adapter() -> AdapterSpec {
    AdapterSpec {
        kind: AdapterKind::None,
        ..Default::default()
    }
}

struct Reference {
    logits: Vec<Vec<Vec<f64>>>,
    logprobs: Vec<Vec<f64>>,
}

/// Run the numpy reference with the tests' pinned Python; `None` (after "skipped: why", a failure
/// under CI=true) when that Python cannot be made.
fn reference(dir: &Path, seqs: &[Sequence], adapter_dir: Option<&Path>) -> Option<Reference> {
    let python = recode_test_support::python("the numpy reference check")?;
    let req = serde_json::json!({
        "seqs": seqs.iter().map(|s| serde_json::json!({"prompt": s.prompt, "completion": s.completion})).collect::<Vec<_>>(),
        "adapter_dir": adapter_dir.map(|p| p.display().to_string()),
    });
    let tag: u64 = rand::random();
    let (rq, out) = (dir.join(format!("req{tag}.json")), dir.join(format!("out{tag}.json")));
    std::fs::write(&rq, req.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/qwen2_ref.py");
    recode_test_support::run_reference(&python, &script, &[dir, &rq, &out]);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let f = |x: &serde_json::Value| x.as_f64().unwrap();
    Some(Reference {
        logits: v["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s.as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_array().unwrap().iter().map(f).collect())
                    .collect()
            })
            .collect(),
        logprobs: v["logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_array().unwrap().iter().map(f).collect())
            .collect(),
    })
}

/// Max relative error, relative to max(1, |reference|).
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// Logits of one unpadded sequence straight from the decoder (no cache).
fn full_logits(m: &Transformer<B>, ids: &[u32]) -> Vec<f32> {
    let st = Step::<B>::new(
        &m.cfg,
        &(0..ids.len()).collect::<Vec<_>>(),
        &[vec![true; ids.len()]],
        0,
        &m.device(),
    );
    m.logits(m.hidden(
        ids,
        &st,
        None,
        Fwd {
            adapters: true,
            train: false,
        },
    ))
    .into_data()
    .iter::<f32>()
    .collect()
}

#[test]
fn forward_logprobs_and_generation_match_numpy() {
    let _serial = serial();
    for (arch, tied) in [("qwen2", false), ("llama", true), ("qwen2", true)] {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path(), arch, tied, 11);
        let mut p = policy(dir.path(), no_adapter());
        let s = seqs();
        let Some(r) = reference(dir.path(), &s, None) else {
            return;
        };
        // Logits of a lone sequence.
        let ids: Vec<u32> = s[0].prompt.iter().chain(&s[0].completion).copied().collect();
        let got = full_logits(&p.inference_model(), &ids);
        let want: Vec<f64> = r.logits[0].iter().flatten().copied().collect();
        let e = rel_err(&got, &want);
        assert!(e <= 1e-4, "{arch}: logits rel err {e}");
        // Batched log-probs with left padding (prompts) and right padding (completions).
        let lp = p.logprobs(&s, true).unwrap();
        for (i, row) in lp.iter().enumerate() {
            let e = rel_err(row, &r.logprobs[i]);
            assert!(e <= 1e-4, "{arch}: logprobs row {i} rel err {e}");
        }
        // Greedy generation through the KV cache, batch with left padding.
        let prompts: Vec<Vec<u32>> = s.iter().map(|x| x.prompt.clone()).collect();
        let params = SamplingParams {
            max_new_tokens: 6,
            temperature: 0.0,
            ..Default::default()
        };
        let gens = p.generate(&prompts, &params).unwrap();
        let gseqs: Vec<Sequence> = gens
            .iter()
            .zip(&prompts)
            .map(|(g, pr)| Sequence {
                prompt: pr.clone(),
                completion: g.tokens.clone(),
            })
            .collect();
        let rg = reference(dir.path(), &gseqs, None).unwrap();
        for (i, g) in gens.iter().enumerate() {
            let e = rel_err(&g.logprobs, &rg.logprobs[i]);
            assert!(e <= 1e-4, "{arch}: generation logprobs row {i} rel err {e}");
            // Greedy picks the argmax of the reference at every step.
            let lg = &rg.logits[i];
            let pl = prompts[i].len();
            for (j, &t) in g.tokens.iter().enumerate() {
                let row = &lg[pl - 1 + j];
                let best = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                assert!(
                    best - row[t as usize] < 1e-5,
                    "{arch}: greedy token {j} of row {i} is not the argmax"
                );
            }
        }
        // Alone vs in a batch: same tokens.
        let alone = p.generate(&prompts[1..2], &params).unwrap();
        assert_eq!(alone[0].tokens, gens[1].tokens);
    }
}

fn randomize_adapters(p: &mut TransformerPolicy<B>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut cur = std::collections::HashMap::new();
    for (n, _, v) in p.trainable_tensors() {
        cur.insert(n, v);
    }
    set_params(p, &mut |n, shape| {
        let c = cur.get(n)?;
        let len: usize = shape.iter().product();
        Some(if n.ends_with("lora_magnitude_vector") {
            c.iter().map(|x| x * (1.0 + 0.3 * (rng.gen::<f32>() - 0.5))).collect()
        } else {
            (0..len).map(|_| 0.2 * (rng.gen::<f32>() - 0.5)).collect()
        })
    });
}

#[test]
fn lora_and_dora_match_numpy_and_start_at_base() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 5);
    let s = seqs();
    for (kind, targets) in [
        (AdapterKind::Lora, vec![]),
        (AdapterKind::Dora, vec!["all-linear"]),
        (AdapterKind::Dora, vec!["q_proj", "down_proj"]),
    ] {
        let mut p = policy(dir.path(), adapter(kind, &targets));
        let base = p.logprobs(&s, false).unwrap();
        assert_eq!(
            p.logprobs(&s, true).unwrap(),
            base,
            "{kind:?}: adapted model must equal the base at init"
        );
        let n = p.trainable_parameters();
        let expect_lora = if targets.is_empty() {
            2 * (4 * (64 + 64) + 4 * (64 + 32))
        } else {
            0
        };
        if kind == AdapterKind::Lora {
            assert_eq!(n, expect_lora);
        }
        randomize_adapters(&mut p, 9);
        let peft = dir.path().join(format!("peft-{kind:?}-{}", targets.len()));
        p.export_peft(&peft).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(peft.join("adapter_config.json")).unwrap()).unwrap();
        assert_eq!(cfg["use_dora"], kind == AdapterKind::Dora);
        let got = p.logprobs(&s, true).unwrap();
        assert_ne!(got, base);
        assert_eq!(
            p.logprobs(&s, false).unwrap(),
            base,
            "disabling adapters gives the base model"
        );
        // The PEFT folder loads back (`load_adapter`, what `recode eval --adapter` and
        // `[model.adapter] init` use) into a fresh policy that then computes the same log-probs.
        let mut back = policy(dir.path(), adapter(kind, &targets));
        back.load_adapter(&peft).unwrap();
        assert_eq!(back.logprobs(&s, true).unwrap(), got, "{kind:?}: PEFT round trip");
        let Some(r) = reference(dir.path(), &s, Some(&peft)) else {
            return;
        };
        for (i, row) in got.iter().enumerate() {
            let e = rel_err(row, &r.logprobs[i]);
            assert!(e <= 1e-4, "{kind:?}: adapted logprobs row {i} rel err {e}");
        }
    }
}

fn all_params(p: &TransformerPolicy<B>) -> Vec<(String, Vec<f32>)> {
    let mut m = p.model().clone();
    let mut out = vec![];
    m.visit_params(&mut |n, p| out.push((n.to_string(), p.to_vec())));
    out
}

#[test]
fn training_touches_only_adapters_and_checkpoints_round_trip() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 7);
    let s = seqs();
    let spec = adapter(AdapterKind::Dora, &[]);
    let mut p = policy(dir.path(), spec.clone());
    let before = all_params(&p);
    let mut lg = |lp: &[Vec<f32>]| -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(lp.iter().map(|r| vec![-1.0 / r.len() as f32; r.len()]).collect())
    };
    p.accumulate_gradients(&s, &mut lg).unwrap();
    let st = p.optimizer_step(1e-2, Some(1e9)).unwrap();
    assert!(st.applied && st.grad_norm > 0.0 && st.grad_norm.is_finite());
    let after = all_params(&p);
    for ((n, a), (_, b)) in before.iter().zip(&after) {
        let adapter = n.contains("lora_");
        if !adapter {
            assert_eq!(a, b, "base parameter {n} changed");
        } else if n.contains("lora_B") || n.contains("magnitude") || n.contains("lora_A") {
            // A gets no gradient while B = 0 (its gradient is B-weighted); B and m must move.
            if !n.contains("lora_A") {
                assert_ne!(a, b, "adapter parameter {n} did not change");
            }
        }
    }
    // The surrogate increases log-probs of the completions.
    let lp0: f32 = p.logprobs(&s, false).unwrap().iter().flatten().sum();
    let lp1: f32 = p.logprobs(&s, true).unwrap().iter().flatten().sum();
    assert!(
        lp1 > lp0,
        "training step should raise completion log-probs ({lp0} -> {lp1})"
    );

    // Clipping reports the pre-clip norm; a NaN gradient skips the step.
    p.accumulate_gradients(&s, &mut lg).unwrap();
    let st = p.optimizer_step(1e-2, Some(1e-3)).unwrap();
    assert!(st.applied && st.grad_norm > 1e-3);
    let mut nan =
        |lp: &[Vec<f32>]| -> anyhow::Result<Vec<Vec<f32>>> { Ok(lp.iter().map(|r| vec![f32::NAN; r.len()]).collect()) };
    p.accumulate_gradients(&s, &mut nan).unwrap();
    let snap = p.trainable_tensors();
    let st = p.optimizer_step(1e-2, Some(1.0)).unwrap();
    assert!(!st.applied);
    assert_eq!(snap, p.trainable_tensors());

    // Save, load into a fresh policy, then one more identical step on both.
    let ck = dir.path().join("ckpt");
    p.save(&ck).unwrap();
    let mut q = policy(dir.path(), spec);
    q.load(&ck).unwrap();
    assert_eq!(q.trainable_tensors(), p.trainable_tensors());
    for x in [&mut p, &mut q] {
        x.accumulate_gradients(&s, &mut lg).unwrap();
        x.optimizer_step(1e-2, Some(1.0)).unwrap();
    }
    let (a, b) = (p.trainable_tensors(), q.trainable_tensors());
    for ((n, _, x), (_, _, y)) in a.iter().zip(&b) {
        let d = x.iter().zip(y).map(|(u, v)| (u - v).abs()).fold(0f32, f32::max);
        assert!(d < 1e-6, "{n}: optimizer state not restored (diff {d})");
    }

    // Full fine-tuning trains everything.
    let full = policy(
        dir.path(),
        AdapterSpec {
            kind: AdapterKind::Full,
            ..Default::default()
        },
    );
    let total: usize = all_params(&full).iter().map(|(_, v)| v.len()).sum();
    assert_eq!(full.trainable_parameters(), total);
}

#[test]
fn sampling_is_seeded_and_stops() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "llama", false, 3);
    let mut p = policy(dir.path(), no_adapter());
    let prompts = vec![vec![1, 2, 3], vec![9], vec![4, 4, 4, 4, 4]];
    let params = SamplingParams {
        max_new_tokens: 12,
        temperature: 0.9,
        top_p: 0.9,
        top_k: 30,
        seed: 7,
        ..Default::default()
    };
    let a = p.generate(&prompts, &params).unwrap();
    let b = p.generate(&prompts, &params).unwrap();
    assert_eq!(
        a.iter().map(|g| &g.tokens).collect::<Vec<_>>(),
        b.iter().map(|g| &g.tokens).collect::<Vec<_>>()
    );
    let c = p
        .generate(
            &prompts,
            &SamplingParams {
                seed: 8,
                ..params.clone()
            },
        )
        .unwrap();
    assert_ne!(
        a.iter().map(|g| &g.tokens).collect::<Vec<_>>(),
        c.iter().map(|g| &g.tokens).collect::<Vec<_>>()
    );
    for g in &a {
        assert!(g.tokens.len() == 12 || g.finish == FinishReason::Eos);
        assert!(g.logprobs.iter().all(|l| l.is_finite() && *l <= 0.0));
    }
    // Plain sampling (no top-k/p) also works.
    let d = p
        .generate(
            &prompts,
            &SamplingParams {
                max_new_tokens: 5,
                seed: 1,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(d.len(), 3);

    let greedy = SamplingParams {
        max_new_tokens: 8,
        temperature: 0.0,
        ..Default::default()
    };
    let g = p.generate(&prompts[..1], &greedy).unwrap().remove(0);
    // Stop on an extra stop id: the id is kept in tokens, left out of the text.
    let e = p
        .generate(
            &prompts[..1],
            &SamplingParams {
                stop_token_ids: vec![g.tokens[1]],
                ..greedy.clone()
            },
        )
        .unwrap()
        .remove(0);
    let first = g.tokens.iter().position(|&t| t == g.tokens[1]).unwrap();
    assert_eq!(e.finish, FinishReason::Eos);
    assert_eq!(e.tokens, g.tokens[..=first].to_vec());
    // Stop string: the text keeps it and ends there.
    let codec = ByteCodec { eos: vec![], pad: 0 };
    use recode_core::api::TextCodec;
    let stop = codec.decode(&g.tokens[2..4]).unwrap();
    let f = p
        .generate(
            &prompts[..1],
            &SamplingParams {
                stop_strings: vec![stop.clone()],
                ..greedy
            },
        )
        .unwrap()
        .remove(0);
    assert_eq!(f.finish, FinishReason::StopString);
    assert!(f.text.ends_with(&stop), "{:?} should end with {stop:?}", f.text);
}

fn real_model() -> Option<std::path::PathBuf> {
    let p = recode_model_formats::fetch::cached_path("qwen2.5-coder-0.5b-instruct").ok()?;
    if p.exists() {
        Some(p)
    } else {
        recode_test_support::skip(&format!(
            "real-model test: {} not present (cargo run -- model fetch qwen2.5-coder-0.5b-instruct)",
            p.display()
        ));
        None
    }
}

fn real_policy(path: &Path, adapter: AdapterSpec) -> TransformerPolicy<B> {
    use recode_core::registry::ModelContext;
    use recode_core::spec::{BackendSpec, ModelSpec};
    let spec = ModelSpec {
        path: path.display().to_string(),
        adapter,
        ..Default::default()
    };
    let (backend, training) = (BackendSpec::default(), TrainingSpec::default());
    let ctx = ModelContext {
        spec: &spec,
        backend: &backend,
        training: &training,
        seed: 1,
    };
    recode_model::build_policy::<B>(&ctx, &Default::default()).unwrap()
}

fn chat(user: &str) -> String {
    format!("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

#[test]
fn real_qwen_writes_factorial() {
    let _serial = serial();
    // Runs whenever the GGUF is cached (not in CI). In this process with the other tests: 30 s on a
    // 2-core machine (206 tokens in 21 s); it took over 10 minutes in session 1, before the decode
    // kernel, the fused CPU ops and the end of the simd "interference".
    let Some(path) = real_model() else { return };
    let mut p = real_policy(&path, no_adapter());
    let prompt = p
        .codec()
        .encode(&chat("Write a Python function that returns the factorial of n"))
        .unwrap();
    let params = SamplingParams {
        max_new_tokens: 300,
        temperature: 0.0,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let g = p.generate(&[prompt], &params).unwrap().remove(0);
    eprintln!(
        "{} tokens in {:.1}s:\n{}",
        g.tokens.len(),
        t.elapsed().as_secs_f64(),
        g.text
    );
    assert_eq!(g.finish, FinishReason::Eos, "should stop at <|im_end|>");
    let im_end = p.codec().encode("<|im_end|>").unwrap();
    assert_eq!(im_end.len(), 1);
    assert_eq!(*g.tokens.last().unwrap(), im_end[0]);
    let code = g
        .text
        .split("```python")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a ```python block");
    // Model-written code runs only in the evaluation sandbox.
    use recode_core::eval::sandbox::{Job, Sandbox, SandboxConfig, TestCase};
    let test = "def test_factorial():\n    assert factorial(0) == 1 and factorial(1) == 1 and factorial(5) == 120 and factorial(10) == 3628800\n";
    let job = Job {
        setup: String::new(),
        candidate: code.to_string(),
        tests: vec![TestCase {
            name: "test_factorial".into(),
            code: test.into(),
            call: "test_factorial()".into(),
        }],
    };
    let r = Sandbox::new(SandboxConfig::default())
        .expect("the evaluation sandbox")
        .run(&job);
    assert!(
        r.outcome.passed(),
        "generated code failed: {:?}\n{}",
        r.outcome,
        r.stderr
    );
}

#[test]
fn forward_is_deterministic() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 5);
    let s = seqs();
    let mut p = policy(dir.path(), no_adapter());
    assert_eq!(p.logprobs(&s, false).unwrap(), p.logprobs(&s, false).unwrap());
}

/// The inference model takes the fused CPU ops (fused.rs), the training model burn's ops: same
/// log-probs on padded batches, with and without adapters.
#[test]
fn fused_cpu_path_matches_burn_ops() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 9);
    let s = seqs();
    for spec in [
        no_adapter(),
        adapter(AdapterKind::Dora, &["q_proj", "v_proj", "up_proj"]),
    ] {
        let mut p = policy(dir.path(), spec);
        randomize_adapters(&mut p, 4);
        let fwd = Fwd {
            adapters: true,
            train: false,
        };
        let fused = completion_logprobs(&p.inference_model(), &s, 0, fwd).unwrap();
        let burn_ops = completion_logprobs(p.model(), &s, 0, fwd).unwrap();
        let (fused, burn_ops) = (trim(fused, &s), trim(burn_ops.inner(), &s));
        for (a, b) in fused.iter().zip(&burn_ops) {
            assert!(!a.is_empty());
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "fused {x} vs burn ops {y}");
            }
        }
    }
}

#[test]
fn factory_errors_are_clean() {
    let _serial = serial();
    use recode_core::registry::{ModelContext, Registry};
    use recode_core::spec::{BackendKind, BackendSpec, ModelSpec, Precision};
    let mut reg = Registry::default();
    recode_model::register(&mut reg);
    let f = reg.model("transformer").expect("registered");
    let training = TrainingSpec::default();
    let run = |path: &str, kind, precision| {
        let spec = ModelSpec {
            path: path.into(),
            adapter: no_adapter(),
            ..Default::default()
        };
        let backend = BackendSpec {
            kind,
            device: 0,
            precision,
        };
        f(&ModelContext {
            spec: &spec,
            backend: &backend,
            training: &training,
            seed: 0,
        })
        .err()
        .map(|e| format!("{e:#}"))
    };
    let e = run("/nonexistent", BackendKind::Cpu, Precision::F16).unwrap();
    assert!(e.contains("f32 only"), "{e}");
    let e = run("/nonexistent/model", BackendKind::Cpu, Precision::F32).unwrap();
    assert!(e.contains("/nonexistent/model"), "{e}");
    // A second precision on a device this process already used is refused (burn keeps one float
    // dtype per device type per process), not silently run at the first one.
    let _ = Tensor::<B, 1>::zeros([1], &Default::default());
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-qwen2");
    let spec = ModelSpec {
        path: tiny.display().to_string(),
        adapter: no_adapter(),
        ..Default::default()
    };
    let backend = BackendSpec {
        kind: BackendKind::Cpu,
        device: 0,
        precision: Precision::F32,
    };
    let ctx = ModelContext {
        spec: &spec,
        backend: &backend,
        training: &training,
        seed: 0,
    };
    let e = recode_model::build_policy::<NdArray<f64>>(&ctx, &Default::default())
        .err()
        .expect("an f64 model after f32 tensors");
    assert!(format!("{e:#}").contains("one precision per process"), "{e:#}");
    // CUDA, when asked for (RECODE_TEST_CUDA=1, the model cached): with an NVIDIA device the
    // model builds; without one the factory returns an error, not a panic or abort.
    let cuda_device = Path::new("/dev/nvidiactl").exists();
    match real_model() {
        Some(p) if std::env::var("RECODE_TEST_CUDA").is_ok() => {
            let e = run(&p.display().to_string(), BackendKind::Cuda, Precision::F32);
            eprintln!("cuda (device present: {cuda_device}): {e:?}");
            if cuda_device {
                assert!(
                    e.is_none(),
                    "a CUDA device is present but the model did not build: {e:?}"
                );
            } else {
                assert!(
                    e.as_deref().is_some_and(|e| e.contains("cuda")),
                    "no CUDA device: expected an error naming cuda, got {e:?}"
                );
            }
        }
        _ if cuda_device => {
            recode_test_support::skip("CUDA check: set RECODE_TEST_CUDA=1 (with the model cached) to run it")
        }
        _ => recode_test_support::skip("CUDA check: no CUDA device"),
    }
}

/// `got` `[m, n]` against the f64 sums over i of `term(r, j, i)`, within 1e-5 relative.
fn assert_matches_f64(got: &[f32], (m, k, n): (usize, usize, usize), term: impl Fn(usize, usize, usize) -> f64) {
    for r in 0..m {
        for j in 0..n {
            let want: f64 = (0..k).map(|i| term(r, j, i)).sum();
            let g = got[r * n + j] as f64;
            assert!(
                (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "({m},{k},{n}) out[{r},{j}] = {g}, want {want}"
            );
        }
    }
}

/// The CPU decode kernel (cpu::small_matmul) against a plain f64 matmul, over shapes that hit
/// every path: 1-16 rows (row blocks of 1-8), 32- and 16-column tiles and single-column
/// remainders, one or many column blocks, one and several passes over k, one or two threads.
#[test]
fn decode_kernel_matches_a_naive_matmul() {
    let _serial = serial();
    let dev = Default::default();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &(m, k, n) in &[
        (1, 7, 5),
        (3, 33, 17),
        (4, 16, 48),
        (5, 100, 130),
        (8, 64, 300),
        (16, 40, 9000),
        (8, 300, 1000),
        (2, 17, 8200),
    ] {
        let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let xt = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [m, k]), &dev);
        let wt = Tensor::<B, 2>::from_data(TensorData::new(w.clone(), [k, n]), &dev);
        let Some(got) = recode_model::cpu::small_matmul(&xt, &wt) else {
            recode_test_support::skip("decode kernel check: no AVX2/FMA on this CPU, the kernel is not used");
            return;
        };
        assert_eq!(got.dims(), [m, n]);
        let got: Vec<f32> = got.into_data().to_vec().unwrap();
        assert_matches_f64(&got, (m, k, n), |r, j, i| x[r * k + i] as f64 * w[i * n + j] as f64);
        let again: Vec<f32> = recode_model::cpu::small_matmul(&xt, &wt)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(got, again, "({m},{k},{n}) not reproducible");
    }
    // Several weights in one pass (q/k/v): bit-identical to one call per weight, whatever the split.
    for &(m, k, ref ns) in &[
        (8usize, 64usize, vec![300usize, 40, 1000]),
        (3, 896, vec![896, 128, 128]),
        (1, 20, vec![5]),
    ] {
        let x = Tensor::<B, 2>::random([m, k], burn::tensor::Distribution::Default, &dev);
        let ws: Vec<Tensor<B, 2>> = ns
            .iter()
            .map(|&n| Tensor::random([k, n], burn::tensor::Distribution::Default, &dev))
            .collect();
        let refs: Vec<&Tensor<B, 2>> = ws.iter().collect();
        let many = recode_model::cpu::small_matmul_many(&x, &refs).unwrap();
        for (w, got) in ws.iter().zip(many) {
            let alone = recode_model::cpu::small_matmul(&x, w).unwrap();
            assert_eq!(
                got.into_data().to_vec::<f32>().unwrap(),
                alone.into_data().to_vec::<f32>().unwrap(),
                "({m},{k},{ns:?})"
            );
        }
    }
    // More than 16 rows is not the kernel's job.
    let x = Tensor::<B, 2>::zeros([17, 8], &dev);
    assert!(recode_model::cpu::small_matmul(&x, &Tensor::<B, 2>::zeros([8, 8], &dev)).is_none());
}

/// The tied-head kernel (cpu::small_matmul_nt, x @ e^T with e stored [vocab, hidden]) against a
/// plain f64 matmul, one thread and the pool's split; repeated calls bit-identical.
#[test]
fn tied_head_kernel_matches_a_naive_matmul() {
    let _serial = serial();
    let dev = Default::default();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for &(m, k, n) in &[(1, 7, 5), (3, 33, 17), (8, 576, 3000), (16, 40, 9000)] {
        let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let e: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let xt = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [m, k]), &dev);
        let et = Tensor::<B, 2>::from_data(TensorData::new(e.clone(), [n, k]), &dev);
        let got: Vec<f32> = recode_model::cpu::small_matmul_nt(&xt, &et)
            .expect("CPU tensors")
            .into_data()
            .to_vec()
            .unwrap();
        assert_matches_f64(&got, (m, k, n), |r, j, i| x[r * k + i] as f64 * e[j * k + i] as f64);
        let again: Vec<f32> = recode_model::cpu::small_matmul_nt(&xt, &et)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(got, again, "({m},{k},{n}) not reproducible");
    }
    let x = Tensor::<B, 2>::zeros([17, 8], &dev);
    assert!(recode_model::cpu::small_matmul_nt(&x, &Tensor::<B, 2>::zeros([8, 8], &dev)).is_none());
}

/// Rollout takes the adapters merged into the weights (merge.rs). Against today's unmerged path
/// (`generate` on the inference model with adapters applied per token): the same sampled tokens
/// for a fixed seed, and log-probs within float rounding. Groups of identical prompts share one
/// prefill and rows that finish leave the batch; every row's reported log-probs still equal a
/// full forward of its prompt + completion.
#[test]
fn merged_adapters_shared_prefill_and_finished_rows_match_the_unmerged_path() {
    use recode_core::api::TextCodec;
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 21);
    for kind in [AdapterKind::Lora, AdapterKind::Dora] {
        let mut p = policy(dir.path(), adapter(kind, &["q_proj", "v_proj", "down_proj"]));
        randomize_adapters(&mut p, 13);
        let (a, b) = (vec![5u32, 9, 33, 2, 71], vec![8u32, 8, 1]);
        // A group of 3 (shared prefill), another prompt, and the group again.
        let prompts = vec![a.clone(), a.clone(), a.clone(), b.clone(), a.clone()];
        // Many stop ids so that rows finish at different steps (and the batch shrinks).
        let stops: Vec<u32> = (0..128).filter(|t| t % 9 == 0).collect();
        let params = SamplingParams {
            max_new_tokens: 20,
            temperature: 1.0,
            seed: 3,
            stop_token_ids: stops,
            ..Default::default()
        };
        let merged = p.generate(&prompts, &params).unwrap();
        let codec = ByteCodec { eos: vec![127], pad: 0 };
        let unmerged =
            recode_model::generate::generate(&p.inference_model(), &codec as &dyn TextCodec, &prompts, &params, true)
                .unwrap();
        let lens: Vec<usize> = merged.iter().map(|g| g.tokens.len()).collect();
        assert!(
            lens.iter().any(|&l| l < 20) && lens.iter().any(|&l| l > lens[0].min(lens[1])),
            "{kind:?}: rows should finish at different steps: {lens:?}"
        );
        for (m, u) in merged.iter().zip(&unmerged) {
            assert_eq!(m.tokens, u.tokens, "{kind:?}: merged and unmerged sampling differ");
            for (x, y) in m.logprobs.iter().zip(&u.logprobs) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "{kind:?}: merged logprob {x} vs unmerged {y}"
                );
            }
        }
        let gseqs: Vec<Sequence> = merged
            .iter()
            .zip(&prompts)
            .map(|(g, pr)| Sequence {
                prompt: pr.clone(),
                completion: g.tokens.clone(),
            })
            .collect();
        let fwd = Fwd {
            adapters: true,
            train: false,
        };
        let full = trim(
            completion_logprobs(&p.inference_model(), &gseqs, 0, fwd).unwrap(),
            &gseqs,
        );
        for (r, (g, f)) in merged.iter().zip(&full).enumerate() {
            for (x, y) in g.logprobs.iter().zip(f) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{kind:?} row {r}: sampled logprob {x} vs full forward {y}"
                );
            }
        }
        // The merged copy follows the weights: after they change, rollout sees the new ones.
        let before = p.logprobs(&gseqs, true).unwrap();
        randomize_adapters(&mut p, 14);
        assert_ne!(
            p.logprobs(&gseqs, true).unwrap(),
            before,
            "{kind:?}: stale merged weights"
        );
    }
}

/// Rows that share a prompt run it once (its KV copied to the group's rows): the same log-probs
/// as the packed path, on the fused inference path and on the autodiff path, and the same
/// gradients; and both against the numpy reference.
#[test]
fn shared_prompt_logprobs_and_gradients_match_the_packed_path() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 23);
    let (a, b) = (vec![5u32, 9, 33, 2, 77, 1, 64], vec![12u32, 40]);
    let s = vec![
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
            completion: vec![6],
        },
        Sequence {
            prompt: a.clone(),
            completion: vec![1, 2, 3, 4, 5, 6, 7],
        },
        Sequence {
            prompt: b.clone(),
            completion: vec![],
        },
    ];
    let mut p = policy(dir.path(), adapter(AdapterKind::Dora, &["q_proj", "v_proj", "up_proj"]));
    randomize_adapters(&mut p, 5);
    let fwd = Fwd {
        adapters: true,
        train: false,
    };
    let close = |x: &[Vec<f32>], y: &[Vec<f32>], what: &str| {
        for (r, (u, v)) in x.iter().zip(y).enumerate() {
            assert_eq!(u.len(), v.len());
            for (a, b) in u.iter().zip(v) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{what} row {r}: {a} vs {b}");
            }
        }
    };
    let im = p.inference_model();
    let shared = trim(completion_logprobs(&im, &s, 0, fwd).unwrap(), &s);
    let packed = trim(recode_model::generate::packed_logprobs(&im, &s, 0, fwd).unwrap(), &s);
    close(&shared, &packed, "fused path");
    let train = Fwd {
        adapters: true,
        train: true,
    };
    let weights: Vec<f32> = (0..s.len() * 7).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect();
    let grad_of = |lp: Tensor<Autodiff<B>, 2>| {
        let [rows, cols] = lp.dims();
        let mut w = vec![0f32; rows * cols];
        for (r, sq) in s.iter().enumerate() {
            for j in 0..sq.completion.len() {
                w[r * cols + j] = weights[r * 7 + j];
            }
        }
        let w = Tensor::<Autodiff<B>, 2>::from_data(TensorData::new(w, [rows, cols]), &Default::default());
        let g = (lp * w).sum().backward();
        let l0 = &p.model().layers[0];
        let grad = |t: Tensor<Autodiff<B>, 2>| t.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap();
        (
            grad(l0.self_attn.q_proj.lora_b.as_ref().unwrap().val()),
            grad(l0.mlp.up_proj.lora_a.as_ref().unwrap().val()),
        )
    };
    let ad_shared = completion_logprobs(p.model(), &s, 0, train).unwrap();
    let ad_packed = recode_model::generate::packed_logprobs(p.model(), &s, 0, train).unwrap();
    close(
        &trim(ad_shared.clone().inner(), &s),
        &trim(ad_packed.clone().inner(), &s),
        "autodiff path",
    );
    let (g1, g2) = (grad_of(ad_shared), grad_of(ad_packed));
    for (x, y) in [(&g1.0, &g2.0), (&g1.1, &g2.1)] {
        let scale = y.iter().map(|v| v.abs()).fold(0f32, f32::max);
        assert!(scale > 0.0, "no gradient reached the adapter");
        let d = x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d <= 1e-4 * scale, "gradients differ: max diff {d} at scale {scale}");
    }
    let peft = dir.path().join("peft");
    p.export_peft(&peft).unwrap();
    let nonempty: Vec<Sequence> = s.iter().filter(|x| !x.completion.is_empty()).cloned().collect();
    let Some(r) = reference(dir.path(), &nonempty, Some(&peft)) else {
        return;
    };
    let got = p.logprobs(&nonempty, true).unwrap();
    for (i, row) in got.iter().enumerate() {
        let e = rel_err(row, &r.logprobs[i]);
        assert!(e <= 1e-4, "shared-prompt logprobs row {i} vs numpy: rel err {e}");
    }
}

/// Full fine-tuning has no adapters to switch off: its reference is a frozen copy of the initial
/// weights, so after an update the reference log-probs stay where they were (and KL > 0).
#[test]
fn full_fine_tuning_keeps_a_frozen_reference() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "llama", false, 4);
    let s = seqs();
    let mut p = policy(
        dir.path(),
        AdapterSpec {
            kind: AdapterKind::Full,
            ..Default::default()
        },
    );
    let before = p.logprobs(&s, false).unwrap();
    assert_eq!(
        p.logprobs(&s, true).unwrap(),
        before,
        "policy and reference start equal"
    );
    let mut lg =
        |lp: &[Vec<f32>]| -> anyhow::Result<Vec<Vec<f32>>> { Ok(lp.iter().map(|r| vec![-1.0; r.len()]).collect()) };
    p.accumulate_gradients(&s, &mut lg).unwrap();
    assert!(p.optimizer_step(1e-2, Some(1.0)).unwrap().applied);
    assert_eq!(
        p.logprobs(&s, false).unwrap(),
        before,
        "the reference must not follow the update"
    );
    let after = p.logprobs(&s, true).unwrap();
    // k3 estimator of KL(policy || reference), as GRPO logs it: exp(r - p) - (r - p) - 1.
    let kl: f32 = after
        .iter()
        .flatten()
        .zip(before.iter().flatten())
        .map(|(p, r)| (r - p).exp() - (r - p) - 1.0)
        .sum();
    assert!(
        kl > 1e-6,
        "KL to the reference should be positive after an update, got {kl}"
    );
}

/// The chunked selective log-softmax (no `[rows, vocab]` tensor in the graph) gives the values of
/// the plain `log_softmax(logits)[target]` and the same adapter gradients, for an untied (Qwen2)
/// and a tied (Llama) head, with chunks of 3 rows so that a partial last chunk is covered.
#[test]
fn selected_logprobs_match_the_full_log_softmax_and_its_gradients() {
    use burn::tensor::activation::log_softmax;
    use burn::tensor::Int;
    use recode_model::generate::selected_logprobs;
    let _serial = serial();
    for (arch, tied) in [("qwen2", false), ("llama", true)] {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path(), arch, tied, 31);
        let mut p = policy(dir.path(), adapter(AdapterKind::Dora, &["q_proj", "v_proj", "up_proj"]));
        randomize_adapters(&mut p, 8);
        let m = p.model();
        assert!(!m.head_trains(), "{arch}: DoRA leaves the head frozen");
        let ids: Vec<u32> = (0..14).map(|i| (i * 37 + 5) % 127).collect();
        let st = Step::new(
            &m.cfg,
            &(0..ids.len()).collect::<Vec<_>>(),
            &[vec![true; ids.len()]],
            0,
            &m.device(),
        );
        let targets: Vec<i64> = ids.iter().skip(1).chain([&3]).map(|&t| t as i64).collect();
        let weights: Vec<f32> = (0..ids.len()).map(|i| ((i * 7 % 5) as f32 - 2.0) / 3.0).collect();
        let run = |chunked: bool| {
            let h = m.hidden(
                &ids,
                &st,
                None,
                Fwd {
                    adapters: true,
                    train: true,
                },
            );
            let lp = if chunked {
                selected_logprobs(m, h, &targets, 3 * m.cfg.vocab_size)
            } else {
                let t = Tensor::<Autodiff<B>, 1, Int>::from_data(
                    TensorData::new(targets.clone(), [ids.len()]),
                    &m.device(),
                );
                log_softmax(m.logits(h), 1).gather(1, t.reshape([ids.len(), 1]))
            };
            let w = Tensor::<Autodiff<B>, 2>::from_data(TensorData::new(weights.clone(), [ids.len(), 1]), &m.device());
            let g = (lp.clone() * w).sum().backward();
            let l0 = &m.layers[0];
            let grad = |t: Tensor<Autodiff<B>, 2>| t.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap();
            let mag = l0
                .self_attn
                .v_proj
                .magnitude
                .as_ref()
                .unwrap()
                .val()
                .grad(&g)
                .unwrap()
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            let values = lp.inner().into_data().to_vec::<f32>().unwrap();
            (
                values,
                vec![
                    grad(l0.self_attn.q_proj.lora_b.as_ref().unwrap().val()),
                    grad(l0.mlp.up_proj.lora_a.as_ref().unwrap().val()),
                    mag,
                ],
            )
        };
        let ((v1, g1), (v2, g2)) = (run(true), run(false));
        for (a, b) in v1.iter().zip(&v2) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{arch}: log-prob {a} vs {b}");
        }
        for (x, y) in g1.iter().zip(&g2) {
            let scale = y.iter().map(|v| v.abs()).fold(0f32, f32::max);
            assert!(scale > 0.0, "{arch}: no gradient reached the adapter");
            let d = x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(
                d <= 1e-4 * scale,
                "{arch}: gradients differ: max diff {d} at scale {scale}"
            );
        }
    }
    // Full fine-tuning trains the head: the plain graph, so the head gets its gradient.
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), "qwen2", false, 31);
    let p = policy(
        dir.path(),
        AdapterSpec {
            kind: AdapterKind::Full,
            ..Default::default()
        },
    );
    assert!(p.model().head_trains());
}
