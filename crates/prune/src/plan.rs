//! Pruning plans and the surgery that applies them, like tract's ModelPatch: a plan names, per
//! group, the channels to drop; applying it slices every tensor in the group, fixes depthwise
//! `group` attributes and flattening Reshape targets, and infers shapes again.

use crate::groups::{ChannelGroups, GroupId, Segment};
use crate::PruneError;
use ndarray::{ArrayD, Axis};
use pare_ir::{Graph, Op, Tensor, ValueSource};
use pare_train::optim::Masks;
use std::collections::BTreeMap;

/// Per group, the channel indices to drop.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruningPlan {
    pub drop: BTreeMap<GroupId, Vec<usize>>,
}

impl PruningPlan {
    /// Drops `channels` of `group` (added to what the plan already drops).
    pub fn drop_channels(&mut self, group: GroupId, channels: impl IntoIterator<Item = usize>) {
        let list = self.drop.entry(group).or_default();
        list.extend(channels);
        list.sort_unstable();
        list.dedup();
    }

    /// The channels kept of a group with `channels` channels.
    pub fn kept(&self, group: GroupId, channels: usize) -> Vec<usize> {
        let dropped = self.drop.get(&group).map(Vec::as_slice).unwrap_or(&[]);
        (0..channels)
            .filter(|c| dropped.binary_search(c).is_err())
            .collect()
    }

    /// Refuses a plan that drops channels of a frozen group, out of range, or all of a group.
    pub(crate) fn check(&self, groups: &ChannelGroups) -> Result<(), PruneError> {
        for (&id, list) in &self.drop {
            let g = groups.group(id);
            if !g.frozen.is_empty() && !list.is_empty() {
                return Err(PruneError::Frozen(id, g.frozen.join("; ")));
            }
            if let Some(&index) = list.iter().find(|&&c| c >= g.channels) {
                return Err(PruneError::OutOfRange {
                    group: id,
                    channels: g.channels,
                    index,
                });
            }
            if list.len() >= g.channels && g.channels > 0 {
                return Err(PruneError::Empty(id));
            }
        }
        Ok(())
    }

    /// Indices kept along an axis laid out as `segments`, or None if nothing is dropped there.
    pub(crate) fn kept_indices(
        &self,
        groups: &ChannelGroups,
        segments: &[Segment],
    ) -> Option<Vec<usize>> {
        let touched = segments.iter().any(|s| {
            self.drop
                .get(&groups.group_of_space(s.space))
                .is_some_and(|d| !d.is_empty())
        });
        if !touched {
            return None;
        }
        let mut out = Vec::new();
        let mut offset = 0;
        for s in segments {
            for c in self.kept(groups.group_of_space(s.space), s.len) {
                out.extend(offset + c * s.block..offset + (c + 1) * s.block);
            }
            offset += s.len * s.block;
        }
        Some(out)
    }

    /// Applies the plan to `graph` (which `groups` was computed from).
    pub fn apply(&self, graph: &mut Graph, groups: &ChannelGroups) -> Result<(), PruneError> {
        self.check(groups)?;
        for slice in &groups.slices {
            let Some(keep) = self.kept_indices(groups, &slice.segments) else {
                continue;
            };
            if let ValueSource::Initializer(Tensor::F32(t)) =
                &mut graph.value_mut(slice.tensor).source
            {
                *t = select(t, slice.axis, &keep);
            }
        }
        for &(node, group) in &groups.depthwise {
            let kept = self.kept(group, groups.group(group).channels).len();
            if let Op::Conv(c) = &mut graph.nodes[node.0 as usize].op {
                c.group = kept;
            }
        }
        for (node, segments) in &groups.reshapes {
            let Some(keep) = self.kept_indices(groups, segments) else {
                continue;
            };
            let Some(Some(target)) = graph.node(*node).inputs.get(1).copied() else {
                continue;
            };
            if let ValueSource::Initializer(Tensor::I64(t)) = &mut graph.value_mut(target).source {
                // [N, features] with a literal feature count: write the new count.
                if t.len() == 2 && t[[1]] > 0 {
                    t[[1]] = keep.len() as i64;
                }
            }
        }
        pare_ir::infer_shapes(graph)?;
        Ok(())
    }

    /// Applies the plan to `graph` and slices `masks` exactly like the tensors they mask, so
    /// every mask keeps its tensor's shape and its entries stay on the same connections.
    pub fn apply_with_masks(
        &self,
        graph: &mut Graph,
        groups: &ChannelGroups,
        masks: &mut Masks,
    ) -> Result<(), PruneError> {
        self.apply(graph, groups)?;
        for slice in &groups.slices {
            if let (Some(keep), Some(mask)) = (
                self.kept_indices(groups, &slice.segments),
                masks.get_mut(slice.tensor),
            ) {
                *mask = select(mask, slice.axis, &keep);
            }
        }
        Ok(())
    }
}

/// The kept indices along `axis`, in standard layout (the optimisers and export read
/// initializers as contiguous slices).
fn select(t: &ArrayD<f32>, axis: usize, keep: &[usize]) -> ArrayD<f32> {
    t.select(Axis(axis), keep).as_standard_layout().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::analyze;
    use pare_ir::ValueId;
    use pare_onnx::{attr, GraphBuilder};

    fn wave(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.7123).sin()).collect()
    }

    /// x[1,5,5] → Conv(4, 3×3, bias) → Relu → Flatten → Gemm(36→3, no transB, bias).
    fn graph() -> Graph {
        let mut b = GraphBuilder::new("masks", 17);
        b.input("x", [1i64, 1, 5, 5]);
        b.initializer(attr::tensor_f32("w", &[4, 1, 3, 3], wave(36, 1.0)));
        b.initializer(attr::tensor_f32("cb", &[4], wave(4, 2.0)));
        b.initializer(attr::tensor_f32("fc", &[36, 3], wave(108, 3.0)));
        b.initializer(attr::tensor_f32("fcb", &[3], wave(3, 4.0)));
        b.node("Conv", &["x", "w", "cb"], &["c"], vec![]);
        b.node("Relu", &["c"], &["r"], vec![]);
        b.node("Flatten", &["r"], &["f"], vec![]);
        b.node("Gemm", &["f", "fc", "fcb"], &["y"], vec![]);
        b.output("y", [1i64, 3]);
        pare_ir::import(&b.build()).unwrap()
    }

    fn tensor(graph: &Graph, v: ValueId) -> ArrayD<f32> {
        match graph.value(v).initializer() {
            Some(Tensor::F32(a)) => a.clone(),
            _ => unreachable!("a float initializer"),
        }
    }

    #[test]
    fn masks_are_sliced_like_the_tensors_they_mask() {
        let mut graph = graph();
        // Each "mask" a copy of its tensor: sliced alike, they stay equal.
        let mut masks = Masks::default();
        for v in graph.value_ids() {
            if matches!(graph.value(v).initializer(), Some(Tensor::F32(_))) {
                masks.insert(v, tensor(&graph, v));
            }
        }
        let groups = analyze(&graph);
        let conv = groups.groups.iter().find(|g| g.prunable()).unwrap();
        let mut plan = PruningPlan::default();
        plan.drop_channels(conv.id, [1, 3]);
        plan.apply_with_masks(&mut graph, &groups, &mut masks)
            .unwrap();
        let mut shapes = Vec::new();
        for (v, mask) in masks.iter() {
            assert_eq!(mask, &tensor(&graph, v));
            shapes.push(mask.shape().to_vec());
        }
        assert_eq!(
            shapes,
            [vec![2, 1, 3, 3], vec![2], vec![18, 3], vec![3]],
            "conv filters, conv bias, Gemm rows through Flatten, Gemm bias"
        );
    }
}
