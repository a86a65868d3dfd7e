//! `recode eval`.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct EvalArgs {}

pub fn eval(_a: EvalArgs) -> Result<()> {
    anyhow::bail!("recode eval is being wired up")
}
