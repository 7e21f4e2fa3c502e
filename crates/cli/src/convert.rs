//! `compress convert`: a round trip through pare's IR.

use crate::model;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Import a model into pare's IR and write it back: shape subgraphs folded, unused nodes removed,
/// external data inlined. What the model computes is unchanged.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to read.
    model: PathBuf,
    /// Where to write the result (written to a temporary file, then renamed). Never the input.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    refuse_overwrite(&args.model, &args.output)?;
    let graph = model::load(&args.model)?;
    pare_onnx::write_model(&args.output, &pare_ir::export(&graph))?;
    println!("wrote {}", args.output.display());
    Ok(())
}

/// Whether two paths name the same file, whether or not it exists yet (`./a.onnx` and
/// `dir/../a.onnx` are the same).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    matches!((resolve(a), resolve(b)), (Some(x), Some(y)) if x == y)
}

/// Refuses an output path that names the input file (or, for a model with external data, its
/// data file).
pub fn refuse_overwrite(input: &Path, output: &Path) -> Result<()> {
    let same = same_file;
    let data = input.with_file_name(format!(
        "{}.data",
        input.file_name().unwrap_or_default().to_string_lossy()
    ));
    if same(input, output) || same(&data, output) {
        bail!(
            "{}: the output would overwrite the input; choose another -o path",
            output.display()
        );
    }
    Ok(())
}
