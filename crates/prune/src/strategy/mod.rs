//! Pruning strategies within one budget of training epochs: RLS prune-and-recover
//! (docs/methods/rls.md), one-shot pruning with fine-tuning, and an evolution strategy over channel
//! sets (docs/methods/es.md).
//!
//! `run` is what they share (the budget, the schedule, validation checks, choosing and applying a
//! prune, roll-back); each strategy is one file implementing `PruningStrategy`. The graph is
//! changed in place; on return it is the model to write (for RLS, rolled back to the last
//! recovered network when the last prune did not recover).

mod config;
mod es;
mod front;
mod hierarchical;
mod oneshot;
mod relief;
mod report;
mod rls;
mod run;

pub use config::{
    Caps, CompressConfig, EsConfig, EvalBudget, EventSize, Objective, RecoveryReference, Strategy,
};
pub use front::{Front, FrontGroup, FrontIndividual, Pick, Role};
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
            Strategy::Hierarchical => &hierarchical::Hierarchical,
            Strategy::Es => &es::Evolution,
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
    let mut run = Run::new(graph, &groups, train, val, config, on_progress)?;
    if config.caps == Caps::Analysis {
        run.effective_filters(graph, &groups)?;
    }
    strategy.run(graph, &mut run)?;
    Ok(run.outcome(graph))
}
