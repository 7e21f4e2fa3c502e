//! Pairs of groups joined by a layer (a Conv, Gemm or MatMul that reads one and writes the
//! other): such a layer's work is a product of the two widths, so narrowing both saves less than
//! the two savings added. Each pair is measured once, both groups at their floors, and the
//! difference from the two groups' own changes is its cross term.

use pare_ir::NodeCost;
use pare_prune::{ChannelGroups, GroupId, SliceKind};
use std::collections::{BTreeMap, BTreeSet};

/// The pairs (as indices into `ids`, the lower first) that some layer joins, the pairs whose
/// joining layers carry the most MACs first.
pub(crate) fn joined(
    groups: &ChannelGroups,
    ids: &[GroupId],
    costs: &[NodeCost],
) -> Vec<(usize, usize)> {
    let index: BTreeMap<GroupId, usize> = ids.iter().enumerate().map(|(i, &g)| (g, i)).collect();
    // Per layer: the candidate groups it reads and those it writes.
    let mut layers: BTreeMap<usize, (BTreeSet<usize>, BTreeSet<usize>)> = BTreeMap::new();
    for slice in &groups.slices {
        let layer = layers.entry(slice.node.0 as usize).or_default();
        for s in &slice.segments {
            let Some(&i) = index.get(&groups.group_of_space(s.space)) else {
                continue;
            };
            match slice.kind {
                SliceKind::Consumer => layer.0.insert(i),
                SliceKind::Producer => layer.1.insert(i),
                SliceKind::PerChannel => false,
            };
        }
    }
    let mut macs: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    for (node, (reads, writes)) in layers {
        let layer_macs = costs.get(node).map_or(0, |c| c.macs);
        for &a in &reads {
            for &b in writes.iter().filter(|&&b| b != a) {
                *macs.entry((a.min(b), a.max(b))).or_default() += layer_macs;
            }
        }
    }
    let mut pairs: Vec<((usize, usize), u64)> = macs.into_iter().collect();
    pairs.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    pairs.into_iter().map(|(pair, _)| pair).collect()
}
