//! One-shot pruning: prune straight to the target with the chosen criterion, then fine-tune for
//! the whole budget.

use super::config::CompressConfig;
use super::report::Event;
use super::run::{PruningStrategy, Run};
use crate::criteria::Criterion;
use crate::groups::analyze;
use crate::PruneError;
use pare_ir::Graph;
use pare_train::optim::Rls;

/// `Strategy::Oneshot`.
pub(crate) struct Oneshot;

impl PruningStrategy for Oneshot {
    fn check(&self, config: &CompressConfig) -> Result<(), PruneError> {
        match config.target {
            Some(_) => Ok(()),
            None => Err(PruneError::NoTarget),
        }
    }

    fn run(&self, graph: &mut Graph, run: &mut Run) -> Result<(), PruneError> {
        // The rls criterion scores by a P gathered from calibration passes, without training.
        let mut rls = (run.config.criterion == Criterion::Rls)
            .then(|| Rls::new(run.config.rls.clone(), graph));
        if let Some(rls) = rls.as_mut() {
            run.calibrate(graph, Some(rls))?;
        }
        let before = run.validate_and_record(graph, Event::Start)?;
        let groups = analyze(graph);
        let plan = run.choose(graph, &groups, rls.as_ref(), None)?;
        run.prune(graph, &groups, plan, None)?;
        run.finetune(graph, before)
    }
}
