//! Names that outlive one analysis: a group's key (its first activation), a model's cache key
//! (a hash of its encoded bytes), and the widths of a graph's groups under those keys.

use pare_ir::Graph;
use pare_prune::{ChannelGroups, GroupId, PruningPlan};
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};

/// A group's name across analyses: the name of its first activation, or of the first tensor it
/// slices. Group ids are renumbered after surgery; these names are not.
pub fn group_key(graph: &Graph, groups: &ChannelGroups, id: GroupId) -> Option<String> {
    Some(graph.value(groups.key(id)?).name.clone())
}

/// The cache key of an encoded model: std's `DefaultHasher` (SipHash-1-3, fixed keys) over its
/// bytes, and their count. A Rust release may change the hash; a stale key only means measuring
/// again.
pub fn cache_key(bytes: &[u8]) -> String {
    let mut hasher = DefaultHasher::new();
    hasher.write(bytes);
    format!("{:016x}-{}", hasher.finish(), bytes.len())
}

/// The width of every prunable group of `graph` (analysed as `groups`) once `plan` is applied,
/// by `group_key`: what `LatencyModel::predict` takes. An empty plan gives the current widths.
pub fn widths_after(
    graph: &Graph,
    groups: &ChannelGroups,
    plan: &PruningPlan,
) -> BTreeMap<String, usize> {
    groups
        .groups
        .iter()
        .filter(|g| g.prunable())
        .filter_map(|g| {
            let key = group_key(graph, groups, g.id)?;
            Some((key, plan.kept(g.id, g.channels).len()))
        })
        .collect()
}
