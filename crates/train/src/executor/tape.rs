//! The tape: what a forward pass keeps for the backward pass, per value and per node.

use ndarray::{Array4, ArrayD};
use pare_ir::{Graph, NodeId, PerNode, PerValue, ValueId};
use pare_kernels::batchnorm::BatchStats;
use pare_kernels::conv::ConvGeometry;
use pare_kernels::window::Window2d;

/// Whether BatchNorm uses batch statistics (training) or running statistics (inference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// Per-node memory of the forward pass.
#[derive(Debug, Clone)]
pub(super) enum Saved {
    Nothing,
    Conv(ConvGeometry),
    /// The window and each output's winning flat index in its plane; `producer` is the Conv or
    /// BatchNorm whose kernel ran the pool (see `Fusion`), if one did.
    MaxPool {
        window: Window2d,
        argmax: Array4<u32>,
        producer: Option<NodeId>,
    },
    AvgPool(Window2d, bool),
    BatchNorm(Option<BatchStats>),
    /// The mask a training-mode Dropout multiplied by.
    Dropout(ArrayD<f32>),
    /// An activation that ran in its producer's kernel followed by a MaxPool that ran there too
    /// (see `Fusion`): its input and output are not kept, and the pool's backward applies its
    /// derivative.
    BeforePool,
}

/// Activations and saved state of one forward pass. Values inside a fusion (see `Fusion`) are
/// not kept.
pub struct Tape {
    pub(super) values: PerValue<Option<ArrayD<f32>>>,
    pub(super) saved: PerNode<Saved>,
    /// For each Conv/Gemm/MatMul node, the mean input vector over the batch (and positions), when
    /// requested: what RLS updates P with.
    pub(super) mean_inputs: PerNode<Option<Vec<f32>>>,
    /// Per value, Σ and Σ² of each plane when its producer summed them for a BatchNorm.
    pub(super) plane_sums: PerValue<Option<Vec<(f64, f64)>>>,
}

impl Tape {
    /// An empty tape for a pass over `graph`.
    pub(super) fn new(graph: &Graph) -> Self {
        Tape {
            values: PerValue::for_values(graph, None),
            saved: PerNode::for_nodes(graph, Saved::Nothing),
            mean_inputs: PerNode::for_nodes(graph, None),
            plane_sums: PerValue::for_values(graph, None),
        }
    }

    /// The value computed for `v` (an input or node output).
    pub fn value(&self, v: ValueId) -> Option<&ArrayD<f32>> {
        self.values[v].as_ref()
    }

    /// The batch statistics a training-mode BatchNorm node used.
    pub fn batch_stats(&self, node: NodeId) -> Option<&BatchStats> {
        match &self.saved[node] {
            Saved::BatchNorm(stats) => stats.as_ref(),
            _ => None,
        }
    }

    /// The mean input vector of a Conv/Gemm/MatMul node, when the pass recorded them.
    pub fn mean_input(&self, node: NodeId) -> Option<&[f32]> {
        self.mean_inputs[node].as_deref()
    }
}
