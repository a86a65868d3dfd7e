//! Test prompts (system + user messages; the caller applies the chat template and, for ReCode,
//! the assistant prefill `PREFILL`).

use super::cua::CuaExample;
use super::humaneval::HumanEvalTask;
use crate::api::ChatMessage;
use anyhow::{bail, Result};
use serde::Serialize;

/// The assistant turn starts with this in ReCode's evaluation; generation continues it.
pub const PREFILL: &str = "Let me solve this step by step.\n<think>";

const SYSTEM: &str = "You are a helpful assistant. You first think through the problem step by step, \
then give the user the final answer.";

const ANSWER_FORMAT: &str = "Reason inside <think> </think> tags. Then put the complete solution, \
including the imports it needs, in one ```python code block inside <answer> </answer> tags.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptVariant {
    /// ReCode: update note with the new signature and the docstring in <doc>, then the task.
    Recode,
    /// CodeUpdateArena without the update (what the model knows on its own).
    NoUpdate,
    /// CodeUpdateArena's prepending baseline: update note, then the task.
    UpdatePrepended,
}

impl std::str::FromStr for PromptVariant {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "recode" => Self::Recode,
            "no_update" => Self::NoUpdate,
            "update_prepended" => Self::UpdatePrepended,
            _ => bail!("unknown prompt variant {s:?} (expected recode, no_update or update_prepended)"),
        })
    }
}

fn messages(user: String) -> Vec<ChatMessage> {
    vec![
        ChatMessage {
            role: "system".into(),
            content: SYSTEM.into(),
        },
        ChatMessage {
            role: "user".into(),
            content: user,
        },
    ]
}

pub fn cua_messages(ex: &CuaExample, variant: PromptVariant) -> Vec<ChatMessage> {
    let u = &ex.update;
    let task = format!(
        "Scenario: {}\n\nProblem: {}\n\nSolution signature: {}",
        ex.scenario.trim(),
        ex.problem.trim(),
        ex.solution_signature.trim()
    );
    // CodeUpdateArena shows one unit test of the problem with the task.
    let public_test = ex
        .tests()
        .first()
        .map(|t| format!("\n\nExample test:\n```python\n{}```", t.code))
        .unwrap_or_default();
    let user = match variant {
        PromptVariant::Recode => format!(
            "The API `{}` has been updated. {}\nNew signature: `{}`\nDocumentation of the update:\n<doc>\n{}\n</doc>\n\n\
             Solve the problem below using the updated API.\n\n{task}\n\n{ANSWER_FORMAT}",
            u.function_path,
            u.description.trim(),
            u.signature.trim(),
            u.docstring.trim()
        ),
        PromptVariant::UpdatePrepended => format!(
            "Update note: the function `{}` was recently changed: {} Its signature is now `{}`.\n\
             Detailed documentation of the update:\n[DOC]\n{}\n[/DOC]\n\n\
             Write a Python solution to the following real-world problem.\n\n{task}{public_test}\n\n{ANSWER_FORMAT}",
            u.function_path,
            u.description.trim(),
            u.signature.trim(),
            u.docstring.trim()
        ),
        PromptVariant::NoUpdate => {
            format!("Write a Python solution to the following real-world problem.\n\n{task}{public_test}\n\n{ANSWER_FORMAT}")
        }
    };
    messages(user)
}

pub fn humaneval_messages(t: &HumanEvalTask) -> Vec<ChatMessage> {
    messages(format!(
        "Complete the following Python function so that it does what its docstring says.\n\n```python\n{}```\n\n\
         {ANSWER_FORMAT} The code block must contain the whole function `{}`.",
        t.prompt, t.entry_point
    ))
}
