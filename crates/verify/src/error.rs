//! The one error type of the crate.

use std::path::PathBuf;

/// What can go wrong fitting data to a model, loading it in tract or running it.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: tract cannot load the model: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("{path}: tract failed to run the model: {reason}")]
    Run { path: PathBuf, reason: String },
    #[error("{path}: the model outputs shape {shape:?}; expected [batch, classes] logits")]
    OutputShape { path: PathBuf, shape: Vec<usize> },
    #[error("{path}: the model has no input")]
    NoInput { path: PathBuf },
    #[error("{path}: input '{input}' has no declared shape")]
    UndeclaredInput { path: PathBuf, input: String },
    #[error("{path}: input '{input}' has shape {shape}; pare handles image models with [batch, C, H, W] input")]
    InputRank {
        path: PathBuf,
        input: String,
        shape: pare_ir::Shape,
    },
    #[error("{data}: images are {images:?} ([C, H, W]) but the model {model} takes {takes:?}; give a dataset of the model's input size")]
    ImageShape {
        data: PathBuf,
        images: [usize; 3],
        model: PathBuf,
        takes: Vec<usize>,
    },
    #[error("{data}: the {split} split has no images; give a dataset with {split} images")]
    EmptySplit { data: PathBuf, split: String },
    #[error("{data}: {split} sample {index} has label {label}, but the model {model} scores only {classes} classes (0..{})", .classes.saturating_sub(1))]
    Label {
        data: PathBuf,
        split: String,
        index: usize,
        label: usize,
        model: PathBuf,
        classes: usize,
    },
}
