//! Loading a model file into the IR, with errors that name the file, and fixing an input shape
//! the exporter left open (from `--input-shape` or the dataset).

use crate::paths::Inputs;
use anyhow::{bail, Context, Result};
use pare_ir::Graph;
use std::path::Path;
use std::str::FromStr;

/// The shape of one sample, `CxHxW` (e.g. `3x48x192`), for models whose input leaves its image
/// dimensions open.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleShape(pub Vec<usize>);

/// Largest accepted sample dimension and rank: beyond these it is a typo, not a model.
const MAX_DIM: usize = 1 << 16;
const MAX_RANK: usize = 8;

impl FromStr for SampleShape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let dims: Vec<usize> = s
            .split('x')
            .map(|d| {
                d.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&d| (1..=MAX_DIM).contains(&d))
                    .ok_or_else(|| {
                        format!(
                            "'{s}': each dimension must be a whole number from 1 to {MAX_DIM}, \
                             as in 3x48x192"
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        if dims.len() > MAX_RANK {
            return Err(format!("'{s}': at most {MAX_RANK} dimensions"));
        }
        Ok(SampleShape(dims))
    }
}

/// `--input-shape`, shared by every command that loads a model.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct InputShapeArg {
    /// The shape of one input sample, CxHxW (e.g. 3x48x192), for a model whose input leaves
    /// dimensions other than the batch open. Shapes are inferred from it; the written model
    /// keeps its batch open. Commands that read data take it from the data when not given.
    #[arg(long, value_name = "CxHxW")]
    pub input_shape: Option<SampleShape>,
}

/// Reads, decodes and imports an ONNX file, fixing its sample shape when one is given; records
/// the file and its external data files in `inputs`.
pub fn load(path: &Path, input_shape: &InputShapeArg, inputs: &mut Inputs) -> Result<Graph> {
    let (proto, data_files) = pare_onnx::read_model_and_data_files(path)?;
    inputs.add("the input model", path);
    for file in data_files {
        inputs.add(format!("external data of {}", path.display()), &file);
    }
    let mut graph = pare_ir::import(&proto)
        .with_context(|| format!("{}: cannot import the model", path.display()))?;
    if let Some(SampleShape(dims)) = &input_shape.input_shape {
        pare_ir::fix_input_shape(&mut graph, dims)
            .with_context(|| format!("{}: --input-shape", path.display()))?;
    }
    Ok(graph)
}

/// When `graph` (read from `path`) still leaves its sample shape open (`--input-shape` was not
/// given), fixes it to the dataset's image shape `image` (from `data`).
pub fn fix_open_input(
    graph: &mut Graph,
    path: &Path,
    data: &Path,
    image: [usize; 3],
) -> Result<()> {
    if pare_ir::input_shape_is_open(graph) {
        if image.contains(&0) {
            bail!(
                "{}: the model's input shape is open and {} holds no images to take it from; \
                 pass --input-shape",
                path.display(),
                data.display()
            );
        }
        pare_ir::fix_input_shape(graph, &image).with_context(|| {
            format!(
                "{}: its open input shape, taken from the images of {}",
                path.display(),
                data.display()
            )
        })?;
    }
    Ok(())
}
