//! Ablation sweeps: a sweep file (a base experiment and axes) expands into runs
//! ([`plan::expand`]), every run is validated before any starts, each run is its own `recode run`
//! process ([`local::run`], or a Slurm array task, [`slurm::run`]) over the shared [`runner`], the
//! state of every run is kept in [`record`], and the runs' logs are gathered into tables and plots
//! ([`report::summarise`]). Everything lives in one sweep folder:
//!
//! ```text
//! <sweep dir>/sweep.json          plan, status of every run, final/best metrics, per-variant stats
//! <sweep dir>/summary.md|.csv     one row per run; summary-variants.csv: mean/std/CI over seeds
//! <sweep dir>/summary-heldout.csv  each variant's held-out change over step 0, paired-bootstrap CI
//! <sweep dir>/plots/*.png         chosen metrics against step, one line per run
//! <sweep dir>/specs/<run>.toml    the resolved spec each run was started with
//! <sweep dir>/logs/<run>.log      the run's stdout and stderr (every attempt)
//! <sweep dir>/<run>/<timestamp>/  the run directory (tb/ inside: `tensorboard --logdir <sweep dir>`)
//! <sweep dir>/slurm/              with `--executor slurm`: the array scripts, job ids, task output, exit codes
//! ```

pub mod heldout_change;
pub mod local;
pub mod plan;
pub mod plot;
pub mod record;
pub mod report;
pub mod runner;
pub mod slurm;
pub mod stats;

pub use local::run;
pub use plan::{expand, is_sweep_file, Plan, PlannedRun};
pub use record::{SweepRecord, SWEEP_FILE};
pub use report::summarise;
pub use runner::{ExecOptions, Outcome};
