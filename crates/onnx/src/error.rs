//! The error type of the ONNX crate.

use std::path::PathBuf;

/// What can go wrong reading or writing an ONNX file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: cannot read: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: the file is empty; expected an ONNX model")]
    Empty { path: PathBuf },
    #[error("{path}: not a valid ONNX model (protobuf decoding failed: {reason}); is the file truncated or of another format?")]
    Decode { path: PathBuf, reason: String },
    #[error("{path}: {bytes} bytes is more than the 2 GiB a protobuf file can hold; is it an ONNX model?")]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error("{path}: the model has no graph")]
    NoGraph { path: PathBuf },
    #[error("{path}: tensor '{tensor}': {problem}")]
    ExternalData {
        path: PathBuf,
        tensor: String,
        problem: String,
    },
    #[error("{path}: cannot write: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}
