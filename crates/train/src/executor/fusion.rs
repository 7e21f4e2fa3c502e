//! Which nodes run inside their producer's kernel (see `Fusion`), decided once per forward pass,
//! and the kernel epilogue and pool state that follow from that decision.

use super::node::{activation, node_err, window_2d};
use super::tape::{Mode, Saved, Tape};
use crate::TrainError;
use ndarray::Array4;
use pare_ir::{Graph, NodeId, Op, PerNode, PerValue, Pool, ValueId, ValueSource};
use pare_kernels::elementwise::Activation;
use pare_kernels::epilogue::Epilogue;

/// Nodes that run inside their producer's kernel, right after it (see `Epilogue`). Each must
/// be the only reader of the value before it, which is not a graph output; the values between
/// are never kept.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Fusion {
    /// An activation whose derivative follows from its own output (so backward never needs its
    /// input) and whose other inputs are constants (known before its turn). Any producer.
    pub(super) activation: Option<NodeId>,
    /// A MaxPool after the producer or its activation; Conv and BatchNorm only. Its backward
    /// applies the activation's derivative at the pooled values, the winning activated values.
    pub(super) max_pool: Option<NodeId>,
    /// Whether a Conv sums its output planes for the training-mode BatchNorm that alone reads
    /// its output (or its activation's), which then need not read them once more.
    batchnorm_stats: bool,
}

/// The fusion of each node (see `Fusion`). Running an activation or a pool inside its producer
/// saves a pass over memory and a buffer each.
pub(super) fn fusions(graph: &Graph, tape: &Tape, mode: Mode) -> PerNode<Fusion> {
    let consumers: PerValue<Vec<NodeId>> = graph.consumers().into();
    // The node reading `v` alone, through its first input only.
    let sole_reader = |v: ValueId| match consumers[v][..] {
        [reader] if !graph.outputs.contains(&v) => {
            let inputs = &graph.node(reader).inputs;
            let only_first =
                inputs.first() == Some(&Some(v)) && inputs.iter().skip(1).all(|&i| i != Some(v));
            only_first.then_some(reader)
        }
        _ => None,
    };
    let unused = |v: &ValueId| consumers[*v].is_empty() && !graph.outputs.contains(v);
    graph
        .node_ids()
        .map(|id| {
            let mut fusion = Fusion::default();
            let mut v = graph.node(id).outputs[0];
            let in_place = |reader: NodeId| {
                let constants = graph
                    .node(reader)
                    .inputs
                    .iter()
                    .skip(1)
                    .flatten()
                    .all(|&i| matches!(graph.value(i).source, ValueSource::Initializer(_)));
                constants
                    && activation(graph, tape, reader)
                        .is_some_and(|a| a.output_determines_derivative())
            };
            // An activation's backward reads its own output, so no other one may overwrite it:
            // in a chain of activations only the first runs inside its producer.
            let keeps_own_output = activation(graph, tape, id).is_some();
            if let Some(reader) = sole_reader(v).filter(|&r| !keeps_own_output && in_place(r)) {
                fusion.activation = Some(reader);
                v = graph.node(reader).outputs[0];
            }
            if runs_epilogue(&graph.node(id).op) {
                fusion.max_pool = sole_reader(v).filter(|&r| {
                    let node = graph.node(r);
                    matches!(node.op, Op::MaxPool(_)) && node.outputs[1..].iter().all(unused)
                });
            }
            fusion.batchnorm_stats = mode == Mode::Train
                && matches!(graph.node(id).op, Op::Conv(_))
                && fusion.max_pool.is_none()
                && sole_reader(v).is_some_and(|r| matches!(graph.node(r).op, Op::BatchNorm { .. }));
            fusion
        })
        .collect()
}

/// Whether the op's kernel runs an `Epilogue` (a following activation and max pool) itself,
/// while its output is in cache; for other ops the executor applies a following activation to
/// the output afterwards, and pools are not fused.
pub(super) fn runs_epilogue(op: &Op) -> bool {
    match op {
        Op::Conv(_) | Op::BatchNorm { .. } => true,
        Op::Gemm(_)
        | Op::MatMul
        | Op::Relu
        | Op::Clip
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::HardSigmoid { .. }
        | Op::HardSwish
        | Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::MaxPool(_)
        | Op::AveragePool { .. }
        | Op::GlobalAveragePool
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Concat { .. }
        | Op::Dropout { .. }
        | Op::Identity
        | Op::Softmax { .. }
        | Op::Opaque(_) => false,
    }
}

/// The epilogue for a node's `fusion`, over output planes of `plane` (height, width): the
/// activation `then`, and the fused MaxPool's window over such planes.
pub(super) fn fused_epilogue(
    graph: &Graph,
    fusion: Fusion,
    then: Option<Activation>,
    (h, w): (usize, usize),
) -> Result<Epilogue, TrainError> {
    let max_pool = match fusion.max_pool {
        Some(p) => {
            let Op::MaxPool(Pool { window, ceil_mode }) = &graph.node(p).op else {
                unreachable!("fused pools are MaxPools")
            };
            Some(window_2d(window, *ceil_mode, h, w).map_err(|e| node_err(graph, p, e))?)
        }
        None => None,
    };
    Ok(Epilogue {
        activation: then,
        max_pool,
        plane_sums: fusion.batchnorm_stats,
    })
}

/// The saved state of the MaxPool that node `producer`'s `epilogue` ran, from the winners its
/// kernel returned.
pub(super) fn fused_pool(
    producer: NodeId,
    epilogue: Epilogue,
    argmax: Option<Array4<u32>>,
) -> Option<Saved> {
    Some(Saved::MaxPool {
        window: epilogue.max_pool?,
        argmax: argmax?,
        producer: Some(producer),
    })
}
