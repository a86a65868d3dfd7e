//! Advantage estimators beyond GRPO's, with verl `core_algos` semantics for outcome rewards
//! (one scalar per completion, γ = 1, so every token of a completion shares its advantage).

use super::{check_groups, mean};
use anyhow::{ensure, Result};

/// verl's `masked_whiten`: (x − μ) / sqrt(var + 1e-8).
pub const WHITEN_EPS: f64 = 1e-8;

/// RLOO (Ahmadian et al. 2024): each sample's baseline is the mean of the *other* samples of its
/// group: A = r − mean_{j≠i} r_j = n/(n−1) · (r − mean). A group of one has no other sample and
/// keeps its raw reward (verl does the same).
pub fn rloo_advantages(rewards: &[f64], group_size: usize) -> Result<Vec<f64>> {
    check_groups(rewards, group_size)?;
    if group_size == 1 {
        return Ok(rewards.to_vec());
    }
    let k = group_size as f64 / (group_size - 1) as f64;
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group_size) {
        let m = mean(g);
        out.extend(g.iter().map(|r| k * (r - m)));
    }
    Ok(out)
}

/// Whitening over tokens, as verl's `masked_whiten` over the batch's response mask: every
/// completion contributes its value once per token (`lengths`), the variance is unbiased over the
/// token count, and the result is (x − μ) / sqrt(var + 1e-8). With fewer than two tokens there is
/// no spread (var = 0; verl raises there).
pub fn token_whiten(xs: &[f64], lengths: &[usize]) -> Result<Vec<f64>> {
    ensure!(
        xs.len() == lengths.len(),
        "{} values but {} completion lengths",
        xs.len(),
        lengths.len()
    );
    let tokens: f64 = lengths.iter().map(|&l| l as f64).sum();
    if tokens == 0.0 {
        return Ok(vec![0.0; xs.len()]);
    }
    let weighted: Vec<(f64, f64)> = xs.iter().zip(lengths).map(|(&x, &l)| (x, l as f64)).collect();
    let counted: Vec<f64> = weighted.iter().filter(|(_, l)| *l > 0.0).map(|(x, _)| *x).collect();
    let mu = if counted.iter().all(|x| *x == counted[0]) {
        counted[0] // exact for a constant batch, so it gives exact zeros
    } else {
        weighted.iter().map(|(x, l)| x * l).sum::<f64>() / tokens
    };
    let var = if tokens < 2.0 {
        0.0
    } else {
        weighted.iter().map(|(x, l)| l * (x - mu) * (x - mu)).sum::<f64>() / tokens * (tokens / (tokens - 1.0))
    };
    let scale = 1.0 / (var + WHITEN_EPS).sqrt();
    Ok(xs.iter().map(|x| (x - mu) * scale).collect())
}

/// REINFORCE++ (Hu et al. 2025), verl `reinforce_plus_plus` with outcome rewards and γ = 1: the
/// return of every token is the completion's reward, whitened over all tokens of the batch.
pub fn reinforce_pp_advantages(rewards: &[f64], group_size: usize, lengths: &[usize]) -> Result<Vec<f64>> {
    check_groups(rewards, group_size)?;
    token_whiten(rewards, lengths)
}

/// REINFORCE++-baseline, verl `reinforce_plus_plus_baseline`: the group mean is subtracted first (a
/// group of one subtracts 0), then the result is whitened over all tokens of the batch.
pub fn reinforce_pp_baseline_advantages(rewards: &[f64], group_size: usize, lengths: &[usize]) -> Result<Vec<f64>> {
    check_groups(rewards, group_size)?;
    let mut centred = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group_size) {
        let m = if group_size == 1 { 0.0 } else { mean(g) };
        centred.extend(g.iter().map(|r| r - m));
    }
    token_whiten(&centred, lengths)
}
