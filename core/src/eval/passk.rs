//! The unbiased pass@k estimator of Chen et al. (2021).

/// 1 - C(n-c, k) / C(n, k), as 1 - prod_{i=n-c+1}^{n} (1 - k/i) (no large binomials).
/// `None` when k > n or c > n (the estimate is undefined).
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    let prod: f64 = ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    Some(1.0 - prod)
}

/// Mean pass@k over problems given as (n, c); problems with n < k are skipped.
/// Returns (mean, problems counted); the mean is `None` when none counted.
pub fn mean_pass_at_k(counts: &[(usize, usize)], k: usize) -> (Option<f64>, usize) {
    let vals: Vec<f64> = counts.iter().filter_map(|&(n, c)| pass_at_k(n, c, k)).collect();
    if vals.is_empty() {
        (None, 0)
    } else {
        (Some(vals.iter().sum::<f64>() / vals.len() as f64), vals.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from Python: 1 - math.comb(10-c, k) / math.comb(10, k).
    #[test]
    fn matches_exact_binomials_n10() {
        let k1 = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
        let k5 = [
            0.0,
            0.5,
            0.7777777777777778,
            0.9166666666666666,
            0.9761904761904762,
            0.996031746031746,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
        ];
        for c in 0..=10 {
            assert!((pass_at_k(10, c, 1).unwrap() - k1[c]).abs() < 1e-12, "k=1 c={c}");
            assert!((pass_at_k(10, c, 5).unwrap() - k5[c]).abs() < 1e-12, "k=5 c={c}");
            let k10 = if c == 0 { 0.0 } else { 1.0 };
            assert!((pass_at_k(10, c, 10).unwrap() - k10).abs() < 1e-12, "k=10 c={c}");
        }
    }

    #[test]
    fn undefined_and_large_cases() {
        assert_eq!(pass_at_k(3, 1, 4), None);
        assert_eq!(pass_at_k(3, 4, 1), None);
        assert_eq!(pass_at_k(3, 1, 0), None);
        // Large n: C(1000, 500) overflows f64, the product form does not.
        let v = pass_at_k(1000, 1, 500).unwrap();
        assert!((v - 0.5).abs() < 1e-9, "{v}");
        let (m, counted) = mean_pass_at_k(&[(10, 1), (10, 3), (2, 2)], 5);
        assert_eq!(counted, 2);
        assert!((m.unwrap() - (0.5 + 0.9166666666666666) / 2.0).abs() < 1e-12);
    }
}
