//! Python's whitespace rules for strings, shared by the chat templates and code normalisation.

/// Python's `str.isspace` / regex `\s`: Unicode White_Space plus the separators U+001C..U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}
