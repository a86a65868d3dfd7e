//! The training prompt: system and user texts (Jinja over a data row), an optional assistant
//! prefill that generation continues, all passed through a chat template.

use crate::api::ChatMessage;
use crate::chat;
use crate::spec::PromptSpec;
use crate::task::data::Row;
use anyhow::{anyhow, bail, Result};
use minijinja::Environment;

/// The spec key of a template: `prompt.<field>`, or a dotted key as given (`sft.target`).
fn key(name: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("prompt.{name}")
    }
}

/// Render one field template (`system`, `user`, `prefill`, or a dotted key such as `sft.target`)
/// with the row's fields in scope.
/// The text is kept as written, trailing newline included.
pub fn render_field(name: &str, template: &str, row: &Row) -> Result<String> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let tmpl = env
        .template_from_str(template)
        .map_err(|e| anyhow!("{}: template does not compile: {e:#}", key(name)))?;
    tmpl.render(row)
        .map_err(|e| anyhow!("{}: rendering for data line {} failed (fields: dependency, new_version, description, update_info, old_code, new_code): {e:#}", key(name), row.line))
}

/// The chat messages of a row: system (if set), user, and the prefill as an assistant message (if set).
pub fn messages(spec: &PromptSpec, row: &Row) -> Result<Vec<ChatMessage>> {
    let mut out = Vec::new();
    if !spec.system.is_empty() {
        out.push(ChatMessage {
            role: "system".into(),
            content: render_field("system", &spec.system, row)?,
        });
    }
    out.push(ChatMessage {
        role: "user".into(),
        content: render_field("user", &spec.user, row)?,
    });
    if !spec.prefill.is_empty() {
        out.push(ChatMessage {
            role: "assistant".into(),
            content: render_field("prefill", &spec.prefill, row)?,
        });
    }
    Ok(out)
}

/// The full prompt text. Uses `spec.chat_template`, else `fallback_template` (the model's own).
/// With a prefill the assistant turn is left open after it; without one a generation prompt is added.
pub fn render_prompt(spec: &PromptSpec, row: &Row, fallback_template: Option<&str>) -> Result<String> {
    if spec.user.is_empty() {
        bail!("prompt.user is empty: the user message template is required");
    }
    let template = match (spec.chat_template.as_str(), fallback_template) {
        ("", Some(t)) => t,
        ("", None) => bail!("prompt.chat_template is empty and the model ships no chat template"),
        (t, _) => t,
    };
    let msgs = messages(spec, row)?;
    let prefill = !spec.prefill.is_empty();
    chat::render(template, &msgs, !prefill, prefill)
}

/// Load the `[prompt]` section of a TOML file (e.g. `configs/prompt-recode.toml`).
pub fn load_prompt_spec(path: &std::path::Path) -> Result<PromptSpec> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        prompt: PromptSpec,
    }
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
    let f: File = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(f.prompt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn row() -> Row {
        Row {
            dependency: "NumPy".into(),
            new_version: "2.0.0".into(),
            description: "Multiply the elements of an array.".into(),
            update_info: "np.product was removed; use np.prod.".into(),
            old_code: "import numpy as np\nt = np.product([2, 3])".into(),
            new_code: "import numpy as np\nt = np.prod([2, 3])".into(),
            line: 1,
            columns: Default::default(),
        }
    }

    fn recode_spec() -> PromptSpec {
        load_prompt_spec(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/prompt-recode.toml")).unwrap()
    }

    /// Golden: the exact prompt the paper's data pipeline produces for this row.
    #[test]
    fn recode_prompt_golden() {
        let expected = "<|im_start|>system\nYou are a helpful coding assistant. Your task is to transform the old version of the code \
into the new version specified, based on the update information. You first thinks about the reasoning process in the mind \
and then provides the solution.<|im_end|>\n<|im_start|>user\n\nNumPy performed an API update in version 2.0.0, and the \
update content includes:\n<doc>\nnp.product was removed; use np.prod.\n</doc>\nThe old version of the code is:\n```python\n\
import numpy as np\nt = np.product([2, 3])\n```\n\nShow your work in <think> </think> tags. And return the final code in \
<answer> </answer>, the code within <answer></answer> should be enclosed in ```python ``` tags.\n<|im_end|>\n\
<|im_start|>assistant\nLet me solve this step by step.\n<think>";
        assert_eq!(render_prompt(&recode_spec(), &row(), None).unwrap(), expected);
    }

    #[test]
    fn fallback_template_and_generation_prompt() {
        let spec = PromptSpec {
            user: "Update {{ dependency }} to {{ new_version }}".into(),
            ..Default::default()
        };
        let t = "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}";
        assert_eq!(
            render_prompt(&spec, &row(), Some(t)).unwrap(),
            "[user:Update NumPy to 2.0.0]>"
        );
        assert!(render_prompt(&spec, &row(), None).is_err());
    }

    #[test]
    fn unknown_field_is_an_error() {
        let spec = PromptSpec {
            user: "{{ version }}".into(),
            chat_template: "x".into(),
            ..Default::default()
        };
        let err = format!("{:#}", render_prompt(&spec, &row(), None).unwrap_err());
        assert!(err.contains("prompt.user") && err.contains("line 1"), "{err}");
    }
}
