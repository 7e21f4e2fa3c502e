//! Units relief leaves without a purpose, removed structurally: a channel every consumer reads
//! only through zero weights (all its outgoing connections masked), or whose value every consumer
//! reads as exactly zero on the whole pruning set (a dead unit). Removing one is a channel prune
//! like any other, so its group shrinks and MACs really fall; removals cascade, as a filter gone
//! may leave the channels it alone read unread.

use super::sweep;
use crate::groups::{analyze, ChannelGroups, SliceKind};
use crate::plan::PruningPlan;
use crate::PruneError;
use ndarray::{ArrayD, Axis};
use pare_data::Dataset;
use pare_ir::{Graph, NodeId, Op, Tensor, ValueId};
use pare_train::optim::Masks;
use std::collections::BTreeMap;

/// The data input a consumer reads its channels from, and that input's feature axis, for the
/// ops whose weight slices read channels; None where the features cannot be followed.
fn read_input(graph: &Graph, node: NodeId, rank: usize) -> Option<(ValueId, usize)> {
    let n = graph.node(node);
    let axis = match &n.op {
        Op::Conv(_) => 1,
        Op::Gemm(g) if !g.trans_a => 1,
        Op::MatMul => rank.checked_sub(1)?,
        _ => return None,
    };
    Some((n.inputs.first().copied().flatten()?, axis))
}

/// Per consumer node, which input features were nonzero on some sample of `data`.
fn features_read(
    graph: &Graph,
    groups: &ChannelGroups,
    data: &Dataset,
    batch_size: usize,
) -> Result<BTreeMap<NodeId, Vec<bool>>, PruneError> {
    let consumers: Vec<NodeId> = groups
        .slices
        .iter()
        .filter(|s| s.kind == SliceKind::Consumer)
        .map(|s| s.node)
        .collect();
    let mut read: BTreeMap<NodeId, Vec<bool>> = BTreeMap::new();
    sweep(graph, data, batch_size, |tape| {
        for &node in &consumers {
            let rank = graph
                .node(node)
                .inputs
                .first()
                .copied()
                .flatten()
                .and_then(|v| tape.value(v))
                .map_or(0, |x| x.ndim());
            let Some(x) = read_input(graph, node, rank).and_then(|(v, _)| tape.value(v)) else {
                continue;
            };
            let (_, axis) = read_input(graph, node, rank).expect("found above");
            let len = x.len_of(Axis(axis));
            let seen = read.entry(node).or_insert_with(|| vec![false; len]);
            for (f, lane) in x.axis_iter(Axis(axis)).enumerate() {
                seen[f] = seen[f] || lane.iter().any(|&v| v != 0.0);
            }
        }
        Ok(())
    })?;
    Ok(read)
}

fn f32_tensor(graph: &Graph, v: ValueId) -> Option<&ArrayD<f32>> {
    match graph.value(v).initializer()? {
        Tensor::F32(a) => Some(a),
        _ => None,
    }
}

/// Per prunable group, the channels no consumer reads: through weights that are all exactly zero
/// (masked), or, when `data` is given, as a value that was zero on every sample of it. Every
/// group keeps at least one channel (its first), as surgery never empties a group.
pub fn dead_or_unread(
    graph: &Graph,
    groups: &ChannelGroups,
    data: Option<(&Dataset, usize)>,
) -> Result<PruningPlan, PruneError> {
    let read = match data {
        Some((data, batch_size)) => Some(features_read(graph, groups, data, batch_size)?),
        None => None,
    };
    // Per group, per channel: (consumers reading it, consumers reading nothing there).
    let mut tally: BTreeMap<_, Vec<(usize, usize)>> = BTreeMap::new();
    for slice in groups
        .slices
        .iter()
        .filter(|s| s.kind == SliceKind::Consumer)
    {
        let weight = f32_tensor(graph, slice.tensor);
        let seen = read.as_ref().and_then(|r| r.get(&slice.node));
        let mut offset = 0;
        for segment in &slice.segments {
            let g = groups.group_of_space(segment.space);
            let counts = tally
                .entry(g)
                .or_insert_with(|| vec![(0, 0); groups.group(g).channels]);
            for (c, count) in counts.iter_mut().enumerate().take(segment.len) {
                let features = offset + c * segment.block..offset + (c + 1) * segment.block;
                let masked = weight.is_some_and(|w| {
                    features
                        .clone()
                        .all(|f| w.index_axis(Axis(slice.axis), f).iter().all(|&w| w == 0.0))
                });
                let dead = seen
                    .is_some_and(|s| features.clone().all(|f| !s.get(f).copied().unwrap_or(true)));
                count.0 += 1;
                count.1 += (masked || dead) as usize;
            }
            offset += segment.len * segment.block;
        }
    }
    let mut plan = PruningPlan::default();
    for (g, counts) in tally {
        if !groups.group(g).prunable() {
            continue;
        }
        let unused: Vec<usize> = (0..counts.len())
            .filter(|&c| counts[c].0 > 0 && counts[c].0 == counts[c].1)
            .collect();
        let keep_first = unused.len() == counts.len();
        plan.drop_channels(g, unused.into_iter().skip(keep_first as usize));
    }
    plan.drop.retain(|_, d| !d.is_empty());
    Ok(plan)
}

/// Removes dead and unread units until none is left, slicing `masks` along with the weights;
/// the dead check reads `data` when given. Returns the plans applied, each on the groups of the
/// graph it was applied to.
pub fn remove_units(
    graph: &mut Graph,
    masks: &mut Masks,
    data: Option<(&Dataset, usize)>,
) -> Result<Vec<PruningPlan>, PruneError> {
    let mut plans = Vec::new();
    loop {
        let groups = analyze(graph);
        let plan = dead_or_unread(graph, &groups, data)?;
        if plan.drop.is_empty() {
            return Ok(plans);
        }
        plan.apply_with_masks(graph, &groups, masks)?;
        plans.push(plan);
    }
}
