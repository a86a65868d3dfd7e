//! Code normalisation before comparing a completion with its target.
//!
//! Semantics of the paper's `remove_comments_and_blank_lines`, written as a scanner instead of
//! regexes: string literals are found first (leftmost, alternatives `'''`, `"""`, `'`, `"` in that
//! order, each ending at the nearest closing quote, across lines) and protected; `#` up to the end
//! of the line is removed outside them; then runs of blank lines collapse and the ends are stripped.
//! Two bugs of the original are not reproduced: strings are restored by index (it replaced
//! `STRING_PLACEHOLDER_1` inside `STRING_PLACEHOLDER_10`), and nothing here divides.

pub use crate::pystr::{is_py_space, py_strip};

enum Piece<'a> {
    Code(&'a str),
    Str(&'a str),
}

/// Split into code and string-literal pieces, as `re.sub(string_pattern, ...)` sees them.
fn split_strings(code: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let bytes = code.as_bytes();
    let (mut i, mut code_start) = (0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\'' && b != b'"' {
            i += 1;
            continue;
        }
        let end = literal_end(code, i);
        if let Some(end) = end {
            if code_start < i {
                pieces.push(Piece::Code(&code[code_start..i]));
            }
            pieces.push(Piece::Str(&code[i..end]));
            i = end;
            code_start = end;
        } else {
            i += 1;
        }
    }
    if code_start < code.len() {
        pieces.push(Piece::Code(&code[code_start..]));
    }
    pieces
}

/// End (exclusive) of the literal starting at `i`, trying the alternatives in the paper's order.
fn literal_end(code: &str, i: usize) -> Option<usize> {
    let rest = &code[i..];
    for q in ["'''", "\"\"\"", "'", "\""] {
        if let Some(k) = rest.strip_prefix(q).and_then(|body| body.find(q)) {
            return Some(i + q.len() + k + q.len());
        }
    }
    None
}

/// Drop `#` comments (to the next newline in code) outside string literals; a comment swallows
/// any literal before that newline, as the regex on the placeholder text did.
fn strip_comments(pieces: &[Piece<'_>]) -> String {
    let mut out = String::new();
    let mut in_comment = false;
    for p in pieces {
        match p {
            Piece::Str(s) if !in_comment => out.push_str(s),
            Piece::Str(_) => {}
            Piece::Code(c) => {
                let mut rest = *c;
                loop {
                    if in_comment {
                        match rest.find('\n') {
                            Some(k) => {
                                in_comment = false;
                                rest = &rest[k..];
                            }
                            None => break,
                        }
                    }
                    match rest.find('#') {
                        Some(k) => {
                            out.push_str(&rest[..k]);
                            in_comment = true;
                            rest = &rest[k..];
                        }
                        None => {
                            out.push_str(rest);
                            break;
                        }
                    }
                }
            }
        }
    }
    out
}

/// `re.sub(r'\n\s*\n', '\n', s)`: a newline, whitespace containing further newlines, and the
/// last of those newlines become one newline; whitespace after that last newline stays.
fn collapse_blank_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(k) = rest.find('\n') {
        out.push_str(&rest[..k]);
        let after = &rest[k + 1..];
        let ws_len = after.find(|c: char| !is_py_space(c)).unwrap_or(after.len());
        match after[..ws_len].rfind('\n') {
            Some(last) => {
                out.push('\n');
                rest = &after[last + 1..];
            }
            None => {
                out.push('\n');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `re.sub(r"^\s*$\n", "", s, flags=re.MULTILINE)`: drop whitespace-only lines with their newline.
fn drop_blank_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        let blank = line.ends_with('\n') && line.chars().all(is_py_space);
        if !blank {
            out.push_str(line);
        }
    }
    out
}

/// Normalise code for comparison (comments and blank lines removed, ends stripped).
pub fn normalize_code(code: &str) -> String {
    let without_comments = strip_comments(&split_strings(code));
    let collapsed = collapse_blank_lines(&without_comments);
    drop_blank_lines(py_strip(&collapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_comments_and_blank_lines() {
        let code = "import numpy as np  # alias\n\n\n# whole line\nx = np.arange(3)\n   \ny = 1\n";
        assert_eq!(normalize_code(code), "import numpy as np  \nx = np.arange(3)\ny = 1");
    }

    #[test]
    fn protects_strings() {
        assert_eq!(
            normalize_code("s = '# not a comment'  # comment"),
            "s = '# not a comment'"
        );
        assert_eq!(
            normalize_code("d = \"\"\"a\n# kept\nb\"\"\""),
            "d = \"\"\"a\n# kept\nb\"\"\""
        );
    }

    #[test]
    fn comment_swallows_literal_on_its_line() {
        // The apostrophe opens no literal (no closing quote), so "x" is a literal inside the comment.
        assert_eq!(normalize_code("a = 1  # it's \"x\"\nb = 2"), "a = 1  \nb = 2");
    }

    #[test]
    fn apostrophe_in_comment_spans_to_next_quote() {
        // As in the paper: the quote in "don't" pairs with the one before y, so the comment eats it all.
        assert_eq!(normalize_code("a = 1  # don't\nb = 'y'"), "a = 1");
    }

    #[test]
    fn many_strings_restored_by_index() {
        let code: String = (0..12).map(|i| format!("s{i} = 'v{i}'\n")).collect();
        assert_eq!(normalize_code(&code), code.trim_end());
    }

    #[test]
    fn blank_lines_inside_strings_collapse_too() {
        // The paper collapses blank lines after restoring strings.
        assert_eq!(normalize_code("s = '''a\n\n  \nb'''"), "s = '''a\nb'''");
        assert_eq!(collapse_blank_lines("a\n \n  b"), "a\n  b");
    }

    #[test]
    fn python_whitespace() {
        assert_eq!(py_strip("\u{1c} x \u{a0}"), "x");
        assert_eq!(normalize_code(""), "");
        assert_eq!(normalize_code("# only\n\n"), "");
    }
}
