//! Datasets for pare: reading them from disk into images and labels, scaling, and batching.
//!
//! This crate knows nothing of models or ONNX. It hands out `[N, C, H, W]` float32 images and class
//! labels; checking that they fit a model is the caller's job.

mod dataset;
mod error;
mod idx;

pub use dataset::{Dataset, Splits};
pub use error::DataError;
pub use idx::{read_idx, IdxArray};

use std::path::Path;

/// Loads the train and test splits from a dataset folder, recognising its format from the files
/// in it. Pixel values are scaled to 0..1 (divided by 255).
pub fn load_dir(dir: &Path) -> Result<Splits, DataError> {
    if !dir.is_dir() {
        return Err(DataError::NotAFolder { path: dir.into() });
    }
    idx::load_mnist_dir(dir)
}
