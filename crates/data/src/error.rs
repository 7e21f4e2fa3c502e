//! The error type of the data crate.
//!
//! Only the type lives here: the messages are written where the problem is found, so this file
//! must not grow format-specific logic.

use std::path::PathBuf;

/// What can go wrong reading or preparing a dataset. Every variant about a file names it and,
/// where one is at fault, the record or sample.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: neither a dataset folder nor a .npz file")]
    NotADataset { path: PathBuf },
    #[error("{dir}: no dataset found; looked for {expected}")]
    UnknownLayout { dir: PathBuf, expected: String },
    #[error("{dir}: looks like {format} but {missing} is missing")]
    Incomplete {
        dir: PathBuf,
        format: &'static str,
        missing: String,
    },
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
    /// A preprocessing setting is out of range or does not fit the data; `problem` names the file
    /// or split at fault, if any.
    #[error("{setting}: {problem}")]
    Preprocess {
        setting: crate::preprocess::Setting,
        problem: String,
    },
    #[error(
        "{path}: holds {count} images without labels; this command needs labelled data \
             (train/<class>/ and test/<class>/ folders, or a dataset with labels). `compress` \
             can train from unlabeled images by distilling from the original model"
    )]
    Unlabeled { path: PathBuf, count: usize },
    /// A caller's argument does not fit the data (no file is involved).
    #[error("{0}")]
    BadArgument(String),
}
