//! The numeric pieces of pruning without data (docs/methods/datafree.md): bias compensation for
//! removed channels from what the BatchNorms before them say about their values
//! (`compensate.rs`, with the trace of a channel back to its BatchNorm in `trace.rs`), and
//! synthetic input images fitted to the first BatchNorm (`synthetic.rs`); and the prune itself
//! (`prune.rs`), by a criterion that reads only the weights.

mod compensate;
mod prune;
mod synthetic;
mod trace;

#[cfg(test)]
mod tests;

pub use compensate::{compensate_removed, Compensation};
pub use prune::{plan_without_data, prune_without_data, DataFreeOutcome};
pub use synthetic::{synthetic_inputs, SyntheticSource, MAX_SYNTHETIC_ELEMENTS};

use pare_kernels::rng::SplitMix64;

/// A standard normal draw (Box–Muller, one of the pair), from two uniforms of `rng`.
fn standard_normal(rng: &mut SplitMix64) -> f64 {
    // 1 − u lies in (0, 1], so the logarithm is finite.
    let radius = (-2.0 * (1.0 - rng.unit_f64()).ln()).sqrt();
    radius * (2.0 * std::f64::consts::PI * rng.unit_f64()).cos()
}
