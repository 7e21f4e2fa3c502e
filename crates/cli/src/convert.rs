//! `compress convert`: a round trip through pare's IR.

use crate::{model, paths};
use anyhow::Result;
use std::path::PathBuf;

/// Import a model into pare's IR and write it back: shape and constant subgraphs folded,
/// exporter idioms rewritten, unused nodes removed, external data inlined. What the model computes
/// is unchanged.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to read.
    model: PathBuf,
    /// Where to write the result (written to a temporary file, then renamed). Never the input.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    shape: model::InputShapeArg,
}

pub fn run(args: Args) -> Result<()> {
    let mut inputs = paths::Inputs::default();
    let graph = model::load(&args.model, &args.shape, &mut inputs)?;
    inputs.refuse_overwrite("-o", &args.output)?;
    pare_onnx::write_model(&args.output, &pare_ir::export(&graph))?;
    println!("wrote {}", args.output.display());
    Ok(())
}
