//! Expected values come from tests/reference/algo_ref.py (independent pure Python) or by hand.
use super::*;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

fn assert_all_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(close(*g, *w, tol), "index {i}: got {g}, want {w}");
    }
}

const RW: [f64; 8] = [1.0, 0.0, 0.5, 0.25, 2.0, 2.0, 2.0, 2.0];

#[test]
fn grpo_advantages_match_reference() {
    let g = grpo_advantages(&RW, 4, ScaleRewards::Group, GRPO_STD_EPS).unwrap();
    let want = [
        1.3171565993073961,
        -1.0244551327946414,
        0.14635073325637735,
        -0.43905219976913207,
        0.,
        0.,
        0.,
        0.,
    ];
    assert_all_close(&g, &want, 1e-12);
    let b = grpo_advantages(&RW, 4, ScaleRewards::Batch, GRPO_STD_EPS).unwrap();
    let want = [
        0.6386086854181451,
        -0.49669564421411283,
        0.07095652060201611,
        -0.21286956180604835,
        0.,
        0.,
        0.,
        0.,
    ];
    assert_all_close(&b, &want, 1e-12);
    let n = grpo_advantages(&RW, 4, ScaleRewards::None, GRPO_STD_EPS).unwrap();
    assert_all_close(&n, &[0.5625, -0.4375, 0.0625, -0.1875, 0., 0., 0., 0.], 1e-15);
    assert_eq!(dr_grpo_advantages(&RW, 4).unwrap(), n);
}

#[test]
fn advantage_edge_cases() {
    // All rewards equal: zero advantages, no NaN (std 0 + eps).
    assert_eq!(
        grpo_advantages(&[0.7; 6], 3, ScaleRewards::Group, GRPO_STD_EPS).unwrap(),
        vec![0.0; 6]
    );
    assert_eq!(
        grpo_advantages(&[0.7; 6], 3, ScaleRewards::Batch, GRPO_STD_EPS).unwrap(),
        vec![0.0; 6]
    );
    // Group of one: r − mean = 0.
    assert_eq!(
        grpo_advantages(&[0.3, 0.9], 1, ScaleRewards::Group, GRPO_STD_EPS).unwrap(),
        vec![0.0, 0.0]
    );
    // Bad shapes and values are errors naming the problem.
    let e = grpo_advantages(&[1.0, 2.0, 3.0], 2, ScaleRewards::Group, GRPO_STD_EPS).unwrap_err();
    assert!(e.to_string().contains("groups of 2"), "{e}");
    assert!(grpo_advantages(&[1.0], 0, ScaleRewards::Group, GRPO_STD_EPS).is_err());
    let e = dr_grpo_advantages(&[1.0, f64::NAN], 2).unwrap_err();
    assert!(e.to_string().contains("reward 1"), "{e}");
}

#[test]
fn keep_group_by_variance() {
    assert!(group_has_variance(&[0.0, 1.0]));
    assert!(!group_has_variance(&[1.0, 1.0, 1.0]));
    assert!(!group_has_variance(&[1.0]));
}

#[test]
fn std_is_unbiased() {
    // By hand: [1, 3] mean 2, squared deviations 1 + 1, / (n − 1) = 2.
    assert!(close(std_unbiased(&[1.0, 3.0]), 2f64.sqrt(), 1e-15));
}

const CLIP: Clip = Clip {
    eps_low: 0.2,
    eps_high: 0.28,
    dual_clip: None,
};
const DUAL: Clip = Clip {
    eps_low: 0.2,
    eps_high: 0.28,
    dual_clip: Some(3.0),
};

#[test]
fn token_policy_loss_matches_reference() {
    // (logp, old, A, loss, loss with dual clip c = 3, clipped, dual clipped)
    let cases = [
        (-1.0, -1.3, 0.8, -1.024, -1.024, true, false),
        (-1.0, -1.3, -0.8, 1.0798870460608025, 1.0798870460608025, false, false),
        (
            -1.6,
            -1.0,
            0.8,
            -0.43904930887522114,
            -0.43904930887522114,
            false,
            false,
        ),
        (-1.6, -1.0, -0.8, 0.6400000000000001, 0.6400000000000001, true, false),
        (0.5, -1.0, -2.0, 8.963378140676129, 6.0, false, true),
        (-0.5, -0.4, 1.1, -0.9953211598395557, -0.9953211598395557, false, false),
    ];
    for (lp, old, a, want, want_dual, clipped, dual_clipped) in cases {
        let t = clipped_policy_loss(lp, old, a, &CLIP);
        assert!(close(t.loss, want, 1e-12), "{lp} {old} {a}: {} vs {want}", t.loss);
        assert_eq!(t.clipped, clipped, "clipped flag at {lp} {old} {a}");
        let d = clipped_policy_loss(lp, old, a, &DUAL);
        assert!(
            close(d.loss, want_dual, 1e-12),
            "dual {lp} {old} {a}: {} vs {want_dual}",
            d.loss
        );
        assert_eq!(d.dual_clipped, dual_clipped);
        // Gradient: −ρA on the unclipped branch, 0 when clipped.
        let want_grad = if clipped { 0.0 } else { -ratio(lp, old) * a };
        assert!(close(t.grad, want_grad, 1e-12));
    }
    // ρ = 1 (first pass): loss = −A, gradient −A.
    let t = clipped_policy_loss(-0.7, -0.7, 0.5, &CLIP);
    assert_eq!((t.loss, t.grad, t.clipped), (-0.5, -0.5, false));
}

fn fd(f: impl Fn(f64) -> f64, x: f64) -> f64 {
    let h = 1e-6;
    (f(x + h) - f(x - h)) / (2.0 * h)
}

#[test]
fn token_gradients_match_finite_differences() {
    for &(old, a) in &[(-1.0, 0.8), (-1.0, -0.8), (-0.2, 1.5), (-0.2, -1.5)] {
        // Sweep logp over all regions, avoiding the kinks at the clip boundaries.
        for k in 0..40 {
            let lp = old - 1.0 + k as f64 * 0.0537;
            for clip in [&CLIP, &DUAL] {
                let g = clipped_policy_loss(lp, old, a, clip).grad;
                let n = fd(|x| clipped_policy_loss(x, old, a, clip).loss, lp);
                assert!(
                    (g - n).abs() < 1e-6,
                    "lp {lp} old {old} A {a}: analytic {g}, numeric {n}"
                );
            }
        }
    }
    for &(lp, r) in &[(-1.0, -1.3), (-2.0, -0.5), (-0.7, -0.7), (0.0, -4.0)] {
        let (kl, g) = kl_k3(lp, r);
        assert!(kl >= 0.0);
        assert!((g - fd(|x| kl_k3(x, r).0, lp)).abs() < 1e-6);
    }
}

#[test]
fn kl_k3_matches_reference() {
    assert!(close(kl_k3(-1.0, -1.3).0, 0.04081822068171803, 1e-12));
    assert!(close(kl_k3(-2.0, -0.5).0, 1.9816890703380645, 1e-12));
    assert_eq!(kl_k3(-0.7, -0.7), (0.0, 0.0));
}

// The batch of algo_ref.py: row 2 is fully masked, row 0 has ρ ≠ 1 on two tokens.
struct B {
    logp: Vec<f32>,
    old: Vec<f32>,
    refp: Vec<f32>,
    adv: Vec<f32>,
    mask: Vec<f32>,
}

fn batch() -> B {
    B {
        logp: vec![-1.0, -0.5, -2.0, -0.1, -0.3, -1.2, -0.7, -3.0, -0.4, -0.9, -1.1, -0.2],
        old: vec![-1.3, -0.5, -1.6, -0.1, -0.1, -1.8, -0.7, -3.0, -0.4, -0.9, -1.1, -0.2],
        refp: vec![-1.1, -0.4, -2.5, -0.3, -0.2, -1.0, -0.9, -2.0, -0.5, -1.0, -1.0, -0.1],
        adv: vec![0.8, -1.5, 0.3],
        mask: vec![1., 1., 1., 0., 1., 1., 1., 0., 0., 0., 0., 0.],
    }
}

fn lb<'a>(b: &'a B, logp: &'a [f32]) -> LossBatch<'a> {
    LossBatch {
        rows: 3,
        cols: 4,
        logp,
        old_logp: &b.old,
        ref_logp: Some(&b.refp),
        sampler_logp: None,
        advantages: &b.adv,
        mask: &b.mask,
        norm_rows: 3,
        norm_tokens: 6.0,
    }
}

fn cfg(aggregation: Aggregation, beta: f64, clip: Clip) -> PgLossConfig {
    PgLossConfig {
        clip,
        beta,
        aggregation,
        rollout_is: RolloutIs::default(),
    }
}

const AGGS: [(Aggregation, f64); 4] = [
    (Aggregation::SeqMeanTokenMean, 0.34527689226441627),
    (Aggregation::TokenMean, 0.5179153383966245),
    (Aggregation::SeqSumConstant { max_len: 8 }, 0.12947883459915613),
    (Aggregation::SeqMeanTokenSum, 1.035830676793249),
];

#[test]
fn batch_loss_matches_reference_and_finite_differences() {
    let b = batch();
    let mut cases: Vec<(PgLossConfig, f64)> = AGGS.iter().map(|&(a, v)| (cfg(a, 0.04, CLIP), v)).collect();
    cases.push((cfg(Aggregation::TokenMean, 0.0, DUAL), 0.5168363822290375));
    for (c, want) in cases {
        let out = policy_gradient_loss(&lb(&b, &b.logp), &c).unwrap();
        // f32 inputs vs Python's f64: agree to ~1e-7.
        assert!(close(out.loss, want, 1e-6), "{c:?}: {} vs {want}", out.loss);
        for i in 0..12 {
            if b.mask[i] == 0.0 {
                assert_eq!(out.grad[i], 0.0, "masked token {i} must get no gradient");
                continue;
            }
            let f = |x: f64| {
                let mut lp = b.logp.clone();
                lp[i] = x as f32;
                policy_gradient_loss(&lb(&b, &lp), &c).unwrap().loss
            };
            let h = 1e-3; // f32 log-probs: a large step, but every token sits away from a kink
            let n = (f(b.logp[i] as f64 + h) - f(b.logp[i] as f64 - h)) / (2.0 * h);
            assert!(
                (out.grad[i] as f64 - n).abs() < 2e-4,
                "{c:?} token {i}: analytic {}, numeric {n}",
                out.grad[i]
            );
        }
    }
}

#[test]
fn metrics_are_token_means() {
    let b = batch();
    let out = policy_gradient_loss(&lb(&b, &b.logp), &cfg(Aggregation::TokenMean, 0.04, CLIP)).unwrap();
    let m: std::collections::HashMap<_, _> = out.metrics.into_iter().collect();
    // Token 0: ρ = e^0.3 > 1.28 with A > 0 → clipped; token 2: ρ = e^-0.4 < 0.8, A > 0 → not clipped;
    // token 4: ρ = e^-0.2 (inside); token 5: ρ = e^0.6 > 1.28 with A < 0 → not clipped. 1 of 6.
    assert!(close(m["clip_frac"], 1.0 / 6.0, 1e-12), "{m:?}");
    assert!(m["kl"] > 0.0 && m.contains_key("ratio_mean") && !m.contains_key("dual_clip_frac"));
}

#[test]
fn micro_batches_sum_to_the_mini_batch() {
    let b = batch();
    for &(agg, _) in &AGGS {
        let c = cfg(agg, 0.04, CLIP);
        let full = policy_gradient_loss(&lb(&b, &b.logp), &c).unwrap();
        let (mut loss, mut grad) = (0.0, vec![]);
        for rows in [0..2usize, 2..3] {
            let s = rows.start * 4..rows.end * 4;
            let part = LossBatch {
                rows: rows.len(),
                cols: 4,
                logp: &b.logp[s.clone()],
                old_logp: &b.old[s.clone()],
                ref_logp: Some(&b.refp[s.clone()]),
                sampler_logp: None,
                advantages: &b.adv[rows.clone()],
                mask: &b.mask[s],
                norm_rows: 3,
                norm_tokens: 6.0,
            };
            let o = policy_gradient_loss(&part, &c).unwrap();
            loss += o.loss;
            grad.extend(o.grad);
        }
        assert!(close(loss, full.loss, 1e-12), "{agg:?}");
        assert_eq!(grad, full.grad);
    }
}

#[test]
fn fully_masked_batch_gives_zero_not_nan() {
    let b = batch();
    let mask = vec![0.0f32; 12];
    let nan_logp = vec![f32::NAN; 12];
    for &(agg, _) in &AGGS {
        let batch = LossBatch {
            mask: &mask,
            logp: &nan_logp,
            norm_tokens: 0.0,
            ..lb(&b, &b.logp)
        };
        let out = policy_gradient_loss(&batch, &cfg(agg, 0.04, DUAL)).unwrap();
        assert_eq!(out.loss, 0.0);
        assert!(out.grad.iter().all(|&g| g == 0.0));
        assert!(out.metrics.iter().all(|(_, v)| v.is_finite()));
    }
}

#[test]
fn batch_shape_errors_are_named() {
    let b = batch();
    let short = vec![0.0f32; 11];
    let e = policy_gradient_loss(
        &LossBatch {
            old_logp: &short,
            ..lb(&b, &b.logp)
        },
        &cfg(Aggregation::TokenMean, 0.0, CLIP),
    )
    .unwrap_err();
    assert!(e.to_string().contains("old_logp"), "{e}");
    let e = policy_gradient_loss(
        &LossBatch {
            ref_logp: None,
            ..lb(&b, &b.logp)
        },
        &cfg(Aggregation::TokenMean, 0.1, CLIP),
    )
    .unwrap_err();
    assert!(e.to_string().contains("ref_logp"), "{e}");
    // No KL: no reference needed.
    assert!(policy_gradient_loss(
        &LossBatch {
            ref_logp: None,
            ..lb(&b, &b.logp)
        },
        &cfg(Aggregation::TokenMean, 0.0, CLIP)
    )
    .is_ok());
}
