//! A latency model of a graph in tract: the unpruned model's batch-1 median T0 and, for each
//! prunable channel group, the whole model's median with only that group narrowed to each width
//! of a ladder (its floor, its full width, multiples of the CPU's vector width, a few between).
//! A plan's latency is predicted as T0 plus each group's change, linear between measured widths,
//! plus a cross term for each pair of groups a layer joins, measured with both at their floors
//! (docs/methods/latency.md).
//!
//! Groups are named by their first activation (`group_key`), which survives surgery; a model is
//! named by a hash of its encoded bytes (`cache_key`). Measuring never changes the caller's graph.

#![forbid(unsafe_code)]

mod calibrate;
mod error;
mod keys;
mod ladder;
mod measure;
mod model;
mod pairs;
mod simd;

pub use calibrate::Calibration;
pub use error::LatencyError;
pub use keys::cache_key;
pub use ladder::{ladder, LadderSettings};
pub use model::LatencyModel;
pub use pare_prune::latency::{
    group_key, widths_after, GroupLatency, LatencyTable, PairLatency, WidthTime,
};
pub use simd::vector_width;
