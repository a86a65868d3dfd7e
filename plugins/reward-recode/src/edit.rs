//! Levenshtein distance over Unicode scalar values (Python `str` characters), bit-parallel.
//!
//! Myers' bit-vector algorithm in Hyyrö's formulation, blocked over 64-row words so patterns of
//! any length run in O(ceil(m/64) * n). Common prefix and suffix are trimmed first.

use std::collections::HashMap;

const ASCII: usize = 128;

/// Match masks of the pattern, one word per 64-row block.
struct Peq {
    blocks: usize,
    ascii: Vec<u64>,
    other: HashMap<char, Vec<u64>>,
    zero: Vec<u64>,
}

impl Peq {
    fn new(pattern: &[char]) -> Self {
        let blocks = pattern.len().div_ceil(64);
        let mut p = Peq { blocks, ascii: vec![0; ASCII * blocks], other: HashMap::new(), zero: vec![0; blocks] };
        for (i, &c) in pattern.iter().enumerate() {
            let bit = 1u64 << (i % 64);
            if (c as usize) < ASCII {
                p.ascii[c as usize * blocks + i / 64] |= bit;
            } else {
                p.other.entry(c).or_insert_with(|| vec![0; blocks])[i / 64] |= bit;
            }
        }
        p
    }

    fn get(&self, c: char) -> &[u64] {
        if (c as usize) < ASCII {
            let k = c as usize * self.blocks;
            &self.ascii[k..k + self.blocks]
        } else {
            self.other.get(&c).map_or(&self.zero, |v| v)
        }
    }
}

/// Edit distance between `a` and `b` (unit-cost insertions, deletions, substitutions).
pub fn levenshtein_chars(a: &[char], b: &[char]) -> usize {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    let suffix = a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[..a.len() - suffix], &b[..b.len() - suffix]);
    // The shorter string is the pattern (rows): fewer blocks per column.
    let (pat, text) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if pat.is_empty() {
        return text.len();
    }
    let peq = Peq::new(pat);
    let m = pat.len();
    let blocks = peq.blocks;
    let last_bit = 1u64 << ((m - 1) % 64);
    let mut pv = vec![u64::MAX; blocks];
    let mut mv = vec![0u64; blocks];
    let mut score = m as isize;
    for &c in text {
        let eqs = peq.get(c);
        // Horizontal delta entering block 0 is +1: the top row is D[0][j] = j.
        let mut hin: i8 = 1;
        for blk in 0..blocks {
            let (p, n) = (pv[blk], mv[blk]);
            let mut eq = eqs[blk];
            let xv = eq | n;
            if hin < 0 {
                eq |= 1;
            }
            let xh = (((eq & p).wrapping_add(p)) ^ p) | eq;
            let mut ph = n | !(xh | p);
            let mut mh = p & xh;
            let out_bit = if blk + 1 == blocks { last_bit } else { 1u64 << 63 };
            let hout: i8 = i8::from(ph & out_bit != 0) - i8::from(mh & out_bit != 0);
            ph = (ph << 1) | u64::from(hin > 0);
            mh = (mh << 1) | u64::from(hin < 0);
            pv[blk] = mh | !(xv | ph);
            mv[blk] = ph & xv;
            hin = hout;
        }
        score += hin as isize;
    }
    score as usize
}

/// Edit distance between two strings, counted in chars.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    levenshtein_chars(&a, &b)
}

/// 1 - distance / max(len) in chars; 1 when both are empty (the paper divides by zero there).
pub fn similarity(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    1.0 - levenshtein_chars(&a, &b) as f64 / longest as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

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
    }

    #[test]
    fn matches_strsim_on_random_strings() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let alphabets: [&[char]; 3] = [&['a', 'b'], &['a', 'b', 'c', 'd', ' ', '\n'], &['x', 'é', '中', '🙂', 'y']];
        for round in 0..3000 {
            let alpha = alphabets[round % 3];
            let max_len = [5, 70, 200, 700][round % 4];
            let gen = |rng: &mut rand_chacha::ChaCha8Rng| -> String {
                let n = rng.gen_range(0..=max_len);
                (0..n).map(|_| alpha[rng.gen_range(0..alpha.len())]).collect()
            };
            let a = gen(&mut rng);
            // Related strings too: a mutated copy, so distances are small as well as large.
            let b = if round % 2 == 0 { gen(&mut rng) } else { mutate(&a, alpha, &mut rng) };
            assert_eq!(levenshtein(&a, &b), strsim::levenshtein(&a, &b), "a={a:?} b={b:?}");
        }
    }

    fn mutate(s: &str, alpha: &[char], rng: &mut rand_chacha::ChaCha8Rng) -> String {
        let mut v: Vec<char> = s.chars().collect();
        for _ in 0..rng.gen_range(0..10) {
            let c = alpha[rng.gen_range(0..alpha.len())];
            match rng.gen_range(0..3) {
                0 => v.insert(rng.gen_range(0..=v.len()), c),
                1 if !v.is_empty() => {
                    v.remove(rng.gen_range(0..v.len()));
                }
                _ if !v.is_empty() => {
                    let i = rng.gen_range(0..v.len());
                    v[i] = c;
                }
                _ => {}
            }
        }
        v.into_iter().collect()
    }
}
