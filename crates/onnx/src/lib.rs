//! The ONNX file format: prost types generated from `proto/onnx.proto`, decoding and encoding,
//! external data files, and atomic writes.
//!
//! This crate knows bytes and messages only. It does not interpret operators or shapes; that is
//! the IR's job.

#![forbid(unsafe_code)]

mod builder;
mod error;
mod external;
mod file;

/// The generated ONNX messages (`cargo xtask gen-proto` regenerates them).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!("generated/onnx.rs");
}

pub use builder::{attr, DimSpec, GraphBuilder};
pub use error::OnnxError;
pub use external::{inline_external_data, tensor_byte_len};
pub use file::{
    decode, encode, read_model, read_model_and_data_files, remove_unfinished_writes, write_atomic,
    write_model,
};
