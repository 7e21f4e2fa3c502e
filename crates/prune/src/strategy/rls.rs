//! RLS prune-and-recover (docs/methods/rls.md): train with RLS, prune a ratio of every group by
//! OBS saliency from P, retrain until validation recovers, prune again.

use super::run::{PruningStrategy, Run};
use crate::groups::analyze;
use crate::PruneError;
use pare_ir::Graph;
use pare_train::optim::Rls;

/// `Strategy::Rls`.
pub(crate) struct PruneAndRecover;

impl PruningStrategy for PruneAndRecover {
    fn run(&self, graph: &mut Graph, run: &mut Run) -> Result<(), PruneError> {
        let warmup = run.steps_in(run.config.warmup_epochs);
        let check_every = run.steps_in(run.config.check_every_epochs);
        let mut rls = Rls::new(run.config.rls.clone(), graph);
        run.train(graph, &mut rls, warmup)?;
        run.prune_and_recover(graph, &mut rls, check_every, |graph, run, rls| {
            prune_event(graph, run, rls, check_every)
        })
    }
}

/// One RLS pruning event (docs/methods/rls.md, "Event size"), after which the step restarts small
/// (docs/methods/rls.md, "Schedule"); false when nothing could be removed.
fn prune_event(
    graph: &mut Graph,
    run: &mut Run,
    rls: &mut Rls,
    restart: usize,
) -> Result<bool, PruneError> {
    let groups = analyze(graph);
    let plan = run.choose(graph, &groups, Some(rls), Some(run.config.ratio))?;
    if plan.drop.values().all(Vec::is_empty) {
        return Ok(false);
    }
    run.prune(graph, &groups, plan, Some(rls))?;
    run.restart_schedule(restart);
    Ok(true)
}
