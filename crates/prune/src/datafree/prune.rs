//! Pruning without data: score channels by a criterion that reads only the weights, prune the
//! fewest that meet the target, and compensate the removed channels in their consumers' biases.
//! No training follows; nothing here needs an image.

use super::{compensate_removed, Compensation};
use crate::criteria::{self, Criterion, Evidence};
use crate::groups::{analyze, ChannelGroups};
use crate::plan::PruningPlan;
use crate::selection::{Cost, DropOrder, Meter};
use crate::strategy::CompressConfig;
use crate::PruneError;
use pare_ir::Graph;

/// What a prune without data did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DataFreeOutcome {
    pub original: Cost,
    pub compressed: Cost,
    /// Channels removed, over all groups.
    pub channels: usize,
    /// Whether the pruned network meets the target (it may not when every group is at its floor).
    pub target_met: bool,
    pub compensation: Compensation,
}

impl Criterion {
    /// Whether the criterion scores from the weights alone.
    pub fn needs_data(self) -> bool {
        match self {
            Criterion::Rls | Criterion::Taylor => true,
            Criterion::L1 | Criterion::L2 | Criterion::BnScale | Criterion::Random => false,
        }
    }
}

/// Prunes `graph` to `config.target` by `config.criterion` (ranking, `min_keep` and `round_to`
/// as for every strategy), then folds what the BatchNorms say of each removed channel into its
/// consumers' biases (docs/methods/datafree.md). The graph is unchanged on error.
pub fn prune_without_data(
    graph: &mut Graph,
    config: &CompressConfig,
) -> Result<DataFreeOutcome, PruneError> {
    let mut groups = analyze(graph);
    let (plan, target_met) = plan_without_data(graph, &groups, config)?;
    let mut pruned = graph.clone();
    let compensation = compensate_removed(&mut pruned, &mut groups, &plan)?;
    plan.apply(&mut pruned, &groups)?;
    let original = Cost::of(graph);
    *graph = pruned;
    Ok(DataFreeOutcome {
        original,
        compressed: Cost::of(graph),
        channels: plan.drop.values().map(Vec::len).sum(),
        target_met,
        compensation,
    })
}

/// The plan a prune without data makes of `graph` (analysed as `groups`): the fewest channels,
/// lowest `config.criterion` scores first, that meet `config.target`, and whether they do. The
/// one-shot choice every strategy starts from, so a latency target is probed with it.
pub fn plan_without_data(
    graph: &Graph,
    groups: &ChannelGroups,
    config: &CompressConfig,
) -> Result<(PruningPlan, bool), PruneError> {
    config.check()?;
    let target = config.target.ok_or(PruneError::NoTarget)?;
    if config.criterion.needs_data() {
        return Err(PruneError::CriterionNeeds(
            config.criterion,
            "data; without --data use l2, l1, bn-scale or random",
        ));
    }
    let meter = Meter::new(graph, config.latency.as_ref());
    let evidence = Evidence {
        rls: None,
        gradients: None,
        seed: config.seed,
    };
    let scores = criteria::score(config.criterion, graph, groups, &evidence)?;
    if scores.is_empty() {
        return Err(PruneError::NothingToPrune);
    }
    let floor = |g| config.kept_floor(groups.group(g).channels);
    let widths = meter.width_rule(
        Some(target),
        graph,
        groups,
        config.round_to,
        config.snap_widths,
    );
    let order = DropOrder::new(&scores, config.ranking, |_, w| w, floor, widths);
    order.shortest_within(graph, groups, order.len(), |pruned| {
        meter.is_met(target, pruned)
    })
}
