//! The error type of the pruning crate.

use crate::criteria::Criterion;
use crate::groups::GroupId;
use pare_train::TrainError;

/// What can stop scoring, a plan's surgery or a compression run. Variants name the group, the
/// criterion or the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("the {0:?} criterion needs {1}")]
    CriterionNeeds(Criterion, &'static str),
    #[error("no prunable group has a BatchNormalization to score by bn-scale (a model with BatchNorm folded into its convolutions has none); use l2 or rls")]
    NoBatchNorm,
    #[error("group {0:?} is frozen: {1}")]
    Frozen(GroupId, String),
    #[error("group {group:?} has {channels} channels; cannot drop channel {index}")]
    OutOfRange {
        group: GroupId,
        channels: usize,
        index: usize,
    },
    #[error("group {0:?} would lose all its channels; a group keeps at least one")]
    Empty(GroupId),
    #[error("after surgery: {0}")]
    Surgery(#[from] pare_ir::IrError),
    #[error("the oneshot strategy needs a target (--target-macs or --target-params)")]
    NoTarget,
    #[error(
        "the model has no prunable channel group (see `compress inspect` for why each is frozen)"
    )]
    NothingToPrune,
    #[error("relief cannot score node '{node}': {problem}")]
    Relief { node: String, problem: String },
    #[error("{0} must be {1}")]
    Setting(&'static str, &'static str),
    #[error("input '{input}' has shape {shape}; synthetic images need an NCHW input whose channels, height and width are known: pass --input-shape CxHxW (e.g. 3x32x32)")]
    SyntheticShape { input: String, shape: String },
    #[error("{count} synthetic images of {per_image} values each exceed the limit of {limit} values; ask for fewer images")]
    SyntheticTooLarge {
        count: usize,
        per_image: usize,
        limit: usize,
    },
}
