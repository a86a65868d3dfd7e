//! `recode`: train code LLMs with RL to follow library API updates, evaluate them, and inspect
//! every piece (specs, data, rewards, models) on its own.

mod cmd;
mod host;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "recode",
    version,
    about = "ReCode-rs: RL for code LLMs to keep up with API updates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train with an experiment spec (TOML).
    Run(cmd::run::RunArgs),
    /// Run an ablation sweep: every run its own process, in parallel, resumable, summarised.
    Sweep(cmd::sweep::SweepArgs),
    /// Check specs (experiments, fragments or sweeps) and print each fully resolved, with where every value came from.
    Validate(cmd::validate::ValidateArgs),
    /// List built-in plugins, and shared-library plugins found in the given folders.
    Plugins(cmd::inspect::PluginsArgs),
    /// Inspect a ReCode-format dataset.
    Data {
        #[command(subcommand)]
        command: cmd::inspect::DataCommand,
    },
    /// Score completions with rewards (for debugging rewards).
    Reward {
        #[command(subcommand)]
        command: cmd::inspect::RewardCommand,
    },
    /// Generate text with a model.
    Generate(cmd::model::GenerateArgs),
    /// Per-token log-probs of a text under a model.
    Score(cmd::model::ScoreArgs),
    /// Known models: fetch and cache them.
    Model {
        #[command(subcommand)]
        command: cmd::model::ModelCommand,
    },
    /// Evaluate a model or given candidates on CodeUpdateArena or HumanEval.
    Eval(cmd::eval::EvalArgs),
    /// The pinned Python environment evaluation programs run in (numpy 1.x, torch, sympy).
    EvalEnv {
        #[command(subcommand)]
        command: cmd::evalenv::EvalEnvCommand,
    },
    /// Install this binary and the shared libraries it needs under a prefix (for cluster nodes).
    Install(cmd::install::InstallArgs),
    /// Benchmarks: generation, training step, rewards.
    Bench {
        #[command(subcommand)]
        command: cmd::bench::BenchCommand,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => cmd::run::run(a),
        Command::Sweep(a) => cmd::sweep::sweep(a),
        Command::Validate(a) => cmd::validate::validate(a),
        Command::Plugins(a) => cmd::inspect::plugins(a),
        Command::Data { command } => cmd::inspect::data(command),
        Command::Reward { command } => cmd::inspect::reward(command),
        Command::Generate(a) => cmd::model::generate(a),
        Command::Score(a) => cmd::model::score(a),
        Command::Model { command } => cmd::model::model(command),
        Command::Eval(a) => cmd::eval::eval(a),
        Command::EvalEnv { command } => cmd::evalenv::eval_env(command),
        Command::Install(a) => cmd::install::install(a),
        Command::Bench { command } => cmd::bench::bench(command),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
