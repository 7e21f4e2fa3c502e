//! The error type of the data crate.

use std::path::PathBuf;

/// What can go wrong reading a dataset. Every variant names the file and, where one is at fault,
/// the record.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: not a folder; give the folder that holds the dataset files")]
    NotAFolder { path: PathBuf },
    #[error("{dir}: no dataset found; expected MNIST IDX files ({expected})")]
    UnknownLayout { dir: PathBuf, expected: String },
    #[error("{path}: cannot read: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Malformed { path: PathBuf, problem: String },
    #[error("{images} has {n_images} images but {labels} has {n_labels} labels; they must match")]
    CountMismatch {
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },
}
