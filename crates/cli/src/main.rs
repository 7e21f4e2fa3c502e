//! `compress`: the command-line front of pare. Parses arguments, calls the crates, prints
//! reports. It holds no algorithm of its own.

// deny rather than forbid: ndarray's `s!` expands to an `allow(unsafe_code)` of its own.
#![deny(unsafe_code)]

mod analyze;
mod compress;
mod convert;
mod data_args;
mod distill_args;
mod es_args;
mod eval;
mod finetune;
mod front;
mod front_plot;
mod inspect;
mod latency_args;
mod model;
mod paths;
mod progress;
mod relief_args;
mod sparsity;
mod table;
mod train_args;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Make pretrained ONNX CNNs smaller and faster, verified with tract.
///
/// `compress model.onnx --data DIR -o small.onnx` prunes whole channels while fine-tuning on
/// DIR's train split, then compares both models on its test split. DIR may hold unlabeled images
/// (the original model is then the teacher); without --data, pare prunes once, compensates
/// biases and does not fine-tune. The subcommands inspect, evaluate, convert or only fine-tune a
/// model.
#[derive(Parser)]
#[command(
    name = "compress",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    compress: compress::Args,
}

#[derive(Subcommand)]
enum Command {
    Inspect(inspect::Args),
    Eval(eval::Args),
    Convert(convert::Args),
    Finetune(finetune::Args),
    Analyze(analyze::Args),
}

fn main() -> ExitCode {
    pare_kernels::memory::keep_freed_memory();
    // Rust ignores SIGPIPE, so printing to a closed pipe (`compress eval … | head -2`) would
    // panic; like other Unix tools, end quietly instead. Files are never pipes (paths refuses
    // them), so this cannot cut a model write short.
    sigpipe::reset();
    // Ctrl-C (or SIGTERM) during a write would leave its hidden temporary file behind.
    let interrupted = ctrlc::set_handler(|| {
        pare_onnx::remove_unfinished_writes();
        std::process::exit(130);
    });
    if let Err(e) = interrupted {
        eprintln!("warning: cannot handle interrupts ({e}); one during a write may leave a temporary file");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Inspect(args)) => inspect::run(args),
        Some(Command::Eval(args)) => eval::run(args),
        Some(Command::Convert(args)) => convert::run(args),
        Some(Command::Finetune(args)) => finetune::run(args),
        Some(Command::Analyze(args)) => analyze::run(args),
        None => compress::run(cli.compress),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
