//! The reward functions, their options and their `Reward` implementations.

use crate::edit::similarity;
use anyhow::{bail, Result};
use recode_core::api::{Reward, RewardInput};
use recode_core::registry::decode_options;
use recode_core::spec::Options;
use recode_core::task::code::{answer_python_block, first_python_block};
use recode_core::task::normalize::{is_py_space, normalize_code, py_strip};
use recode_core::task::pysyntax;
use serde::Deserialize;

// ---- format ----

/// Whether `text` is `<think>X</think>` + ws + `<answer>Y</answer>` + ws, X free of `<think>`
/// and `</think>` (the paper's regex, matched by hand: the answer ends at the last `</answer>`).
pub fn format_ok(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("<think>") else {
        return false;
    };
    let Some(end) = rest.find("</think>") else { return false };
    if rest[..end].contains("<think>") {
        return false;
    }
    let after = rest[end + "</think>".len()..].trim_start_matches(is_py_space);
    let Some(answer) = after.strip_prefix("<answer>") else {
        return false;
    };
    answer.trim_end_matches(is_py_space).ends_with("</answer>")
}

/// +1 when `prefix + completion` is well formed, else -1.
pub fn format_score(prefix: &str, completion: &str) -> f64 {
    if format_ok(&format!("{prefix}{completion}")) {
        1.0
    } else {
        -1.0
    }
}

// ---- code extraction and the match rewards ----

/// Which python block of a completion is the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Extract {
    /// The first ```python block anywhere (the paper's rule).
    #[default]
    First,
    /// The first ```python block inside <answer>…</answer>.
    Answer,
}

/// Why no code could be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeError {
    NoBlock,
    Syntax(String),
}

/// The normalised code of a completion, as the star rewards judge it: the block is stripped,
/// normalised, and the normalised text must parse (the paper checks after normalising).
pub fn completion_code(completion: &str, extract: Extract, check_syntax: bool) -> Result<String, CodeError> {
    let block = match extract {
        Extract::First => first_python_block(completion),
        Extract::Answer => answer_python_block(completion),
    }
    .ok_or(CodeError::NoBlock)?;
    let code = normalize_code(py_strip(block));
    if check_syntax {
        pysyntax::check(&code).map_err(CodeError::Syntax)?;
    }
    Ok(code)
}

/// 1 if the normalised code equals the normalised target, else 0 (no block: 0; syntax unchecked).
pub fn em(completion: &str, target: &str, extract: Extract) -> f64 {
    match completion_code(completion, extract, false) {
        Ok(code) if code == normalize_code(target) => 1.0,
        _ => 0.0,
    }
}

/// Edit similarity of normalised code and target in [0, 1] (no block: 0; syntax unchecked).
pub fn es(completion: &str, target: &str, extract: Extract) -> f64 {
    completion_code(completion, extract, false).map_or(0.0, |code| similarity(&code, &normalize_code(target)))
}

/// +2 exact match, -1.5 otherwise, -2 for no block or a syntax error.
pub fn em_star(completion: &str, target: &str, extract: Extract) -> f64 {
    match completion_code(completion, extract, true) {
        Err(_) => -2.0,
        Ok(code) if code == normalize_code(target) => 2.0,
        Ok(_) => -1.5,
    }
}

/// 3.5 * similarity - 1.5 (in [-1.5, 2]), -2 for no block or a syntax error.
pub fn es_star(completion: &str, target: &str, extract: Extract) -> f64 {
    match completion_code(completion, extract, true) {
        Err(_) => -2.0,
        Ok(code) => 3.5 * similarity(&code, &normalize_code(target)) - 1.5,
    }
}

// ---- length rewards ----

/// DAPO's soft overlong penalty: 0 up to `max - cache` tokens, then linear down to -1 at `max`,
/// -1 beyond.
pub fn overlong(tokens: usize, max_length: usize, cache_length: usize) -> f64 {
    let free = max_length - cache_length;
    if tokens <= free {
        0.0
    } else if tokens <= max_length {
        (free as f64 - tokens as f64) / cache_length as f64
    } else {
        -1.0
    }
}

/// Completion tokens as a fraction of `max_length`, clipped to [0, 1].
pub fn length_fraction(tokens: usize, max_length: usize) -> f64 {
    (tokens as f64 / max_length as f64).min(1.0)
}

// ---- plugins ----

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FormatOptions {
    /// Text the prompt's prefill ended with, prepended to the completion before matching.
    pub prefix: String,
}

impl Default for FormatOptions {
    fn default() -> Self {
        Self {
            prefix: "<think>".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeOptions {
    /// "first" (default, the paper) or "answer".
    pub extract: Extract,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LengthOptions {
    /// L_max: completion tokens at which the penalty reaches -1 (should equal max_new_tokens).
    pub max_length: usize,
    /// L_cache: width of the linear ramp before max_length (`overlong` only).
    pub cache_length: usize,
}

impl Default for LengthOptions {
    fn default() -> Self {
        Self {
            max_length: 1024,
            cache_length: 256,
        }
    }
}

/// A reward made of a name and a per-completion function.
struct FnReward<F> {
    name: &'static str,
    f: F,
}

impl<F: Fn(&RewardInput<'_>) -> f64 + Send + Sync> Reward for FnReward<F> {
    fn name(&self) -> &str {
        self.name
    }
    fn score(&self, batch: &[RewardInput<'_>]) -> Result<Vec<f64>> {
        Ok(par_map(batch, &self.f, 0))
    }
}

/// `items.map(f)` in order, split over `threads` scoped threads (0: all cores) when the batch is
/// big enough to repay starting them (parsing dominates the code rewards: ~40 µs a completion).
pub fn par_map<T: Sync, F: Fn(&T) -> f64 + Sync>(items: &[T], f: F, threads: usize) -> Vec<f64> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let threads = threads.min(items.len() / 8).max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<f64>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("reward thread panicked"))
            .collect()
    })
}

fn boxed<F: Fn(&RewardInput<'_>) -> f64 + Send + Sync + 'static>(name: &'static str, f: F) -> Box<dyn Reward> {
    Box::new(FnReward { name, f })
}

pub fn format_factory(o: &Options) -> Result<Box<dyn Reward>> {
    let opts: FormatOptions = decode_options("format", o)?;
    Ok(boxed("format", move |x| format_score(&opts.prefix, x.completion)))
}

macro_rules! code_factory {
    ($factory:ident, $name:literal, $f:ident) => {
        pub fn $factory(o: &Options) -> Result<Box<dyn Reward>> {
            let opts: CodeOptions = decode_options($name, o)?;
            Ok(boxed($name, move |x| $f(x.completion, x.target, opts.extract)))
        }
    };
}
code_factory!(em_factory, "em", em);
code_factory!(es_factory, "es", es);
code_factory!(em_star_factory, "em_star", em_star);
code_factory!(es_star_factory, "es_star", es_star);

fn length_options(name: &str, o: &Options) -> Result<LengthOptions> {
    let opts: LengthOptions = decode_options(name, o)?;
    if opts.max_length == 0 {
        bail!("options of plugin `{name}`: max_length must be > 0");
    }
    if name == "overlong" && (opts.cache_length == 0 || opts.cache_length > opts.max_length) {
        bail!(
            "options of plugin `overlong`: cache_length must be in 1..=max_length ({}), got {}",
            opts.max_length,
            opts.cache_length
        );
    }
    Ok(opts)
}

pub fn overlong_factory(o: &Options) -> Result<Box<dyn Reward>> {
    let opts = length_options("overlong", o)?;
    Ok(boxed("overlong", move |x| {
        overlong(x.completion_tokens, opts.max_length, opts.cache_length)
    }))
}

pub fn length_factory(o: &Options) -> Result<Box<dyn Reward>> {
    let opts = length_options("length", o)?;
    Ok(boxed("length", move |x| {
        length_fraction(x.completion_tokens, opts.max_length)
    }))
}

/// Options of `similarity`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SimilarityOptions {
    /// Strip surrounding whitespace from both texts first.
    trim: bool,
}

/// 1 − Levenshtein/max_len between the whole completion and the target: no code extraction,
/// normalisation or syntax check (synthetic tasks, sanity checks).
pub fn similarity_factory(o: &Options) -> Result<Box<dyn Reward>> {
    let opts: SimilarityOptions = decode_options("similarity", o)?;
    Ok(boxed("similarity", move |x| {
        if opts.trim {
            crate::edit::similarity(x.completion.trim(), x.target.trim())
        } else {
            crate::edit::similarity(x.completion, x.target)
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_compares_whole_texts_by_hand() {
        let r = similarity_factory(&Options::new()).unwrap();
        let input = |c: &'static str| RewardInput {
            completion: c,
            target: "hello",
            ..Default::default()
        };
        // "hellx": 1 substitution / 5; "he": 3 deletions / 5; " hello": 1 insertion / 6.
        let got = r
            .score(&[input("hello"), input("hellx"), input("he"), input(" hello")])
            .unwrap();
        let want = [1.0, 0.8, 0.4, 1.0 - 1.0 / 6.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        let mut o = Options::new();
        o.insert("trim".into(), toml::Value::Boolean(true));
        assert_eq!(
            similarity_factory(&o).unwrap().score(&[input(" hello")]).unwrap(),
            vec![1.0]
        );
        o.insert("bogus".into(), toml::Value::Boolean(true));
        assert!(similarity_factory(&o).is_err());
    }

    const TARGET: &str = "import numpy as np\nx = np.prod(a)";

    fn answer(code: &str) -> String {
        format!("reasoning</think>\n<answer>\n```python\n{code}\n```\n</answer>")
    }

    #[test]
    fn format_cases() {
        assert_eq!(format_score("<think>", &answer("x = 1")), 1.0);
        assert_eq!(format_score("<think>", "r</think><answer>a</answer>  \n"), 1.0);
        assert_eq!(format_score("<think>", "r</think>\n<answer></answer>"), 1.0);
        assert_eq!(format_score("<think>", "r</think><answer>a</answer> trailing"), -1.0);
        assert_eq!(format_score("<think>", "r<answer>a</answer>"), -1.0); // no </think>
        assert_eq!(format_score("<think>", "<think>r</think><answer>a</answer>"), -1.0); // nested
        assert_eq!(format_score("<think>", "r</think>x<answer>a</answer>"), -1.0);
        // Answer runs to the last </answer>; a second </think> after the first is allowed.
        assert_eq!(
            format_score("<think>", "r</think><answer>a</answer>b</think></answer>"),
            1.0
        );
        assert_eq!(format_score("", "<think>r</think><answer>a</answer>"), 1.0);
        assert_eq!(format_score("", "r</think><answer>a</answer>"), -1.0);
        assert_eq!(format_score("<think>", "r</think><answer>a</answ"), -1.0); // truncated
    }

    /// The held-out copy baseline's answer is well formed, and its code is the old code itself.
    #[test]
    fn the_copy_baseline_answer_is_formatted_and_holds_the_old_code() {
        use recode_core::trainer::heldout::copy_answer;
        let old = "import numpy as np\nx = np.product(a)\n";
        let copy = copy_answer(old);
        assert_eq!(format_score("<think>", &copy), 1.0, "{copy}");
        assert_eq!(em_star(&copy, old, Extract::Answer), 2.0);
        assert_eq!(es_star(&copy, old, Extract::First), 2.0);
        // Against the new code: 3 deletions ("product" -> "prod") over the old code's 36 chars.
        let es = es_star(&copy, TARGET, Extract::First);
        assert!((es - (3.5 * (1.0 - 3.0 / 36.0) - 1.5)).abs() < 1e-12, "{es}");
    }

    #[test]
    fn star_rewards() {
        assert_eq!(em_star(&answer(TARGET), TARGET, Extract::First), 2.0);
        assert_eq!(
            em_star(
                &answer("import numpy as np  \n\n# c\nx = np.prod(a)  # c"),
                TARGET,
                Extract::First
            ),
            -1.5
        );
        assert_eq!(
            em_star(
                &answer("import numpy as np\n\n# c\nx = np.prod(a)  # c"),
                TARGET,
                Extract::First
            ),
            2.0
        );
        assert_eq!(
            em_star(
                &answer("# c\nimport numpy as np\n\n\nx = np.prod(a)"),
                TARGET,
                Extract::First
            ),
            2.0
        );
        assert_eq!(em_star("no code", TARGET, Extract::First), -2.0);
        assert_eq!(em_star(&answer("x = np.prod(a"), TARGET, Extract::First), -2.0);
        assert_eq!(es_star(&answer(TARGET), TARGET, Extract::First), 2.0);
        assert_eq!(es_star(&answer("def f(:"), TARGET, Extract::First), -2.0);
        // "np.product" vs "np.prod": 3 insertions over 36 chars.
        let old = "import numpy as np\nx = np.product(a)";
        assert!((es_star(&answer(old), TARGET, Extract::First) - (3.5 * (1.0 - 3.0 / 36.0) - 1.5)).abs() < 1e-12);
        assert!((es(&answer(old), TARGET, Extract::First) - (1.0 - 3.0 / 36.0)).abs() < 1e-12);
        assert_eq!(em(&answer(TARGET), TARGET, Extract::First), 1.0);
        assert_eq!(em(&answer(old), TARGET, Extract::First), 0.0);
        assert_eq!(es("none", TARGET, Extract::First), 0.0);
        // Empty code and empty target: similarity 1, no division by zero.
        assert_eq!(es_star("```python\n\n```", "# only a comment", Extract::First), 2.0);
    }

    #[test]
    fn extract_option() {
        let c = format!("```python\nx = 0\n```\n{}", answer(TARGET));
        assert_eq!(em_star(&c, TARGET, Extract::First), -1.5);
        assert_eq!(em_star(&c, TARGET, Extract::Answer), 2.0);
        assert_eq!(em_star("<answer>text</answer>", TARGET, Extract::Answer), -2.0);
    }

    #[test]
    fn syntax_is_checked_after_normalising() {
        // A body made only of a comment becomes empty after normalisation: a syntax error.
        assert_eq!(
            em_star(&answer("if x:\n    # todo\n"), "if x:\n    pass", Extract::First),
            -2.0
        );
    }

    #[test]
    fn par_map_keeps_order() {
        let items: Vec<usize> = (0..1000).collect();
        let expected: Vec<f64> = items.iter().map(|&i| (i * i) as f64).collect();
        for threads in [0, 1, 3, 7] {
            assert_eq!(par_map(&items, |&i| (i * i) as f64, threads), expected);
        }
    }

    #[test]
    fn length_rewards() {
        assert_eq!(overlong(700, 1000, 200), 0.0);
        assert_eq!(overlong(800, 1000, 200), 0.0);
        assert_eq!(overlong(900, 1000, 200), -0.5);
        assert_eq!(overlong(1000, 1000, 200), -1.0);
        assert_eq!(overlong(1500, 1000, 200), -1.0);
        assert_eq!(length_fraction(256, 1024), 0.25);
        assert_eq!(length_fraction(4096, 1024), 1.0);
    }
}
