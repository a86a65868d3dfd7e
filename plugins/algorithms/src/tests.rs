use super::*;
use recode_core::algo::{Aggregation, Clip};

fn opts(s: &str) -> Options {
    toml::from_str(s).unwrap()
}

fn algo(name: &str, s: &str) -> TableAlgorithm {
    TableAlgorithm::new(name, &opts(s)).unwrap()
}

fn err(name: &str, s: &str) -> String {
    TableAlgorithm::new(name, &opts(s)).err().expect("an error").to_string()
}

fn batch<'a>(
    rows: usize,
    cols: usize,
    logp: &'a [f32],
    old: &'a [f32],
    adv: &'a [f32],
    mask: &'a [f32],
) -> LossBatch<'a> {
    let tokens = mask.iter().filter(|&&m| m != 0.0).count() as f64;
    LossBatch {
        rows,
        cols,
        logp,
        old_logp: old,
        ref_logp: None,
        sampler_logp: None,
        advantages: adv,
        mask,
        norm_rows: rows,
        norm_tokens: tokens,
    }
}

#[test]
fn every_row_registers_once_under_its_name() {
    let mut reg = Registry::default();
    register(&mut reg);
    let mut names: Vec<_> = ALGORITHMS.iter().map(|r| r.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), ALGORITHMS.len(), "duplicate row names");
    for row in &ALGORITHMS {
        let a = reg.algorithm(row.name).unwrap()(&Options::new()).unwrap();
        assert_eq!(a.name(), row.name);
    }
    let e = TableAlgorithm::new("ppo", &Options::new()).err().unwrap().to_string();
    assert!(e.contains("ppo") && e.contains("reinforce_plus_plus_baseline"), "{e}");
}

#[test]
fn grpo_defaults_and_options() {
    let a = algo("grpo", "");
    assert!(a.needs_reference());
    assert_eq!(
        a.settings.pg.clip,
        Clip {
            eps_low: 0.2,
            eps_high: 0.2,
            dual_clip: None
        }
    );
    assert_eq!(a.settings.pg.aggregation, Aggregation::TokenMean);
    let a = algo(
        "grpo",
        "beta = 0.0\nepsilon_high = 0.28\nloss_type = \"dr_grpo\"\nmax_completion_length = 64",
    );
    assert!(!a.needs_reference());
    assert_eq!(a.settings.pg.clip.eps_high, 0.28);
    assert_eq!(a.settings.pg.aggregation, Aggregation::SeqSumConstant { max_len: 64 });
}

#[test]
fn bad_options_are_errors_naming_the_algorithm_and_the_key() {
    for (name, s, key) in [
        ("grpo", "betta = 0.1", "betta"),
        ("grpo", "loss_type = \"ppo\"", "ppo"),
        ("grpo", "epsilon = 1.5", "epsilon"),
        ("dapo", "dual_clip = 0.5", "dual_clip"),
        ("dapo", "beta = 0.1", "beta"),
        ("dr_grpo", "scale_rewards = \"group\"", "scale_rewards"),
        ("dr_grpo", "max_completion_length = 0", "max_completion_length"),
        ("cispo", "epsilon_high = 5.0", "epsilon_high"),
        ("cispo", "epsilon_max = 0.5\nepsilon_low = 0.2", "epsilon_low"),
        ("rloo", "gamma = 0.99", "gamma"),
        ("reinforce_plus_plus_baseline", "dual_clip = 1.0", "dual_clip"),
    ] {
        let e = err(name, s);
        assert!(
            e.contains(&format!("`{name}`")) && e.contains(key),
            "{name} with {s:?}: {e}"
        );
    }
}

#[test]
fn verl_names_are_aliases_of_the_same_settings() {
    let old = "clip_ratio_low = 0.1\nclip_ratio_high = 0.3\nclip_ratio_c = 5.0\nloss_agg_mode = \"seq-mean-token-sum-norm\"\nnorm_adv_by_std = false";
    let new = "epsilon = 0.1\nepsilon_high = 0.3\ndual_clip = 5.0\nloss_type = \"dr_grpo\"\nscale_rewards = \"none\"";
    assert_eq!(algo("dapo", old).settings, algo("dapo", new).settings);
    assert_eq!(
        algo("rloo", "kl_loss_coef = 0.01").settings,
        algo("rloo", "beta = 0.01").settings
    );
    assert!(algo("reinforce_plus_plus", "kl_loss_coef = 0.001").needs_reference());
    let (canon, warnings) = options::canonical("dapo", &opts(old)).unwrap();
    assert_eq!(canon, opts(new));
    assert_eq!(warnings.len(), 5);
    assert!(
        warnings[0].contains("`clip_ratio_low` is deprecated, use `epsilon`"),
        "{warnings:?}"
    );
    let e = err("dapo", "clip_ratio_low = 0.1\nepsilon = 0.2");
    assert!(e.contains("clip_ratio_low") && e.contains("epsilon"), "{e}");
    let e = err("dapo", "loss_agg_mode = \"token_mean\"");
    assert!(e.contains("dapo") && e.contains("token_mean"), "{e}");
}

#[test]
fn group_normalised_advantages_follow_scale_rewards() {
    let r = [1.0, 0.0, 0.5, 0.25];
    // From tests/reference/algo_ref.py.
    let g = algo("grpo", "").advantages(&r, 4).unwrap();
    assert!((g[0] - 1.3171565993073961).abs() < 1e-12);
    let n = algo("grpo", "scale_rewards = \"none\"").advantages(&r, 4).unwrap();
    assert_eq!(n, vec![0.5625, -0.4375, 0.0625, -0.1875]);
    // DAPO: verl's epsilon. [1, 0]: mean 0.5, unbiased std sqrt(0.5); A = ±0.5 / (sqrt(0.5) + 1e-6).
    let a = algo("dapo", "").advantages(&[1.0, 0.0], 2).unwrap();
    let want = 0.5 / (0.5f64.sqrt() + 1e-6);
    assert!((a[0] - want).abs() < 1e-12 && (a[1] + want).abs() < 1e-12);
    // Dr. GRPO: centred only.
    assert_eq!(
        algo("dr_grpo", "").advantages(&[1.0, 0.0, 0.0, 0.0], 4).unwrap(),
        vec![0.75, -0.25, -0.25, -0.25]
    );
}

#[test]
fn verl_estimators_differ_as_documented() {
    let r = [1.0, 0.0, 0.0, 0.0];
    // RLOO by hand: 1 − 0 = 1; 0 − 1/3.
    let a = algo("rloo", "").advantages(&r, 4).unwrap();
    assert!((a[0] - 1.0).abs() < 1e-15 && (a[1] + 1.0 / 3.0).abs() < 1e-15, "{a:?}");
    // Whitening: zero mean, unit (unbiased) variance over the four one-token completions.
    let w = algo("reinforce_plus_plus", "").advantages(&r, 4).unwrap();
    let m: f64 = w.iter().sum::<f64>() / 4.0;
    let v: f64 = w.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 3.0;
    assert!(m.abs() < 1e-12 && (v - 1.0).abs() < 1e-6, "{w:?}");
    // Token weighting: a long completion pulls the mean towards its reward.
    let l = algo("reinforce_plus_plus", "")
        .advantages_with_lengths(&[1.0, 0.0], 2, &[3, 1])
        .unwrap();
    assert!(l[0] > 0.0 && l[0] < -l[1], "{l:?}");
    // The baseline variant subtracts the group mean first: two groups of equal spread, shifted
    // by 10, get the same advantages.
    let b = algo("reinforce_plus_plus_baseline", "")
        .advantages(&[1.0, 0.0, 11.0, 10.0], 2)
        .unwrap();
    assert!((b[0] - b[2]).abs() < 1e-12 && (b[1] - b[3]).abs() < 1e-12, "{b:?}");
    assert_eq!(
        algo("rloo", "").settings.pg.clip,
        Clip {
            eps_low: 0.2,
            eps_high: 0.2,
            dual_clip: Some(3.0)
        }
    );
}

#[test]
fn dynamic_sampling_drops_constant_groups_only_where_on() {
    let a = algo("dapo", "");
    assert!(a.keep_group(&[0.0, 1.0, 1.0]));
    assert!(!a.keep_group(&[1.0, 1.0, 1.0]));
    assert!(algo("dapo", "dynamic_sampling = false").keep_group(&[1.0, 1.0]));
    assert!(algo("grpo", "").keep_group(&[1.0, 1.0]));
}

#[test]
fn first_pass_grpo_loss_is_minus_mean_advantage() {
    // ρ = 1, logp = ref: loss = −A per token; token mean over 3 tokens of A = (1, 1, −2) → 0;
    // gradient −A/3 per token.
    let lp = [-0.5f32, -1.0, -2.0];
    let mut b = batch(3, 1, &lp, &lp, &[1.0, 1.0, -2.0], &[1.0; 3]);
    b.ref_logp = Some(&lp);
    let out = algo("grpo", "").loss(&b).unwrap();
    assert!(out.loss.abs() < 1e-12);
    for (g, w) in out.grad.iter().zip([-1.0f32 / 3.0, -1.0 / 3.0, 2.0 / 3.0]) {
        assert!((g - w).abs() < 1e-7, "{g} vs {w}");
    }
}

#[test]
fn dapo_dual_clip_caps_negative_advantage_loss() {
    // ρ = e^3 ≈ 20 > c = 10, A = −1: loss capped at c·1 = 10, gradient 0; token mean over 1 token.
    let out = algo("dapo", "")
        .loss(&batch(1, 1, &[0.0], &[-3.0], &[-1.0], &[1.0]))
        .unwrap();
    assert_eq!(out.loss, 10.0);
    assert_eq!(out.grad, vec![0.0]);
    assert!(out.metrics.contains(&("dual_clip_frac".to_string(), 1.0)));
}

#[test]
fn dr_grpo_loss_is_token_sum_over_constant() {
    // ρ = 1: per-token loss −A. Row 0: 2 tokens of A = 1; row 1: 1 token of A = −0.5.
    // Σ = −2 + 0.5 = −1.5; / (2 rows × 4) = −0.1875; grads −A/8.
    let lp = [-1.0f32; 6];
    let out = algo("dr_grpo", "max_completion_length = 4")
        .loss(&batch(2, 3, &lp, &lp, &[1.0, -0.5], &[1., 1., 0., 1., 0., 0.]))
        .unwrap();
    assert!((out.loss + 0.1875).abs() < 1e-12, "{}", out.loss);
    assert_eq!(out.grad, vec![-0.125, -0.125, 0.0, 0.0625, 0.0, 0.0]);
}

#[test]
fn cispo_capped_weight_keeps_the_gradient() {
    // ρ = e^2 ≈ 7.39 > 5: w = 5; PPO would zero this token (A > 0), CISPO gives −5·A / tokens.
    let a = algo("cispo", "");
    assert_eq!((a.settings.pg.clip.eps_high, a.settings.weight_floor), (5.0, None));
    let out = a
        .loss(&batch(1, 2, &[-1.0, -0.5], &[-3.0, -0.5], &[0.5], &[1.0, 1.0]))
        .unwrap();
    assert_eq!(out.grad, vec![-1.25, -0.25]);
    // Loss value −w·A·logp, token mean: (−5·0.5·−1 − 1·0.5·−0.5) / 2 = 1.375.
    assert!((out.loss - 1.375).abs() < 1e-12, "{}", out.loss);
    assert!(out.metrics.contains(&("cispo_clip_ratio".to_string(), 0.5)));
    assert_eq!(algo("cispo", "epsilon_low = 0.2").settings.weight_floor, Some(0.8));
}

#[test]
fn gspo_clips_the_sequence_ratio_not_the_tokens() {
    // One sequence of two tokens with per-token log-ratios +0.5 and −0.5: the length-normalised
    // sequence ratio is exactly 1, so nothing is clipped although each token ratio is far outside
    // GSPO's 3e-4 range; the clipped-token loss clips both.
    let b = batch(1, 2, &[-1.0, -2.0], &[-1.5, -1.5], &[1.0], &[1.0, 1.0]);
    let g = algo("gspo", "").loss(&b).unwrap();
    assert!(g.grad.iter().all(|&x| x != 0.0), "{:?}", g.grad);
    let p = algo("grpo", "beta = 0.0\nepsilon = 3e-4\nepsilon_high = 4e-4")
        .loss(&b)
        .unwrap();
    assert!(p.grad[0] == 0.0, "{:?}", p.grad);
}
