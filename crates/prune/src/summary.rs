//! What a graph's layers look like after pruning: channels in and out and MACs of every Conv,
//! Gemm and MatMul, for reports and snapshot tests. Reads the graph, never changes it.

use pare_ir::{Graph, Op};

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
