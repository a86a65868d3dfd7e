//! Learning-rate schedules: linear warmup, then constant, linear or cosine decay to zero.

use crate::spec::{Schedule, TrainingSpec};

/// Warmup length in optimiser steps: `warmup_steps`, or `warmup_ratio * total` when that is 0.
pub fn warmup_steps(t: &TrainingSpec, total: usize) -> usize {
    if t.warmup_steps > 0 {
        t.warmup_steps
    } else {
        (t.warmup_ratio * total as f64).ceil() as usize
    }
}

/// Learning rate for optimiser step `step` (0-based) of `total`.
pub fn lr_at(t: &TrainingSpec, step: usize, total: usize) -> f64 {
    let warm = warmup_steps(t, total);
    if step < warm {
        return t.lr * (step + 1) as f64 / warm as f64;
    }
    let decay_len = total.saturating_sub(warm).max(1) as f64;
    let progress = ((step - warm) as f64 / decay_len).min(1.0);
    match t.schedule {
        Schedule::Constant => t.lr,
        Schedule::Linear => t.lr * (1.0 - progress),
        Schedule::Cosine => t.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: Schedule, warmup: usize) -> TrainingSpec {
        TrainingSpec {
            lr: 1.0,
            schedule,
            warmup_steps: warmup,
            ..TrainingSpec::default()
        }
    }

    #[test]
    fn warmup_then_cosine_by_hand() {
        let t = spec(Schedule::Cosine, 2);
        // total 6: warmup steps 0,1 -> 0.5, 1.0; decay over 4 steps: progress 0, .25, .5, .75
        let got: Vec<f64> = (0..6).map(|s| lr_at(&t, s, 6)).collect();
        let want = [0.5, 1.0, 1.0, 0.853_553_390_593_273_8, 0.5, 0.146_446_609_406_726_24];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
    }

    #[test]
    fn linear_constant_and_ratio() {
        let t = spec(Schedule::Linear, 0);
        assert_eq!(lr_at(&t, 0, 4), 1.0);
        assert_eq!(lr_at(&t, 2, 4), 0.5);
        assert_eq!(lr_at(&spec(Schedule::Constant, 0), 3, 4), 1.0);
        let r = TrainingSpec {
            warmup_ratio: 0.1,
            warmup_steps: 0,
            ..TrainingSpec::default()
        };
        assert_eq!(warmup_steps(&r, 150), 15);
    }
}
