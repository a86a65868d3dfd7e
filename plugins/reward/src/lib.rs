//! ReCode rewards: `format`, `em`, `es`, `em_star`, `es_star`, `overlong`, `length`, and the
//! execution reward `unit_tests`.
//!
//! Semantics follow the paper's reward code (see `tests/reference/reward_ref.py`) without its two
//! bugs: strings are restored by index during normalisation, and two empty codes have similarity 1.
//!
//! Options (a `[reward.options]` table; unknown keys are errors):
//! - `format`: `prefix` (default `"<think>"`, the end of the prefill, prepended before matching).
//! - `em`, `es`, `em_star`, `es_star`: `extract` = `"first"` (default: first ```python block
//!   anywhere, as the paper) or `"answer"` (first block inside `<answer>`).
//! - `overlong`: `max_length` (1024), `cache_length` (256), in completion tokens.
//! - `length`: `max_length` (1024); the score is tokens / max_length clipped to [0, 1], useful
//!   with weight 0 (logged only) or a small negative weight (brevity pressure).
//! - `unit_tests`: `column` ("tests"), `all_or_nothing` (false), `timeout_s` (10, per test),
//!   `memory_mb` (2048), `workers` (2), `python` ("python3"); see `unit_tests.rs`.

pub mod bench;
pub mod edit;
pub mod rewards;
pub mod unit_tests;

use recode_core::registry::Registry;

/// Register every reward of this crate under its name.
pub fn register(reg: &mut Registry) {
    use rewards::*;
    reg.add_reward(
        "unit_tests",
        "fraction of the row's `tests` the answer's program passes in the sandbox; None without tests (options column, all_or_nothing, timeout_s, memory_mb, workers, python)",
        unit_tests::unit_tests_factory,
    );
    reg.add_reward(
        "format",
        "+1 if <think>…</think> then <answer>…</answer> and nothing else, else -1 (option prefix)",
        format_factory,
    );
    reg.add_reward(
        "em",
        "1 if the normalised code equals the normalised target, else 0 (option extract)",
        em_factory,
    );
    reg.add_reward(
        "es",
        "edit similarity 1 - lev/max_len of normalised code and target, in [0, 1] (option extract)",
        es_factory,
    );
    reg.add_reward(
        "em_star",
        "+2 exact match, -1.5 otherwise, -2 no code block or syntax error (option extract)",
        em_star_factory,
    );
    reg.add_reward(
        "es_star",
        "3.5 * similarity - 1.5, -2 for no code block or syntax error (option extract)",
        es_star_factory,
    );
    reg.add_reward(
        "overlong",
        "DAPO soft length penalty: 0 up to max_length - cache_length, linear to -1 at max_length",
        overlong_factory,
    );
    reg.add_reward(
        "similarity",
        "1 - lev/max_len of the whole completion and the target, no code extraction (option trim)",
        similarity_factory,
    );
    reg.add_reward(
        "length",
        "completion tokens / max_length, clipped to [0, 1] (weight < 0 to penalise, 0 to log)",
        length_factory,
    );
}

#[cfg(test)]
mod tests {
    use recode_core::api::RewardInput;
    use recode_core::spec::Options;

    fn opts(pairs: &[(&str, toml::Value)]) -> Options {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn registry_and_options() {
        let mut reg = recode_core::registry::Registry::default();
        super::register(&mut reg);
        let names = reg.names(recode_core::registry::PluginKind::Reward);
        assert_eq!(
            names,
            [
                "em",
                "em_star",
                "es",
                "es_star",
                "format",
                "length",
                "overlong",
                "similarity",
                "unit_tests"
            ]
        );
        let ol =
            reg.reward("overlong").unwrap()(&opts(&[("max_length", 100.into()), ("cache_length", 20.into())])).unwrap();
        let input = RewardInput {
            completion_tokens: 90,
            ..Default::default()
        };
        assert_eq!(ol.score(&[input]).unwrap(), vec![-0.5]);
        assert_eq!(ol.name(), "overlong");
        let err = reg.reward("es_star").unwrap()(&opts(&[("extrct", "answer".into())]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("es_star") && err.contains("extrct"), "{err}");
        assert!(reg.reward("em").unwrap()(&opts(&[("extract", "last".into())])).is_err());
        assert!(reg.reward("overlong").unwrap()(&opts(&[("cache_length", 2000.into())])).is_err());
        let f = reg.reward("format").unwrap()(&opts(&[("prefix", "".into())])).unwrap();
        let input = RewardInput {
            completion: "<think>a</think><answer>b</answer>",
            ..Default::default()
        };
        assert_eq!(f.score(&[input]).unwrap(), vec![1.0]);
    }
}
