//! Pruning strategies within one budget of training epochs: RLS prune-and-recover
//! (docs/methods/rls.md) and one-shot pruning with fine-tuning.
//!
//! `run` is what they share (the budget, the schedule, validation checks, choosing and applying a
//! prune, roll-back); each strategy is one file implementing `PruningStrategy`. The graph is
//! changed in place; on return it is the model to write (for RLS, rolled back to the last
//! recovered network when the last prune did not recover).

mod config;
mod oneshot;
mod relief;
mod report;
mod rls;
mod run;

pub use config::{CompressConfig, EventSize, RecoveryReference, Strategy};
pub use report::{Event, HistoryEntry, Outcome, Progress};

use crate::groups::analyze;
use crate::PruneError;
use pare_data::Dataset;
use pare_ir::Graph;
use run::{PruningStrategy, Run};

impl Strategy {
    /// The implementation of this strategy.
    fn implementation(self) -> &'static dyn PruningStrategy {
        match self {
            Strategy::Rls => &rls::PruneAndRecover,
            Strategy::Oneshot => &oneshot::Oneshot,
            Strategy::Relief => &relief::Relief,
        }
    }
}

/// Runs the configured strategy on `graph` with `train` for training and `val` for recovery
/// checks, calling `on_progress` after every step.
pub fn compress(
    graph: &mut Graph,
    train: &Dataset,
    val: &Dataset,
    config: &CompressConfig,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Outcome, PruneError> {
    let strategy = config.strategy.implementation();
    config.check()?;
    strategy.check(config)?;
    let groups = analyze(graph);
    if !groups.groups.iter().any(|g| g.prunable()) {
        return Err(PruneError::NothingToPrune);
    }
    let mut run = Run::new(graph, &groups, train, val, config, on_progress);
    strategy.run(graph, &mut run)?;
    Ok(run.outcome(graph))
}
