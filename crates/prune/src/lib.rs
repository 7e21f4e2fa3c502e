//! Structured pruning over pare's IR: channel spaces united into groups, pruning plans (per
//! group, the channels to drop) and the surgery that applies a plan to a graph.
//!
//! Groups are found from the graph alone and frozen, never guessed, where a channel's meaning
//! cannot be followed (graph outputs, Opaque ops, Reshapes that hard-code channels, reductions
//! over channels). `criteria` scores channels, `selection` turns scores into plans, and
//! `strategy` runs the training loops that prune and recover.

#![forbid(unsafe_code)]

pub mod analysis;
mod bias;
pub mod criteria;
pub mod datafree;
mod error;
pub mod evolution;
mod groups;
pub mod latency;
mod plan;
pub mod relief;
pub mod selection;
pub mod strategy;
mod summary;

pub use criteria::Criterion;
pub use datafree::{
    compensate_removed, plan_without_data, prune_without_data, synthetic_inputs, Compensation,
    DataFreeOutcome, SyntheticSource,
};
pub use error::PruneError;
pub use groups::{analyze, ChannelGroups, Group, GroupId, Segment, Slice, SliceKind};
pub use latency::{group_key, widths_after, LatencyTable};
pub use plan::PruningPlan;
pub use selection::{Cost, Ranking, Target};
pub use strategy::{
    compress, Caps, CompressConfig, EsConfig, EvalBudget, Event, EventSize, Front, FrontGroup,
    FrontIndividual, HistoryEntry, Objective, Outcome, Pick, Progress, RecoveryReference, Role,
    Strategy,
};
pub use summary::{layer_sparsity, layer_widths, nonzero_params, LayerSparsity, LayerWidth};
