//! Tokenizer built from GGUF metadata, on a tiny hand-made byte-level BPE.

mod common;

use common::{write_gguf, V};
use recode_core::api::TextCodec;
use recode_model_formats::{Codec, GgufFile};

/// GPT-2's byte -> printable char table.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

/// ids 0..256 are the bytes; then merges; then a control and a user-defined token.
fn tiny(pre: &str) -> Codec {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "1 2"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("<|im_end|>".into()); // 264
    tokens.push("<tool>".into()); // 265
    let mut types = vec![1; tokens.len()];
    types[264] = 3;
    types[265] = 4;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tok.gguf");
    write_gguf(
        &p,
        &[
            ("general.architecture", V::Str("qwen2")),
            ("tokenizer.ggml.model", V::Str("gpt2")),
            ("tokenizer.ggml.pre", V::Str(pre)),
            ("tokenizer.ggml.tokens", V::Strs(tokens)),
            (
                "tokenizer.ggml.merges",
                V::Strs(merges.iter().map(|s| s.to_string()).collect()),
            ),
            ("tokenizer.ggml.token_type", V::I32s(types)),
            ("tokenizer.ggml.eos_token_id", V::U32(264)),
            ("tokenizer.chat_template", V::Str("{{ messages }}")),
        ],
        &[],
    );
    Codec::from_gguf(&GgufFile::open(&p).unwrap()).unwrap()
}

#[test]
fn byte_level_bpe_from_gguf() {
    let c = tiny("qwen2");
    // "hello" merges fully; " world" -> "Ġwor" + "l" + "d".
    assert_eq!(c.encode("hello world").unwrap(), [259, 262, b'l' as u32, b'd' as u32]);
    // Control and user-defined tokens are single ids; "\n" is byte 10.
    let ids = c.encode("hi<|im_end|>\n<tool>").unwrap();
    assert_eq!(ids, [104, 105, 264, 10, 265]);
    assert_eq!(c.decode(&ids).unwrap(), "hi<|im_end|>\n<tool>");
    assert_eq!(c.decode_skip_special(&ids).unwrap(), "hi\n<tool>");
    // Qwen2 splits digits one by one, so the "1 2" merge never applies.
    assert_eq!(c.encode("a12").unwrap(), [97, 49, 50]);
    // NFC: "e" + combining acute becomes "é" = bytes C3 A9.
    assert_eq!(c.encode("e\u{301}").unwrap(), [0xC3, 0xA9]);
    let text = "def f(x):\n    return x  # é ✓\n\n";
    assert_eq!(c.decode(&c.encode(text).unwrap()).unwrap(), text);
    assert_eq!(c.eos_ids(), [264]);
    assert_eq!(c.pad_id(), 264);
    assert_eq!(c.chat_template().as_deref(), Some("{{ messages }}"));
}

#[test]
fn llama3_pre_tokenizer_groups_digits() {
    let c = tiny("llama-bpe");
    assert_eq!(c.encode("a12").unwrap(), [97, 263]);
    assert_eq!(c.encode("e\u{301}").unwrap(), [b'e' as u32, 0xCC, 0x81]);
}

#[test]
fn unsupported_or_incomplete_tokenizer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("spm.gguf");
    write_gguf(
        &p,
        &[
            ("tokenizer.ggml.model", V::Str("llama")),
            ("tokenizer.ggml.tokens", V::Strs(vec!["a".into()])),
        ],
        &[],
    );
    let e = Codec::from_gguf(&GgufFile::open(&p).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("spm.gguf") && e.contains("tokenizer.ggml.scores"), "{e}");
    write_gguf(&p, &[("tokenizer.ggml.model", V::Str("bert"))], &[]);
    let e = Codec::from_gguf(&GgufFile::open(&p).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("spm.gguf") && e.contains("bert"), "{e}");
}

/// SentencePiece-style vocab: <unk>, <s>, </s>, 256 byte tokens, then scored pieces.
#[test]
fn sentencepiece_from_gguf() {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    // id 259.. ; higher score = merged earlier by SentencePiece.
    let pieces = [
        ("▁", -10.0),
        ("h", -10.0),
        ("e", -10.0),
        ("l", -10.0),
        ("o", -10.0),
        ("he", -1.0),
        ("ll", -2.0),
        ("hell", -3.0),
        ("▁hell", -4.0),
        ("hello", -5.0),
        ("▁w", -6.0),
        ("w", -10.0),
    ];
    let mut scores = vec![0.0f32; tokens.len()];
    for (p, s) in pieces {
        tokens.push(p.into());
        types.push(1);
        scores.push(s);
    }
    let id = |p: &str| tokens.iter().position(|t| t == p).unwrap() as u32;
    let (sp, he, hell, o, w) = (id("▁"), id("he"), id("▁hell"), id("o"), id("▁w"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("spm.gguf");
    write_gguf(
        &p,
        &[
            ("tokenizer.ggml.model", V::Str("llama")),
            ("tokenizer.ggml.tokens", V::Strs(tokens.clone())),
            ("tokenizer.ggml.scores", V::F32s(scores)),
            ("tokenizer.ggml.token_type", V::I32s(types)),
            ("tokenizer.ggml.bos_token_id", V::U32(1)),
            ("tokenizer.ggml.eos_token_id", V::U32(2)),
        ],
        &[],
    );
    let c = Codec::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
    // "▁hello": he, ll, hell, ▁hell merge in score order; "hello" cannot apply after "▁hell".
    assert_eq!(c.encode("hello").unwrap(), [hell, o]);
    // Unknown characters fall back to bytes: "é" = C3 A9 (byte token id = 3 + byte).
    assert_eq!(c.encode("hello wé").unwrap(), [hell, o, w, 3 + 0xC3, 3 + 0xA9]);
    // A space prefix starts every text run, also after a special token (as llama.cpp does).
    assert_eq!(c.encode("he</s>hello").unwrap(), [sp, he, 2, hell, o]);
    for text in ["hello wé", "  hello", "h\nello\u{1F600}"] {
        assert_eq!(c.decode(&c.encode(text).unwrap()).unwrap(), text);
    }
    assert_eq!(c.eos_ids(), [2]);
    assert_eq!(c.bos_id(), Some(1));
}
