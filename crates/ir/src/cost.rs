//! The cost model: parameters and multiply-accumulates per node.
//!
//! MACs count the multiplications of Conv, Gemm and MatMul for one run at the model's declared
//! input shape with symbolic dimensions (the batch) taken as 1: the convention of Torch-Pruning
//! and thop. Element-wise ops, pools and BatchNorm
//! are not counted. Parameters are the float initializers a node reads (BatchNorm's running
//! statistics excepted, as PyTorch counts them), each counted once even when shared.

use crate::graph::{Graph, NodeId, ValueSource};
use crate::shape::Dim;
use crate::Op;
use std::collections::HashSet;

/// The cost of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct NodeCost {
    pub params: usize,
    pub macs: u64,
}

/// Per-node costs, in node order.
pub fn node_costs(graph: &Graph) -> Vec<NodeCost> {
    let mut counted = HashSet::new();
    graph
        .node_ids()
        .map(|id| {
            let node = graph.node(id);
            // BatchNorm's running mean and variance are statistics, not parameters.
            let stats = if matches!(node.op, Op::BatchNorm { .. }) {
                3
            } else {
                usize::MAX
            };
            let params = node
                .inputs
                .iter()
                .take(stats)
                .flatten()
                .filter(|&&v| counted.insert(v))
                .filter_map(|&v| match &graph.value(v).source {
                    ValueSource::Initializer(t) if t.as_f32().is_some() => Some(t.len()),
                    _ => None,
                })
                .sum();
            NodeCost {
                params,
                macs: node_macs(graph, id),
            }
        })
        .collect()
}

/// Saturating, so an absurd (but allocatable) shape reports u64::MAX MACs instead of wrapping.
fn count(dims: &[Dim]) -> u64 {
    dims.iter()
        .map(|d| d.known().unwrap_or(1) as u64)
        .fold(1, u64::saturating_mul)
}

fn node_macs(graph: &Graph, id: NodeId) -> u64 {
    let node = graph.node(id);
    let out = node
        .outputs
        .first()
        .and_then(|&o| graph.value(o).shape.as_ref());
    let Some(out) = out else { return 0 };
    let per_output = match &node.op {
        // Each output element reads C_in/group × kernel inputs: the weight's trailing dims.
        Op::Conv(_) => graph.input_shape(id, 1).map_or(0, |w| count(&w.0[1..])),
        Op::Gemm(g) => graph
            .input_shape(id, 0)
            .and_then(|a| a.dim(if g.trans_a { 0 } else { 1 }).cloned())
            .map_or(0, |k| count(&[k])),
        Op::MatMul => graph
            .input_shape(id, 0)
            .and_then(|a| a.0.last().cloned())
            .map_or(0, |k| count(&[k])),
        _ => return 0,
    };
    count(&out.0).saturating_mul(per_output)
}
