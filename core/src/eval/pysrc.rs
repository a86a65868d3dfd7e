//! Light Python source handling: splitting test files into top-level statements, finding the
//! modules code imports and the functions it defines. Line-based, with triple-quoted strings
//! tracked so a string's column-0 lines are not taken for statements.

/// A top-level statement (with its decorators, body and trailing blank/comment lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopLevel {
    pub text: String,
    /// Function name when the statement is a `def`/`async def`.
    pub def_name: Option<String>,
}

pub fn top_level_statements(src: &str) -> Vec<TopLevel> {
    let mut out: Vec<TopLevel> = Vec::new();
    let mut cur = String::new();
    let mut in_string: Option<&str> = None;
    let mut pending_decorator = false;
    for line in src.lines() {
        let starts_stmt = in_string.is_none()
            && line
                .chars()
                .next()
                .is_some_and(|c| !c.is_whitespace() && !matches!(c, '#' | ')' | ']' | '}'));
        if starts_stmt && !pending_decorator && !cur.trim().is_empty() {
            out.push(finish(std::mem::take(&mut cur)));
        }
        if starts_stmt {
            pending_decorator = line.starts_with('@');
        }
        cur.push_str(line);
        cur.push('\n');
        in_string = track_triple_quotes(line, in_string);
    }
    if !cur.trim().is_empty() {
        out.push(finish(cur));
    }
    out
}

fn finish(text: String) -> TopLevel {
    let def_name = text
        .lines()
        .find(|l| !l.starts_with('@') && !l.trim().is_empty() && !l.starts_with('#'))
        .and_then(def_name_of);
    TopLevel { text, def_name }
}

fn def_name_of(line: &str) -> Option<String> {
    let rest = line.strip_prefix("async def ").or_else(|| line.strip_prefix("def "))?;
    let name: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Which triple quote (if any) is open after `line`, given the one open before it.
fn track_triple_quotes<'a>(line: &str, mut open: Option<&'a str>) -> Option<&'a str> {
    let mut i = 0;
    let b = line.as_bytes();
    while i < b.len() {
        match open {
            None if b[i] == b'#' => break,
            None if line[i..].starts_with("\"\"\"") => {
                open = Some("\"\"\"");
                i += 3;
            }
            None if line[i..].starts_with("'''") => {
                open = Some("'''");
                i += 3;
            }
            None if b[i] == b'"' || b[i] == b'\'' => {
                // Skip an ordinary one-line string.
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            Some(q) if line[i..].starts_with(q) => {
                open = None;
                i += 3;
            }
            Some(_) if b[i] == b'\\' => i += 2,
            _ => i += 1,
        }
    }
    open
}

/// The first top-level function defined in `src`.
pub fn first_def(src: &str) -> Option<String> {
    top_level_statements(src).into_iter().find_map(|s| s.def_name)
}

/// Top-level module names imported anywhere in `src` (`import a.b, c as d`, `from e.f import g`).
pub fn imported_modules(src: &str) -> Vec<String> {
    let mut mods = Vec::new();
    for line in src.lines() {
        let l = line.trim_start();
        let names: Vec<&str> = if let Some(rest) = l.strip_prefix("import ") {
            rest.split(',').collect()
        } else if let Some(rest) = l.strip_prefix("from ") {
            match rest.split_once(" import") {
                Some((m, _)) => vec![m],
                None => continue,
            }
        } else {
            continue;
        };
        for n in names {
            let top = n.trim().split([' ', '.']).next().unwrap_or("");
            if !top.is_empty() && top.chars().all(|c| c.is_alphanumeric() || c == '_') && !mods.iter().any(|m| m == top)
            {
                mods.push(top.to_string());
            }
        }
    }
    mods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_tests_keeping_strings_and_decorators() {
        let src = "import math\n\ndef test_a():\n    s = \"\"\"\nnot a statement\n\"\"\"\n    assert s\n\n@dec\ndef test_b():\n    x = (1,\n)\n    # c\n\ndef helper():\n    return '#'\n";
        let st = top_level_statements(src);
        let names: Vec<_> = st.iter().map(|s| s.def_name.clone()).collect();
        assert_eq!(
            names,
            vec![
                None,
                Some("test_a".into()),
                Some("test_b".into()),
                Some("helper".into())
            ]
        );
        assert!(st[1].text.contains("not a statement"));
        assert!(st[2].text.starts_with("@dec\ndef test_b"));
    }

    #[test]
    fn finds_imports_and_defs() {
        let src = "import numpy as np, re\nfrom sympy.abc import x\nfrom . import y\n  import torch.nn\nold = 1\ndef f():\n  pass\n";
        assert_eq!(imported_modules(src), vec!["numpy", "re", "sympy", "torch"]);
        assert_eq!(first_def("x = 1\ndef sine(x):\n    return x\n"), Some("sine".into()));
    }
}
