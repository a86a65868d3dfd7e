//! Chat-template rendering with Hugging Face `apply_chat_template` conventions.
//!
//! Templates see `messages`, `add_generation_prompt`, and may call `raise_exception` and
//! `strftime_now`; `bos_token`/`eos_token` and other unset names render as empty text. Like HF:
//! `trim_blocks`, `lstrip_blocks`, no trailing newline kept, Python string methods available.

use crate::api::ChatMessage;
use crate::pystr::{is_py_space, py_strip};
use anyhow::{anyhow, bail, Result};
use minijinja::{context, Environment, Error, ErrorKind};

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| {
        chrono::Local::now().format(&fmt).to_string()
    });
    env
}

/// Render `messages` with a chat template.
///
/// `continue_final_message` leaves the last message open for generation to continue: the output
/// is cut right after that message's content (HF semantics, including its whitespace handling).
pub fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    continue_final_message: bool,
) -> Result<String> {
    if add_generation_prompt && continue_final_message {
        bail!("chat template: add_generation_prompt and continue_final_message cannot both be set");
    }
    let env = environment();
    let tmpl = env
        .template_from_str(template)
        .map_err(|e| anyhow!("chat template does not compile: {e:#}"))?;
    let rendered = tmpl
        .render(context! { messages => messages, add_generation_prompt => add_generation_prompt })
        .map_err(|e| anyhow!("chat template failed to render: {e:#}"))?;
    if !continue_final_message {
        return Ok(rendered);
    }
    let Some(last) = messages.last() else {
        bail!("continue_final_message needs at least one message")
    };
    let stripped = py_strip(&last.content);
    let Some(loc) = rendered.rfind(stripped) else {
        bail!("continue_final_message: the final message does not appear in the rendered chat template output")
    };
    let lstripped = last.content.trim_start_matches(is_py_space);
    let end = if rendered[loc..].starts_with(&last.content) {
        loc + lstripped.len()
    } else {
        loc + stripped.len()
    };
    Ok(rendered[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    fn msgs(pairs: &[(&str, &str)]) -> Vec<ChatMessage> {
        pairs
            .iter()
            .map(|(r, c)| ChatMessage {
                role: r.to_string(),
                content: c.to_string(),
            })
            .collect()
    }

    #[test]
    fn generation_prompt_and_continuation() {
        let m = msgs(&[("user", "hi")]);
        assert_eq!(
            render(CHATML, &m, true, false).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        let m = msgs(&[("user", "hi"), ("assistant", "Sure.\n<think>")]);
        assert_eq!(
            render(CHATML, &m, false, true).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nSure.\n<think>"
        );
        assert!(render(CHATML, &m, true, true).is_err());
    }

    #[test]
    fn continuation_keeps_or_trims_trailing_space_like_hf() {
        // Template preserves the content: trailing space kept.
        let m = msgs(&[("assistant", "go ")]);
        assert_eq!(render(CHATML, &m, false, true).unwrap(), "<|im_start|>assistant\ngo ");
        // Template trims the content: cut after the stripped text.
        let trim = "{% for m in messages %}[{{ m.content.strip() }}]{% endfor %}";
        assert_eq!(render(trim, &m, false, true).unwrap(), "[go");
    }

    #[test]
    fn undefined_tokens_are_empty_and_exceptions_fail() {
        let t = "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}";
        assert_eq!(render(t, &msgs(&[("user", "x")]), false, false).unwrap(), "x");
        let t = "{% if messages[0].role != 'system' %}{{ raise_exception('need a system message') }}{% endif %}";
        let err = render(t, &msgs(&[("user", "x")]), false, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("need a system message"), "{err}");
    }

    #[test]
    fn trims_blocks_like_hf() {
        let t = "{% for m in messages %}\n  {{ m.content }}\n{% endfor %}\n";
        assert_eq!(
            render(t, &msgs(&[("user", "a"), ("user", "b")]), false, false).unwrap(),
            "  a\n  b\n"
        );
    }
}
