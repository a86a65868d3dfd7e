//! Imports for the names a CodeUpdateArena solution signature uses.
//!
//! The benchmark hands the model a signature such as `def f(xs: List[int]) -> Tuple[int, int]:`
//! but the example's own imports often leave `List`/`Tuple` out (its reference solution imports
//! them itself). A candidate that copies the signature would then fail with a NameError that says
//! nothing about API-update knowledge, so by default the setup imports them (a documented
//! deviation from CodeUpdateArena's harness; see docs/evaluation.md).

use std::collections::BTreeSet;

/// `typing` names present from Python 3.8 to 3.13 (importing a missing one would fail the setup).
const TYPING: &[&str] = &[
    "AbstractSet",
    "Annotated",
    "Any",
    "AnyStr",
    "AsyncContextManager",
    "AsyncGenerator",
    "AsyncIterable",
    "AsyncIterator",
    "Awaitable",
    "BinaryIO",
    "ByteString",
    "Callable",
    "ChainMap",
    "ClassVar",
    "Collection",
    "Container",
    "ContextManager",
    "Coroutine",
    "Counter",
    "DefaultDict",
    "Deque",
    "Dict",
    "Final",
    "ForwardRef",
    "FrozenSet",
    "Generator",
    "Generic",
    "Hashable",
    "IO",
    "ItemsView",
    "Iterable",
    "Iterator",
    "KeysView",
    "List",
    "Literal",
    "Mapping",
    "MappingView",
    "Match",
    "MutableMapping",
    "MutableSequence",
    "MutableSet",
    "NamedTuple",
    "NewType",
    "NoReturn",
    "Optional",
    "OrderedDict",
    "Pattern",
    "Protocol",
    "Reversible",
    "Sequence",
    "Set",
    "Sized",
    "SupportsAbs",
    "SupportsBytes",
    "SupportsComplex",
    "SupportsFloat",
    "SupportsIndex",
    "SupportsInt",
    "SupportsRound",
    "Text",
    "TextIO",
    "Tuple",
    "Type",
    "TypeVar",
    "TypedDict",
    "Union",
    "ValuesView",
];

/// Other names signatures use, with the statement binding them and the module it needs.
const OTHER: &[(&str, &str, &str)] = &[
    ("typing", "import typing", "typing"),
    ("re", "import re", "re"),
    ("Number", "from numbers import Number", "numbers"),
    ("np", "import numpy as np", "numpy"),
    ("numpy", "import numpy", "numpy"),
    ("ndarray", "from numpy import ndarray", "numpy"),
    ("torch", "import torch", "torch"),
    ("Tensor", "from torch import Tensor", "torch"),
];

const STDLIB: &[&str] = &["typing", "re", "numbers"];

/// Names in `signature` that are not attributes (`x.List` is not `List`), outside string literals.
pub fn free_names(signature: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let chars: Vec<char> = signature.chars().collect();
    let mut i = 0;
    let mut prev_sig = ' '; // last non-space character before the current token
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            // Skip the literal (annotations in quotes are not evaluated at definition time).
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            prev_sig = c;
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if prev_sig != '.' {
                out.insert(chars[start..i].iter().collect());
            }
            prev_sig = 'a';
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            prev_sig = '0';
            continue;
        }
        if !c.is_whitespace() {
            prev_sig = c;
        }
        i += 1;
    }
    out
}

/// Statements importing every known name `signature` uses; third-party modules only when
/// `available_modules` (the modules the example's own code imports) has them, so no problem
/// gains a dependency.
pub fn imports_for(signature: &str, available_modules: &[String]) -> String {
    let names = free_names(signature);
    let typing: Vec<&str> = TYPING.iter().copied().filter(|n| names.contains(*n)).collect();
    let mut s = String::new();
    if !typing.is_empty() {
        s.push_str(&format!("from typing import {}\n", typing.join(", ")));
    }
    for (name, stmt, module) in OTHER {
        let importable = STDLIB.contains(module) || available_modules.iter().any(|m| m == module);
        if names.contains(*name) && importable {
            s.push_str(stmt);
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_free_names_only() {
        let n = free_names(
            "def f(xs: List[int], t: torch.Tensor, u: 'Dict[str, int]' = 'Set') -> Union[np.ndarray, Tuple]:",
        );
        for want in ["List", "torch", "Union", "np", "Tuple", "f", "xs"] {
            assert!(n.contains(want), "{want} missing from {n:?}");
        }
        for not in ["Tensor", "ndarray", "Dict", "Set"] {
            assert!(!n.contains(not), "{not} should not be free in {n:?}");
        }
    }

    #[test]
    fn imports_typing_and_only_available_third_party_modules() {
        let sig = "def f(a: List[Tensor], b: Optional[np.ndarray]) -> Tuple[int, Number]:";
        let s = imports_for(sig, &["numpy".into()]);
        assert!(s.contains("from typing import List, Optional, Tuple\n"), "{s}");
        assert!(
            s.contains("import numpy as np\n") && s.contains("from numbers import Number\n"),
            "{s}"
        );
        assert!(!s.contains("torch"), "torch is not among the example's modules: {s}");
        assert_eq!(imports_for("def g(x: int) -> str:", &[]), "");
    }
}
