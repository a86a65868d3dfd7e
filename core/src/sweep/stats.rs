//! Spread over seeds: mean, sample standard deviation and a 95 % confidence interval of the mean
//! from Student's t distribution.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1); NaN for one value.
    pub std: f64,
    /// Half-width of the 95 % confidence interval of the mean: t(0.975, n-1) * std / sqrt(n).
    pub ci95: f64,
}

/// JSON has no NaN: serde_json writes it as `null`. Read such a `null` back as NaN (a spread of
/// one seed, an interval of one item), so a sweep record round-trips.
pub fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NAN))
}

pub fn spread(xs: &[f64]) -> Spread {
    let xs: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    let n = xs.len();
    if n == 0 {
        return Spread {
            n,
            mean: f64::NAN,
            std: f64::NAN,
            ci95: f64::NAN,
        };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Spread {
            n,
            mean,
            std: f64::NAN,
            ci95: f64::NAN,
        };
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    Spread {
        n,
        mean,
        std,
        ci95: t975(n - 1) * std / (n as f64).sqrt(),
    }
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom: tabulated to 30, then the
/// Cornish-Fisher expansion around the normal quantile (error below 1e-4 there).
pub fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
        2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518,
        2.0484, 2.0452, 2.0423,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        _ => {
            let z: f64 = 1.959964;
            let d = df as f64;
            z + (z.powi(3) + z) / (4.0 * d) + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * d * d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_matches_a_hand_computation() {
        // mean 2, sample variance 1, std 1, t(0.975, 2) = 4.3027, ci = 4.3027 / sqrt(3).
        let s = spread(&[1.0, 2.0, 3.0]);
        assert_eq!(s.n, 3);
        assert!((s.mean - 2.0).abs() < 1e-12 && (s.std - 1.0).abs() < 1e-12);
        assert!((s.ci95 - 4.3027 / 3f64.sqrt()).abs() < 1e-9);
        assert!(spread(&[5.0]).std.is_nan());
    }

    #[test]
    fn the_t_quantile_joins_the_table_smoothly() {
        assert!((t975(30) - 2.0423).abs() < 1e-4);
        assert!((t975(40) - 2.0211).abs() < 1e-4);
        assert!((t975(120) - 1.9799).abs() < 1e-4);
    }
}
