//! Structured pruning over pare's IR: channel spaces united into groups, pruning plans (per
//! group, the channels to drop) and the surgery that applies a plan to a graph.
//!
//! Groups are found from the graph alone and frozen, never guessed, where a channel's meaning
//! cannot be followed (graph outputs, Opaque ops, Reshapes that hard-code channels, reductions
//! over channels). Scoring channels and choosing what to drop are strategies' work, not this
//! module's.

mod groups;
mod plan;

pub use groups::{analyze, ChannelGroups, Group, GroupId, Segment, Slice, SliceKind};
pub use plan::{PlanError, PruningPlan};
