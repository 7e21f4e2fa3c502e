//! `compress`: the command-line front of pare. Parses arguments, calls the crates, prints
//! reports. It holds no algorithm of its own.

mod convert;
mod eval;
mod finetune;
mod inspect;
mod model;
mod table;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Make pretrained ONNX CNNs smaller and faster, verified with tract.
#[derive(Parser)]
#[command(name = "compress", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Inspect(inspect::Args),
    Eval(eval::Args),
    Convert(convert::Args),
    Finetune(finetune::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Finetune(args) => finetune::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
