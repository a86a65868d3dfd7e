//! Edit similarity over Unicode scalar values (Python `str` characters), as ReCode's reward code
//! computes it with `Levenshtein.distance`. The distance is strsim's: a reward costs milliseconds
//! against minutes for a training step, so a hand-written bit-parallel kernel is not worth its
//! upkeep. Parity with the paper's Python is checked in tests/parity.rs.

/// Edit distance between two strings (unit-cost insertions, deletions, substitutions), in chars.
pub fn levenshtein(a: &str, b: &str) -> usize {
    strsim::levenshtein(a, b)
}

/// 1 - distance / max(len) in chars; 1 when both are empty (the paper divides by zero there).
pub fn similarity(a: &str, b: &str) -> f64 {
    let longest = a.chars().count().max(b.chars().count());
    if longest == 0 {
        return 1.0;
    }
    1.0 - levenshtein(a, b) as f64 / longest as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("flaw", "lawn"), 2);
        assert_eq!(levenshtein("héllo", "hello"), 1); // one char, two bytes
        assert_eq!(similarity("", ""), 1.0);
        assert_eq!(similarity("abcd", "abed"), 0.75);
        assert_eq!(similarity("np.float_", "np.float64"), 1.0 - 2.0 / 10.0);
        assert_eq!(similarity("中文", "中"), 0.5); // counted in chars, not bytes
    }
}
