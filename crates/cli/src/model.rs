//! Loading a model file into the IR, with errors that name the file.

use anyhow::{bail, Context, Result};
use pare_data::Dataset;
use pare_ir::{Dim, Graph};
use pare_verify::{Accuracy, TractModel};
use std::path::Path;

/// Reads, decodes and imports an ONNX file.
pub fn load(path: &Path) -> Result<Graph> {
    let proto = pare_onnx::read_model(path)?;
    pare_ir::import(&proto).with_context(|| format!("{}: cannot import the model", path.display()))
}

/// The `[batch, C, H, W]` shape to run the model with: the declared input shape, with the batch
/// and any open image dimension taken from `batch` and `image` (the dataset's `[C, H, W]`).
pub fn input_shape(
    graph: &Graph,
    path: &Path,
    batch: usize,
    image: Option<[usize; 3]>,
) -> Result<Vec<usize>> {
    let Some(&input) = graph.inputs.first() else {
        bail!("{}: the model has no input", path.display());
    };
    let value = graph.value(input);
    let Some(shape) = &value.shape else {
        bail!(
            "{}: input '{}' has no declared shape",
            path.display(),
            value.name
        );
    };
    if shape.rank() != 4 {
        bail!(
            "{}: input '{}' has shape {shape}; pare handles image models with [batch, C, H, W] input",
            path.display(),
            value.name
        );
    }
    let mut dims = vec![batch];
    for (i, d) in shape.0[1..].iter().enumerate() {
        dims.push(match (d, image) {
            (Dim::Known(n), _) => *n,
            (Dim::Sym(_), Some(img)) => img[i],
            (Dim::Sym(s), None) => bail!(
                "{}: input '{}' leaves dimension {} open ({s}); give data so its size is known",
                path.display(),
                value.name,
                i + 1
            ),
        });
    }
    Ok(dims)
}

/// The model's input shape at `batch`, checked against the dataset's image shape.
pub fn input_shape_for(
    graph: &Graph,
    model: &Path,
    data: &Path,
    images: &Dataset,
    batch: usize,
) -> Result<Vec<usize>> {
    let image = images.image_shape();
    let shape = input_shape(graph, model, batch, Some(image))?;
    if shape[1..] != image {
        bail!(
            "{}: images are {:?} ([C, H, W]) but the model {} takes {:?}; give a dataset of the model's input size",
            data.display(),
            image,
            model.display(),
            &shape[1..]
        );
    }
    Ok(shape)
}

/// Refuses labels the model cannot score, naming the sample.
pub fn check_labels(
    data: &Path,
    split: &str,
    set: &Dataset,
    model: &Path,
    classes: usize,
) -> Result<()> {
    if let Some((index, label)) = set.labels.iter().enumerate().find(|(_, &l)| l >= classes) {
        bail!(
            "{}: {split} sample {index} has label {label}, but the model {} scores only {classes} classes (0..{})",
            data.display(),
            model.display(),
            classes.saturating_sub(1)
        );
    }
    Ok(())
}

/// tract's top-1 accuracy of a model file on `set`, run `shape[0]` images at a time.
pub fn tract_accuracy(
    model: &Path,
    shape: &[usize],
    data: &Path,
    split: &str,
    set: &Dataset,
) -> Result<Accuracy> {
    let tract = TractModel::load(model, shape)?;
    check_labels(data, split, set, model, tract.class_count()?)?;
    Ok(pare_verify::accuracy(&tract, set)?)
}
