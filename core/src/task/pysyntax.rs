//! Python syntax check in-process, standing in for CPython's `ast.parse` (the paper's check).
//!
//! Uses rustpython-parser (Python 3.11 grammar). Checks CPython does later than `ast.parse`
//! (e.g. `return` outside a function) are not made by either. Equivalence with `ast.parse` on the
//! ReCode training data is tested in `core/tests/pysyntax_parity.rs`.

use rustpython_parser::{parse, Mode};

/// Ok when `code` parses as a Python module; otherwise the parser's message.
pub fn check(code: &str) -> Result<(), String> {
    // CPython rejects NUL bytes in source (SyntaxError since 3.12, ValueError before).
    if code.contains('\0') {
        return Err("source code cannot contain null bytes".into());
    }
    parse(code, Mode::Module, "<completion>")
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether `code` parses as a Python module.
pub fn parses(code: &str) -> bool {
    check(code).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_python() {
        assert!(parses(""));
        assert!(parses("import numpy as np\nx = np.concatenate([a, b])\n"));
        assert!(parses("def f(x, /, *, y=1):\n    return (z := x + y)\n"));
        assert!(parses("match p:\n    case [x, *_]:\n        pass\n"));
        assert!(parses("s = f'{x!r:>{w}}'\n"));
    }

    #[test]
    fn rejects_invalid_python() {
        assert!(!parses("def f(:\n    pass"));
        assert!(!parses("x = (1, 2"));
        assert!(!parses("if x:\nprint(1)"));
        assert!(!parses("a = 1\n  b = 2"));
        assert!(!parses("x = 'unterminated"));
        assert!(!parses("a\0 = 1"));
    }
}
