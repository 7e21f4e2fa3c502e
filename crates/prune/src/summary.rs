//! What a graph's layers look like after pruning: channels in and out and MACs of every Conv,
//! Gemm and MatMul, for reports and snapshot tests. Reads the graph, never changes it.

use pare_ir::{Graph, NodeId, Op, Tensor};

/// One weight layer's width.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerWidth {
    pub name: String,
    pub op: String,
    /// Channels (Conv) or features (Gemm, MatMul) read and written: axis 1 of input and output.
    pub inputs: Option<usize>,
    pub outputs: Option<usize>,
    pub macs: u64,
}

/// The weight layers of `graph` in node order.
pub fn layer_widths(graph: &Graph) -> Vec<LayerWidth> {
    let costs = pare_ir::node_costs(graph);
    let width = |v: Option<pare_ir::ValueId>| {
        v.and_then(|v| graph.value(v).shape.as_ref())
            .and_then(|s| s.0.get(1).and_then(|d| d.known()))
    };
    graph
        .node_ids()
        .filter(|&id| matches!(graph.node(id).op, Op::Conv(_) | Op::Gemm(_) | Op::MatMul))
        .map(|id| {
            let node = graph.node(id);
            LayerWidth {
                name: node.name.clone(),
                op: node.op.op_type().to_string(),
                inputs: width(node.inputs.first().copied().flatten()),
                outputs: width(node.outputs.first().copied()),
                macs: costs[id.0 as usize].macs,
            }
        })
        .collect()
}

/// How many of one weight layer's parameters (weight and bias) are not exactly zero.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerSparsity {
    #[serde(skip)]
    pub node: NodeId,
    pub name: String,
    pub op: String,
    pub params: u64,
    pub nonzero: u64,
}

impl LayerSparsity {
    /// The share of parameters that are not zero, 1 for a layer without any.
    pub fn nonzero_share(&self) -> f64 {
        self.nonzero as f64 / self.params.max(1) as f64
    }
}

/// The constant float weight and bias of every Conv, Gemm and MatMul of `graph`, in node order,
/// with how many of their entries are not exactly zero (what connection masks leave).
pub fn layer_sparsity(graph: &Graph) -> Vec<LayerSparsity> {
    graph
        .node_ids()
        .filter(|&id| matches!(graph.node(id).op, Op::Conv(_) | Op::Gemm(_) | Op::MatMul))
        .map(|id| {
            let node = graph.node(id);
            let tensors = node.inputs.iter().skip(1).flatten().filter_map(|&v| {
                match graph.value(v).initializer() {
                    Some(Tensor::F32(t)) => Some(t),
                    _ => None,
                }
            });
            let (params, nonzero) = tensors.fold((0, 0), |(p, n), t| {
                (
                    p + t.len() as u64,
                    n + t.iter().filter(|&&w| w != 0.0).count() as u64,
                )
            });
            LayerSparsity {
                node: id,
                name: node.name.clone(),
                op: node.op.op_type().to_string(),
                params,
                nonzero,
            }
        })
        .collect()
}

/// The parameters of `graph` (as `Cost` counts them) that are not exactly zero: zeros are
/// looked for in the weight layers, where masks put them.
pub fn nonzero_params(graph: &Graph) -> u64 {
    let zeros: u64 = layer_sparsity(graph)
        .iter()
        .map(|l| l.params - l.nonzero)
        .sum();
    crate::selection::Cost::of(graph).params - zeros
}
