//! What the forward and backward passes read off a node: its inputs (computed values from the
//! tape, parameters from the graph's initializers), its attributes as the kernels describe them,
//! and which elementwise kernel an op is.

use super::tape::Tape;
use crate::TrainError;
use ndarray::{ArrayViewD, Ix4};
use pare_ir::{Graph, NodeId, Op, Tensor, ValueId, ValueSource, Window};
use pare_kernels::elementwise::{Activation, Binary};
use pare_kernels::linear::GemmSpec;
use pare_kernels::window::Window2d;

pub(super) fn node_err(graph: &Graph, id: NodeId, problem: impl Into<String>) -> TrainError {
    let node = graph.node(id);
    TrainError::Node {
        node: node.name.clone(),
        op: node.op.op_type().to_string(),
        problem: problem.into(),
    }
}

/// The float tensor behind a value: an initializer or a computed activation.
fn view<'a>(graph: &'a Graph, tape: &'a Tape, v: ValueId) -> Option<ArrayViewD<'a, f32>> {
    match &graph.value(v).source {
        ValueSource::Initializer(Tensor::F32(a)) => Some(a.view()),
        ValueSource::Initializer(_) => None,
        _ => tape.values[v].as_ref().map(|a| a.view()),
    }
}

pub(super) fn input<'a>(
    graph: &'a Graph,
    tape: &'a Tape,
    id: NodeId,
    i: usize,
) -> Result<ArrayViewD<'a, f32>, TrainError> {
    optional(graph, tape, id, i)
        .ok_or_else(|| node_err(graph, id, format!("input {i} is missing or not float32")))
}

pub(super) fn optional<'a>(
    graph: &'a Graph,
    tape: &'a Tape,
    id: NodeId,
    i: usize,
) -> Option<ArrayViewD<'a, f32>> {
    graph
        .node(id)
        .inputs
        .get(i)
        .copied()
        .flatten()
        .and_then(|v| view(graph, tape, v))
}

pub(super) fn scalar_input(graph: &Graph, tape: &Tape, id: NodeId, i: usize, default: f32) -> f32 {
    optional(graph, tape, id, i)
        .and_then(|a| a.iter().next().copied())
        .unwrap_or(default)
}

/// The kept output of `node`.
pub(super) fn output<'a>(tape: &'a Tape, node: &pare_ir::Node) -> ArrayViewD<'a, f32> {
    tape.values[node.outputs[0]]
        .as_ref()
        .expect("forward ran")
        .view()
}

pub(super) fn four_d<'a>(
    graph: &Graph,
    id: NodeId,
    x: &'a ArrayViewD<'a, f32>,
) -> Result<ndarray::ArrayView4<'a, f32>, TrainError> {
    x.view().into_dimensionality::<Ix4>().map_err(|_| {
        node_err(
            graph,
            id,
            format!("needs a 4-d NCHW input, got {:?}", x.shape()),
        )
    })
}

fn pair(v: &[usize], what: &str) -> Result<(usize, usize), String> {
    match v {
        [a, b] => Ok((*a, *b)),
        _ => Err(format!(
            "{what} {v:?}: only 2-d windows are supported in training"
        )),
    }
}

/// The kernel's description of a Gemm node.
pub(super) fn gemm_spec(g: &pare_ir::Gemm) -> GemmSpec {
    GemmSpec {
        alpha: g.alpha,
        beta: g.beta,
        trans_a: g.trans_a,
        trans_b: g.trans_b,
    }
}

/// The 2-d window of a Conv or pool node over an (h, w) input.
pub fn window_2d(window: &Window, ceil_mode: bool, h: usize, w: usize) -> Result<Window2d, String> {
    let (Some(pads), Some(out)) = (
        window.resolved_pads(&[h, w]),
        window.output_size(&[h, w], ceil_mode),
    ) else {
        return Err("the window does not fit the input".into());
    };
    Ok(Window2d {
        h,
        w,
        kh: window.kernel_shape[0],
        kw: *window
            .kernel_shape
            .get(1)
            .ok_or("only 2-d windows are supported")?,
        stride: pair(&window.strides, "strides")?,
        dilation: pair(&window.dilations, "dilations")?,
        pad: (pads[0], pads[1]),
        out: pair(&out, "output")?,
    })
}

/// The activation an op applies, if it is one.
pub(super) fn activation(graph: &Graph, tape: &Tape, id: NodeId) -> Option<Activation> {
    Some(match graph.node(id).op {
        Op::Relu => Activation::Relu,
        Op::Clip => Activation::Clip {
            min: scalar_input(graph, tape, id, 1, f32::NEG_INFINITY),
            max: scalar_input(graph, tape, id, 2, f32::INFINITY),
        },
        Op::LeakyRelu { alpha } => Activation::LeakyRelu { alpha },
        Op::Sigmoid => Activation::Sigmoid,
        Op::HardSigmoid { alpha, beta } => Activation::HardSigmoid { alpha, beta },
        Op::HardSwish => Activation::HardSwish,
        Op::Conv(_)
        | Op::Gemm(_)
        | Op::MatMul
        | Op::BatchNorm { .. }
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
        | Op::Opaque(_) => return None,
    })
}

/// The elementwise binary kernel an op is, if it is one.
pub(super) fn binary(op: &Op) -> Option<Binary> {
    Some(match op {
        Op::Add => Binary::Add,
        Op::Sub => Binary::Sub,
        Op::Mul => Binary::Mul,
        Op::Div => Binary::Div,
        Op::Conv(_)
        | Op::Gemm(_)
        | Op::MatMul
        | Op::BatchNorm { .. }
        | Op::Relu
        | Op::Clip
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::HardSigmoid { .. }
        | Op::HardSwish
        | Op::MaxPool(_)
        | Op::AveragePool { .. }
        | Op::GlobalAveragePool
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Concat { .. }
        | Op::Dropout { .. }
        | Op::Identity
        | Op::Softmax { .. }
        | Op::Opaque(_) => return None,
    })
}

/// An axis attribute (negative counts from the end) as an index into `rank` dimensions.
pub(super) fn softmax_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64) as usize
    } else {
        axis as usize
    }
}
