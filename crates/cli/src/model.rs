//! Loading a model file into the IR, with errors that name the file.

use crate::paths::Inputs;
use anyhow::{Context, Result};
use pare_ir::Graph;
use std::path::Path;

/// Reads, decodes and imports an ONNX file, recording it and its external data files in `inputs`.
pub fn load(path: &Path, inputs: &mut Inputs) -> Result<Graph> {
    let (proto, data_files) = pare_onnx::read_model_and_data_files(path)?;
    inputs.add("the input model", path);
    for file in data_files {
        inputs.add(format!("external data of {}", path.display()), &file);
    }
    pare_ir::import(&proto).with_context(|| format!("{}: cannot import the model", path.display()))
}
