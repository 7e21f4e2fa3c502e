//! The input shape to run a model with, worked out from its declared input and the data.

use crate::VerifyError;
use pare_data::Dataset;
use pare_ir::{Dim, Graph};
use std::path::Path;

/// The `[batch, C, H, W]` shape to run `graph` (read from the file `model`) with at `batch`: its
/// declared input shape, with any open image dimension taken from `images` (split of the dataset
/// `data`), which must then match it.
pub fn input_shape_for(
    graph: &Graph,
    model: &Path,
    data: &Path,
    split: &str,
    images: &Dataset,
    batch: usize,
) -> Result<Vec<usize>, VerifyError> {
    if images.is_empty() {
        return Err(VerifyError::EmptySplit {
            data: data.into(),
            split: split.into(),
        });
    }
    let image = images.image_shape();
    let shape = declared_shape(graph, model, batch, image)?;
    if shape[1..] != image {
        return Err(VerifyError::ImageShape {
            data: data.into(),
            images: image,
            model: model.into(),
            takes: shape[1..].to_vec(),
        });
    }
    Ok(shape)
}

/// The declared input shape, with the batch and any open image dimension taken from `batch` and
/// `image` (the dataset's `[C, H, W]`).
fn declared_shape(
    graph: &Graph,
    path: &Path,
    batch: usize,
    image: [usize; 3],
) -> Result<Vec<usize>, VerifyError> {
    let Some(&input) = graph.inputs.first() else {
        return Err(VerifyError::NoInput { path: path.into() });
    };
    let value = graph.value(input);
    let Some(shape) = &value.shape else {
        return Err(VerifyError::UndeclaredInput {
            path: path.into(),
            input: value.name.clone(),
        });
    };
    if shape.rank() != 4 {
        return Err(VerifyError::InputRank {
            path: path.into(),
            input: value.name.clone(),
            shape: shape.clone(),
        });
    }
    let mut dims = vec![batch];
    for (d, &size) in shape.0[1..].iter().zip(&image) {
        dims.push(match d {
            Dim::Known(n) => *n,
            Dim::Sym(_) => size,
        });
    }
    Ok(dims)
}
