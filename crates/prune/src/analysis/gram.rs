//! Accumulates each group's Gram matrix K_g = Σ_t B_tᵀB_t over calibration passes, where column c
//! of B_t is everything a consumer of the group sees of channel c on batch t: the loss gradient of
//! the consumer weights that read it, or (the activation variant) the activation itself.

use super::GramSource;
use crate::criteria::{channel_ranges, is_weight};
use crate::groups::{ChannelGroups, Group, Slice, SliceKind};
use nalgebra::DMatrix;
use ndarray::{ArrayD, Axis};
use pare_ir::{Graph, ValueId};
use pare_train::{Gradients, Tape};
use std::collections::HashSet;
use std::ops::Range;

/// The slices of `group` whose tensor is a weight that reads its channels: the input axis of
/// every Conv, Gemm and MatMul after it (residual streams, Concat inputs at their offsets,
/// Flatten→Gemm blocks) and depthwise weights, which read one channel each.
pub(crate) fn consumer_weights<'s>(
    graph: &Graph,
    groups: &'s ChannelGroups,
    group: &Group,
) -> Vec<&'s Slice> {
    group
        .slices
        .iter()
        .map(|&i| &groups.slices[i])
        .filter(|s| s.kind != SliceKind::Producer && is_weight(graph, s))
        .collect()
}

/// B for one slice: column c holds the entries of `tensor` along `axis` at channel c's range, in
/// logical order (every range has the same length, so the columns line up).
fn columns(tensor: &ArrayD<f32>, axis: usize, ranges: &[Range<usize>]) -> DMatrix<f64> {
    let parts: Vec<Vec<f64>> = ranges
        .iter()
        .map(|r| {
            tensor
                .slice_axis(Axis(axis), (r.start..r.end).into())
                .iter()
                .map(|&x| x as f64)
                .collect()
        })
        .collect();
    let rows = parts.first().map_or(0, Vec::len);
    DMatrix::from_fn(rows, parts.len(), |r, c| parts[c][r])
}

/// One group's Gram matrix in progress.
pub(crate) struct Gram {
    pub k: DMatrix<f64>,
    /// Whether any consumer contributed: a group nothing reads has no evidence of redundancy.
    pub evidence: bool,
}

impl Gram {
    pub fn new(channels: usize) -> Self {
        Gram {
            k: DMatrix::zeros(channels, channels),
            evidence: false,
        }
    }

    /// Adds one pass's B_tᵀB_t of `group`.
    pub fn add(
        &mut self,
        graph: &Graph,
        groups: &ChannelGroups,
        group: &Group,
        source: GramSource,
        tape: &Tape,
        grads: &Gradients,
    ) {
        let mut seen: HashSet<ValueId> = HashSet::new();
        for slice in consumer_weights(graph, groups, group) {
            let ranges = channel_ranges(groups, slice, group.id);
            match source {
                GramSource::Gradients => {
                    let Some(g) = grads.of(slice.tensor) else {
                        continue;
                    };
                    let b = columns(g, slice.axis, &ranges);
                    if slice.kind == SliceKind::PerChannel {
                        // A depthwise weight reads one channel each: its entries are rows of
                        // their own, so they add to K's diagonal only.
                        for c in 0..b.ncols() {
                            self.k[(c, c)] += b.column(c).norm_squared();
                        }
                    } else {
                        self.k += b.tr_mul(&b);
                    }
                    self.evidence = true;
                }
                GramSource::Activations => {
                    // The activation the consumer reads, channels on axis 1 laid out as the
                    // weight's axis is; each activation counted once however many layers read it.
                    let Some(Some(input)) = graph.node(slice.node).inputs.first().copied() else {
                        continue;
                    };
                    let Some(a) = tape.value(input) else {
                        continue;
                    };
                    let len: usize = slice.segments.iter().map(|s| s.len * s.block).sum();
                    if a.ndim() < 2 || a.shape()[1] != len || !seen.insert(input) {
                        continue;
                    }
                    let b = columns(a, 1, &ranges);
                    self.k += b.tr_mul(&b);
                    self.evidence = true;
                }
            }
        }
    }
}

/// Per channel of `group`, whether every consumer weight that reads it is exactly zero: such a
/// channel contributes nothing downstream, whatever its activation (which K cannot see).
pub(crate) fn silent_channels(graph: &Graph, groups: &ChannelGroups, group: &Group) -> Vec<bool> {
    let consumers = consumer_weights(graph, groups, group);
    let mut silent = vec![!consumers.is_empty(); group.channels];
    for slice in consumers {
        let Some(pare_ir::Tensor::F32(w)) = graph.value(slice.tensor).initializer() else {
            silent.iter_mut().for_each(|s| *s = false);
            continue;
        };
        for (c, r) in channel_ranges(groups, slice, group.id).iter().enumerate() {
            let part = w.slice_axis(Axis(slice.axis), (r.start..r.end).into());
            if part.iter().any(|&x| x != 0.0) {
                silent[c] = false;
            }
        }
    }
    silent
}
