//! Loading a model file into the IR, with errors that name the file.

use anyhow::{Context, Result};
use pare_ir::Graph;
use std::path::Path;

/// Reads, decodes and imports an ONNX file.
pub fn load(path: &Path) -> Result<Graph> {
    let proto = pare_onnx::read_model(path)?;
    pare_ir::import(&proto).with_context(|| format!("{}: cannot import the model", path.display()))
}
