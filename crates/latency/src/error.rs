//! The one error type of the crate.

use pare_prune::PruneError;
use pare_verify::VerifyError;

/// What can stop a latency measurement. Variants name the input, group or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum LatencyError {
    #[error("the model has no input; latency is measured on one image input")]
    NoInput,
    #[error("input '{input}' has shape {shape}; latency is measured at batch 1 on an [N, C, H, W] input whose C, H and W are known: fix the input shape first (--input-shape CxHxW)")]
    OpenInput { input: String, shape: String },
    #[error("latency setting: {0} must be {1}")]
    Setting(&'static str, &'static str),
    #[error("the model with {groups} channels: {source}")]
    Variant { groups: String, source: PruneError },
    #[error(transparent)]
    Verify(#[from] VerifyError),
}
