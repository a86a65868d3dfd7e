//! Finding the code in a completion.

/// The first fenced ```python block anywhere in `text` (the paper's rule, even inside <think>).
/// The fence must be "```python" followed by a newline; the block ends at the next "\n```".
pub fn first_python_block(text: &str) -> Option<&str> {
    const OPEN: &str = "```python\n";
    let start = text.find(OPEN)? + OPEN.len();
    let rest = &text[start..];
    let end = rest.find("\n```")?;
    Some(&rest[..end])
}

/// The text between the first `<answer>` and the following `</answer>`.
pub fn answer_section(text: &str) -> Option<&str> {
    let start = text.find("<answer>")? + "<answer>".len();
    let rest = &text[start..];
    let end = rest.find("</answer>")?;
    Some(&rest[..end])
}

/// The first python block inside the <answer> section.
pub fn answer_python_block(text: &str) -> Option<&str> {
    answer_section(text).and_then(first_python_block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_first_block_even_inside_think() {
        let t = "<think>```python\na = 1\n```</think>\n<answer>```python\nb = 2\n```</answer>";
        assert_eq!(first_python_block(t), Some("a = 1"));
        assert_eq!(answer_python_block(t), Some("b = 2"));
    }

    #[test]
    fn missing_or_unclosed_blocks() {
        assert_eq!(first_python_block("no code"), None);
        assert_eq!(first_python_block("```python\nx = 1"), None);
        assert_eq!(first_python_block("```py\nx = 1\n```"), None);
        assert_eq!(answer_python_block("<answer>text</answer>"), None);
    }
}
