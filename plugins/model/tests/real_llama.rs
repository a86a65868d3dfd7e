//! The real SmolLM2-135M-Instruct GGUF (llama architecture: GQA 9/3 heads, tied output, Q4_1 with a
//! Q8_0 embedding) against an independent float64 numpy forward of the same file
//! (tests/reference/gguf_llama_ref.py, which reads it with llama.cpp's `gguf` package and uses
//! llama.cpp's Q/K layout and rope), plus greedy chat answers. Skipped when the model is not cached
//! (`cargo run -- model fetch smollm2-135m-instruct`).

use burn::backend::NdArray;
use recode_core::api::{ChatMessage, FinishReason, Policy, SamplingParams, Sequence};
use recode_core::registry::ModelContext;
use recode_core::spec::{AdapterKind, AdapterSpec, BackendSpec, ModelSpec, TrainingSpec};
use recode_model::model::{Fwd, Step, Transformer};
use recode_model::TransformerPolicy;
use std::path::{Path, PathBuf};

type B = NdArray<f32>;

const ID: &str = "smollm2-135m-instruct";

/// One test at a time: each holds the model, and timings should not mix.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn cached() -> Option<PathBuf> {
    match recode_model_formats::fetch::resolve_model(ID, false) {
        Ok(p) => Some(p),
        Err(e) => {
            // CI fetches SmolLM2 before the tests (.ci/run): there a missing model is a failure.
            recode_test_support::skip_or_fail_in_ci(&format!(
                "real SmolLM2 test: {e:#} (cargo run -- model fetch {ID})"
            ));
            None
        }
    }
}

fn policy(path: &Path) -> TransformerPolicy<B> {
    let spec = ModelSpec {
        path: path.display().to_string(),
        adapter: AdapterSpec {
            kind: AdapterKind::None,
            ..Default::default()
        },
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

/// The prompt the model's own chat template (from the GGUF) makes for one user message.
fn chat_prompt(p: &TransformerPolicy<B>, user: &str) -> Vec<u32> {
    let template = p
        .codec()
        .chat_template()
        .expect("the GGUF carries tokenizer.chat_template");
    let msgs = [ChatMessage {
        role: "user".into(),
        content: user.into(),
    }];
    let text = recode_core::chat::render(&template, &msgs, true, false).unwrap();
    p.codec().encode(&text).unwrap()
}

/// Logits of the last `keep[i]` positions of each sequence from the numpy reference; `None` after
/// "skipped: why" when the tests' Python cannot be made.
fn reference(model: &Path, seqs: &[Vec<u32>], keep: &[usize], vocab: usize) -> Option<Vec<Vec<f64>>> {
    let python = recode_test_support::python("the numpy reference of the SmolLM2 GGUF")?;
    let dir = tempfile::tempdir().unwrap();
    let (req, out) = (dir.path().join("req.json"), dir.path().join("logits.bin"));
    std::fs::write(&req, serde_json::json!({ "seqs": seqs, "keep_last": keep }).to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/gguf_llama_ref.py");
    recode_test_support::run_reference(&python, &script, &[model, &req, &out]);
    let bytes = std::fs::read(&out).unwrap();
    let all: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(all.len(), keep.iter().sum::<usize>() * vocab, "reference output size");
    let mut rest = &all[..];
    Some(
        keep.iter()
            .map(|&n| {
                let (head, tail) = rest.split_at(n * vocab);
                rest = tail;
                head.to_vec()
            })
            .collect(),
    )
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

fn log_softmax_at(row: &[f64], t: usize) -> f64 {
    let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    row[t] - mx - row.iter().map(|x| (x - mx).exp()).sum::<f64>().ln()
}

fn argmax(row: &[f64]) -> usize {
    (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap()
}

/// Tolerances, f32 (Rust) against f64 (numpy) over 30 layers on the same dequantised weights:
/// absolute, with logits up to about 40 in size. Measured: at most 9.1e-5 on the logits of the
/// three short sequences (45, 16 and 19 tokens); the bound leaves about 5x room for other CPUs'
/// rounding.
const LOGIT_TOL: f64 = 5e-4;
const LOGPROB_TOL: f64 = 5e-4;

#[test]
fn smollm2_logits_and_greedy_answer_match_a_numpy_forward_of_the_gguf() {
    let _serial = serial();
    let Some(path) = cached() else { return };
    let mut p = policy(&path);
    let m = p.inference_model();
    let vocab = m.cfg.vocab_size;
    assert_eq!(vocab, 49152);
    // A chat prompt, code, and text with digits and odd spacing (SmolLM splits digits one by one).
    let france = chat_prompt(&p, "What is the capital of France?");
    let prompts = vec![
        france.clone(),
        p.codec()
            .encode("def fib(n):\n    if n < 2:\n        return n\n")
            .unwrap(),
        p.codec().encode("In 2024,  about 1,250 people   came.").unwrap(),
    ];
    // Greedy through the KV cache, then the same tokens through the reference.
    let params = SamplingParams {
        max_new_tokens: 12,
        temperature: 0.0,
        ..Default::default()
    };
    let g = p.generate(&prompts[..1], &params).unwrap().remove(0);
    eprintln!("greedy answer: {:?} ({:?})", g.text, g.finish);
    let mut seqs = prompts.clone();
    seqs[0].extend(&g.tokens);
    let mut keep: Vec<usize> = seqs.iter().map(Vec::len).collect();
    // A prompt as long as a training prompt (about 600 tokens: rope far from position 0), its last
    // 16 positions compared.
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/gguf_llama_ref.py"))
        .unwrap();
    let long = p.codec().encode(&src.repeat(3)).unwrap()[..600].to_vec();
    seqs.push(long);
    keep.push(16);
    let Some(want) = reference(&path, &seqs, &keep, vocab) else {
        return;
    };
    for (i, ((ids, want), &n)) in seqs.iter().zip(&want).zip(&keep).enumerate() {
        let got = full_logits(&m, ids);
        let got = &got[(ids.len() - n) * vocab..];
        let err = got
            .iter()
            .zip(want)
            .map(|(&a, &b)| (a as f64 - b).abs())
            .fold(0.0, f64::max);
        let span = want.iter().fold(0f64, |a, b| a.max(b.abs()));
        eprintln!(
            "sequence {i} ({} tokens): max |logit diff| {err:.2e} (|logits| up to {span:.1})",
            ids.len()
        );
        assert!(
            err <= LOGIT_TOL,
            "sequence {i}: logits differ from the numpy reference by up to {err:.2e} (tolerance {LOGIT_TOL})"
        );
    }
    // Greedy picked the reference's argmax at every step (unless the top two are within rounding).
    let pl = prompts[0].len();
    for (j, &t) in g.tokens.iter().enumerate() {
        let row = &want[0][(pl - 1 + j) * vocab..(pl + j) * vocab];
        let best = argmax(row);
        assert!(
            best == t as usize || row[best] - row[t as usize] < 1e-3,
            "greedy token {j} ({t}) is not the reference argmax {best}"
        );
    }
    // The batched, padded log-prob path (what training uses): the short sequences split in half,
    // and the long one with its last 15 tokens as the completion (predicted from the kept rows).
    let mut split: Vec<Sequence> = seqs[..3]
        .iter()
        .map(|s| Sequence {
            prompt: s[..s.len() / 2].to_vec(),
            completion: s[s.len() / 2..].to_vec(),
        })
        .collect();
    split.push(Sequence {
        prompt: seqs[3][..585].to_vec(),
        completion: seqs[3][585..].to_vec(),
    });
    let lp = p.logprobs(&split, false).unwrap();
    for (i, (s, row)) in split.iter().zip(&lp).enumerate() {
        // Index of the reference row that predicts completion token 0.
        let first = s.prompt.len() - 1 - (s.prompt.len() + s.completion.len() - keep[i]);
        for (j, (&t, &got)) in s.completion.iter().zip(row).enumerate() {
            let w = log_softmax_at(&want[i][(first + j) * vocab..(first + j + 1) * vocab], t as usize);
            assert!(
                (got as f64 - w).abs() <= LOGPROB_TOL,
                "sequence {i} completion token {j}: log-prob {got} vs reference {w}"
            );
        }
    }
    assert!(
        g.text.contains("Paris"),
        "the answer to the capital of France should name Paris: {:?}",
        g.text
    );
}

#[test]
fn smollm2_chat_template_and_a_code_answer() {
    let _serial = serial();
    let Some(path) = cached() else { return };
    let mut p = policy(&path);
    // The template from the GGUF puts SmolLM's default system prompt before a lone user message.
    let template = p.codec().chat_template().unwrap();
    let msgs = [ChatMessage {
        role: "user".into(),
        content: "hi".into(),
    }];
    assert_eq!(
        recode_core::chat::render(&template, &msgs, true, false).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
    let im_end = p.codec().encode("<|im_end|>").unwrap();
    assert_eq!(im_end.len(), 1, "<|im_end|> is one token");
    assert!(
        p.codec().eos_ids().contains(&im_end[0]),
        "generation stops at <|im_end|>"
    );

    let prompt = chat_prompt(&p, "Write a Python function that returns the sum of a list of numbers.");
    let params = SamplingParams {
        max_new_tokens: 200,
        temperature: 0.0,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let g = p.generate(&[prompt], &params).unwrap().remove(0);
    eprintln!(
        "{} tokens in {:.1}s ({:?}):\n{}",
        g.tokens.len(),
        t.elapsed().as_secs_f64(),
        g.finish,
        g.text
    );
    assert_eq!(
        g.finish,
        FinishReason::Eos,
        "the answer should end at <|im_end|> within 200 tokens"
    );
    // The first ```python block defines a function that sums (model-written code runs only in the
    // evaluation sandbox); its name is the model's choice, so the test calls the first one defined.
    let code = g
        .text
        .split("```python")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a ```python block");
    let name = code
        .split("def ")
        .nth(1)
        .and_then(|s| s.split('(').next())
        .map(str::trim)
        .expect("a def in the code block");
    use recode_core::eval::sandbox::{Job, Sandbox, SandboxConfig, TestCase};
    let test = format!("def test_sum():\n    assert {name}([1, 2, 3.5]) == 6.5 and {name}([]) == 0\n");
    let job = Job {
        setup: String::new(),
        candidate: code.to_string(),
        tests: vec![TestCase {
            name: "test_sum".into(),
            code: test,
            call: "test_sum()".into(),
        }],
    };
    let r = Sandbox::new(SandboxConfig::default())
        .expect("the evaluation sandbox")
        .run(&job);
    assert!(
        r.outcome.passed(),
        "generated code failed: {:?}\n{}\n{code}",
        r.outcome,
        r.stderr
    );
}
