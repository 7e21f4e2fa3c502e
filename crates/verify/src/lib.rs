//! Verification with tract: load an ONNX file as written on disk (never pare's own IR), with its
//! input shape fixed and optimised, then measure accuracy, latency and output parity, and compare
//! a model before and after a change.
//!
//! This crate only runs models; it does not change them. It fits the data to the model (input
//! shape, labels) and holds the regression gate on test accuracy; the caller decides what to do
//! when a model fails it. Of pare's IR it reads only the declared input shape, from the import
//! the caller has made anyway.

// deny rather than forbid: ndarray's `s!` expands to an `allow(unsafe_code)` of its own.
#![deny(unsafe_code)]

mod accuracy;
mod clock;
mod compare;
mod error;
mod input;
mod latency;
mod model;
mod profile;

pub use accuracy::{accuracy, Accuracy};
pub use clock::Clock;
pub use compare::{compare, compare_latency, max_abs_diff, Comparison, Subject, Timings};
pub use error::VerifyError;
pub use input::input_shape_for;
pub use latency::{latency, latency_interleaved, latency_pair, Latency};
pub use model::{Source, TractModel};
pub use profile::{layer_times, NodeTime};
