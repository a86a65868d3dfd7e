//! GSPO, CISPO, RLOO, REINFORCE++(-baseline) and the rollout correction against
//! tests/reference/algo_families_ref.py (independent pure Python: losses as TRL/verl write them,
//! gradients by finite differences there), plus hand-computed values that need no Python.
use super::*;
use serde_json::Value;

fn reference() -> Option<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/reference/algo_families_ref.py");
    let python = recode_test_support::python("algorithm formulas vs tests/reference/algo_families_ref.py")?;
    let out = std::process::Command::new(python)
        .arg(script)
        .output()
        .expect("run the tests' python");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("the script prints JSON"))
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

fn aggregation(name: &str, max_len: usize) -> Aggregation {
    match name {
        "grpo" => Aggregation::SeqMeanTokenMean,
        "bnpo" => Aggregation::TokenMean,
        "dr_grpo" => Aggregation::SeqSumConstant { max_len },
        "seq_mean_token_sum" => Aggregation::SeqMeanTokenSum,
        other => panic!("unknown aggregation {other}"),
    }
}

fn is_mode(name: &str) -> RolloutIsMode {
    serde_json::from_value(Value::String(name.into())).unwrap()
}

/// Our loss for one reference case's config.
fn run_case(cfg: &Value, b: &LossBatch<'_>) -> LossOutput {
    let num = |k: &str| cfg[k].as_f64().unwrap();
    let max_len = cfg["max_len"].as_u64().unwrap() as usize;
    let aggregation = aggregation(cfg["agg"].as_str().unwrap(), max_len);
    let rollout_is = RolloutIs {
        mode: is_mode(cfg["is_mode"].as_str().unwrap()),
        cap: num("is_cap"),
    };
    let clip = Clip {
        eps_low: num("eps_low"),
        eps_high: num("eps_high"),
        dual_clip: cfg["dual_clip"].as_f64(),
    };
    let pg = PgLossConfig {
        clip,
        beta: num("beta"),
        aggregation,
        rollout_is,
    };
    match cfg["loss"].as_str().unwrap() {
        "pg" => policy_gradient_loss(b, &pg),
        "gspo" => gspo_loss(b, &pg),
        "cispo" => {
            let c = CispoConfig {
                max_ratio: num("max_ratio"),
                min_ratio: cfg["min_ratio"].as_f64(),
                beta: pg.beta,
                aggregation,
                rollout_is,
            };
            cispo_loss(b, &c)
        }
        other => panic!("unknown loss {other}"),
    }
    .unwrap()
}

#[test]
fn losses_and_gradients_match_the_python_reference() {
    let Some(r) = reference() else { return };
    let bj = &r["batch"];
    let (logp, old, refp, sampler, mask, adv) = (
        f32s(&bj["logp"]),
        f32s(&bj["old"]),
        f32s(&bj["ref"]),
        f32s(&bj["sampler"]),
        f32s(&bj["mask"]),
        f32s(&bj["adv"]),
    );
    let b = LossBatch {
        rows: bj["rows"].as_u64().unwrap() as usize,
        cols: bj["cols"].as_u64().unwrap() as usize,
        logp: &logp,
        old_logp: &old,
        ref_logp: Some(&refp),
        sampler_logp: Some(&sampler),
        advantages: &adv,
        mask: &mask,
        norm_rows: bj["norm_rows"].as_u64().unwrap() as usize,
        norm_tokens: bj["norm_tokens"].as_f64().unwrap(),
    };
    let cases = r["losses"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        let out = run_case(&c["config"], &b);
        let (want, want_grad) = (c["loss"].as_f64().unwrap(), f64s(&c["grad"]));
        // f32 inputs vs Python's f64 and a finite-difference gradient: agree to ~1e-6.
        assert!(
            close(out.loss, want, 2e-6),
            "{}: loss {} vs {want}",
            c["config"],
            out.loss
        );
        for (i, (g, w)) in out.grad.iter().zip(&want_grad).enumerate() {
            assert!(
                (*g as f64 - w).abs() < 2e-5 * (1.0 + w.abs()),
                "{} token {i}: grad {g} vs {w}",
                c["config"]
            );
        }
    }
    for (mode, want) in r["is_weights"].as_object().unwrap() {
        let w = rollout_is_weights(
            &b,
            &RolloutIs {
                mode: is_mode(mode),
                cap: 1.5,
            },
        )
        .unwrap()
        .unwrap();
        for (i, (g, w)) in w.weights.iter().zip(f64s(want)).enumerate() {
            assert!(close(*g, w, 1e-6), "{mode} token {i}: {g} vs {w}");
        }
    }
}

#[test]
fn advantages_match_the_python_reference() {
    let Some(r) = reference() else { return };
    for c in r["advantages"].as_array().unwrap() {
        let (rewards, g) = (f64s(&c["rewards"]), c["group_size"].as_u64().unwrap() as usize);
        let lengths: Vec<usize> = f64s(&c["lengths"]).into_iter().map(|x| x as usize).collect();
        let got = match c["estimator"].as_str().unwrap() {
            "rloo" => rloo_advantages(&rewards, g),
            "rpp" => reinforce_pp_advantages(&rewards, g, &lengths),
            "rpp_baseline" => reinforce_pp_baseline_advantages(&rewards, g, &lengths),
            other => panic!("unknown estimator {other}"),
        }
        .unwrap();
        for (i, (a, w)) in got.iter().zip(f64s(&c["want"])).enumerate() {
            assert!(
                close(*a, w, 1e-12),
                "{} group {g} index {i}: {a} vs {w}",
                c["estimator"]
            );
        }
    }
}

#[test]
fn rloo_by_hand_with_ties_and_zero_variance() {
    // [1, 1, 0]: mean of the others 0.5, 0.5, 1 → 0.5, 0.5, −1. Constant group → exact zeros.
    assert_eq!(
        rloo_advantages(&[1.0, 1.0, 0.0, 0.4, 0.4, 0.4], 3).unwrap(),
        vec![0.5, 0.5, -1.0, 0.0, 0.0, 0.0]
    );
    assert_eq!(rloo_advantages(&[0.3, 0.9], 1).unwrap(), vec![0.3, 0.9]);
    assert!(rloo_advantages(&[1.0, f64::NAN], 2)
        .unwrap_err()
        .to_string()
        .contains("reward 1"));
}

#[test]
fn token_whitening_by_hand() {
    // Values 1 (3 tokens) and 0 (1 token): μ = 3/4; Σ l(x−μ)² = 3/16 + 9/16 = 3/4, unbiased over 4
    // tokens: var = 1/4 → A = (1/4, −3/4) / sqrt(1/4 + 1e-8).
    let a = token_whiten(&[1.0, 0.0], &[3, 1]).unwrap();
    let s = (0.25f64 + WHITEN_EPS).sqrt();
    assert!(close(a[0], 0.25 / s, 1e-15) && close(a[1], -0.75 / s, 1e-15), "{a:?}");
    // Constant values and one-token batches give zeros, not NaN; lengths must match.
    assert_eq!(
        reinforce_pp_baseline_advantages(&[0.7; 4], 2, &[1, 2, 3, 4]).unwrap(),
        vec![0.0; 4]
    );
    assert_eq!(token_whiten(&[2.0, 5.0], &[1, 0]).unwrap()[0], 0.0);
    assert!(token_whiten(&[1.0], &[1, 2]).is_err());
}

fn one_row<'a>(logp: &'a [f32], old: &'a [f32], sampler: Option<&'a [f32]>, adv: &'a [f32]) -> LossBatch<'a> {
    LossBatch {
        rows: 1,
        cols: logp.len(),
        logp,
        old_logp: old,
        ref_logp: None,
        sampler_logp: sampler,
        advantages: adv,
        mask: &[1.0; 4][..logp.len()],
        norm_rows: 1,
        norm_tokens: logp.len() as f64,
    }
}

#[test]
fn gspo_gradient_by_hand() {
    // Row of 2 tokens with log ratios 0.2 and 0: s = e^0.1, inside a wide clip; A = −1; one row,
    // sequence mean: loss = −s·A = s, d/dlogpₜ = −A·s/|y| = s/2 on both tokens.
    let cfg = PgLossConfig {
        clip: Clip {
            eps_low: 0.2,
            eps_high: 0.2,
            dual_clip: None,
        },
        beta: 0.0,
        aggregation: Aggregation::SeqMeanTokenMean,
        rollout_is: RolloutIs::default(),
    };
    let out = gspo_loss(&one_row(&[-1.0, -2.0], &[-1.2, -2.0], None, &[-1.0]), &cfg).unwrap();
    let s = 0.1f64.exp();
    assert!(close(out.loss, s, 1e-6), "{}", out.loss);
    assert!(
        out.grad.iter().all(|g| close(*g as f64, s / 2.0, 1e-6)),
        "{:?}",
        out.grad
    );
}

#[test]
fn rollout_correction_by_hand_and_errors() {
    // ρ = exp(old − sampler) = e^1, e^−1 per token; sequence ρ = e^0 = 1.
    let (lp, sampler) = ([-1.0f32, -1.0], [-2.0f32, 0.0]);
    let b = one_row(&lp, &lp, Some(&sampler), &[1.0]);
    let w = |mode| rollout_is_weights(&b, &RolloutIs { mode, cap: 2.0 }).unwrap().unwrap();
    let t = w(RolloutIsMode::TokenTruncate);
    assert!(close(t.weights[0], 2.0, 1e-12) && close(t.weights[1], (-1f64).exp(), 1e-7));
    assert_eq!(t.capped_frac, 0.5);
    assert_eq!(w(RolloutIsMode::TokenMask).weights[0], 0.0);
    assert_eq!(w(RolloutIsMode::SequenceMask).weights, vec![1.0, 1.0]);
    assert!(
        rollout_is_weights(&b, &RolloutIs::default()).unwrap().is_none(),
        "off by default"
    );
    // The weighted loss: ρ = 1 on the trainer side, loss −A·w per token, token mean.
    let cfg = PgLossConfig {
        clip: Clip {
            eps_low: 0.2,
            eps_high: 0.2,
            dual_clip: None,
        },
        beta: 0.0,
        aggregation: Aggregation::TokenMean,
        rollout_is: RolloutIs {
            mode: RolloutIsMode::TokenTruncate,
            cap: 2.0,
        },
    };
    let out = policy_gradient_loss(&b, &cfg).unwrap();
    assert!(close(out.loss, -(2.0 + (-1f64).exp()) / 2.0, 1e-6), "{}", out.loss);
    let m: std::collections::HashMap<_, _> = out.metrics.into_iter().collect();
    assert_eq!(m["sampling/importance_sampling_ratio/capped_frac"], 0.5);
    // Asking for the correction without sampler log-probs is an error naming them.
    let e = policy_gradient_loss(&one_row(&lp, &lp, None, &[1.0]), &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sampler_logp") && e.contains("token_truncate"), "{e}");
}
