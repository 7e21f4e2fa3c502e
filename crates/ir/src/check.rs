//! What the ONNX spec requires of a modelled node's inputs beyond the shapes inference derives:
//! one element type across the inputs that share a type, float weights, per-channel vectors as
//! long as the channels they scale. A model that breaks these is refused at import with the
//! node's name, rather than pruned and handed to a runtime that rejects or misreads it.

use crate::graph::{Graph, NodeId};
use crate::shape::{Dim, Shape};
use crate::Op;
use pare_onnx::proto::tensor_proto::DataType;

/// The ONNX floating-point element types.
fn is_float(elem_type: i32) -> bool {
    [
        DataType::Float,
        DataType::Float16,
        DataType::Double,
        DataType::Bfloat16,
    ]
    .iter()
    .any(|&t| t as i32 == elem_type)
}

fn type_name(elem_type: i32) -> String {
    DataType::try_from(elem_type)
        .map_or(format!("type {elem_type}"), |t| t.as_str_name().to_string())
}

/// Checks that a modelled node has the inputs its op requires (an omitted optional input is an
/// empty name, which the IR keeps as None) and no more than it can take.
pub fn check_arity(graph: &Graph, id: NodeId) -> Result<(), String> {
    let node = graph.node(id);
    let (required, most) = match &node.op {
        Op::Conv(_) | Op::Gemm(_) => (2, 3),
        Op::MatMul | Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Reshape { .. } => (2, 2),
        Op::BatchNorm { .. } => (5, 5),
        Op::Clip | Op::Dropout { .. } => (1, 3),
        Op::Concat { .. } => (1, usize::MAX),
        Op::Relu
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::HardSigmoid { .. }
        | Op::HardSwish
        | Op::MaxPool(_)
        | Op::AveragePool { .. }
        | Op::GlobalAveragePool
        | Op::Flatten { .. }
        | Op::Identity
        | Op::Softmax { .. } => (1, 1),
        Op::Opaque(_) => return Ok(()),
    };
    let given = node.inputs.len();
    if given > most {
        return Err(format!(
            "has {given} inputs; {} takes at most {most}",
            node.op.op_type()
        ));
    }
    // Concat's inputs are all required; elsewhere only the leading ones.
    let needed = if matches!(node.op, Op::Concat { .. }) {
        given.max(1)
    } else {
        required
    };
    match (0..needed).find(|&i| node.inputs.get(i).copied().flatten().is_none()) {
        Some(i) => Err(format!(
            "input {i} is missing; {} needs {needed} input{}",
            node.op.op_type(),
            if needed == 1 { "" } else { "s" }
        )),
        None => Ok(()),
    }
}

/// Checks the element types of a node's inputs: those the spec gives one type must agree, and
/// the inputs of Conv, Gemm and BatchNormalization must be floating point. Unknown types (0) pass.
pub fn check_types(graph: &Graph, id: NodeId) -> Result<(), String> {
    let node = graph.node(id);
    let (same, float): (Vec<usize>, bool) = match &node.op {
        Op::Conv(_) | Op::Gemm(_) => (vec![0, 1, 2], true),
        Op::BatchNorm { .. } => (vec![], true),
        Op::MatMul | Op::Add | Op::Sub | Op::Mul | Op::Div => (vec![0, 1], false),
        Op::Clip => (vec![0, 1, 2], false),
        Op::Concat { .. } => ((0..node.inputs.len()).collect(), false),
        Op::Relu
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::HardSigmoid { .. }
        | Op::HardSwish
        | Op::MaxPool(_)
        | Op::AveragePool { .. }
        | Op::GlobalAveragePool
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Dropout { .. }
        | Op::Identity
        | Op::Softmax { .. }
        | Op::Opaque(_) => return Ok(()),
    };
    let elem = |i: usize| {
        let v = node.inputs.get(i).copied().flatten()?;
        Some((i, graph.value(v).elem_type)).filter(|&(_, t)| t != 0)
    };
    let name = |i: usize| node.inputs[i].map_or(String::new(), |v| graph.value(v).name.clone());
    if float {
        let wrong = (0..node.inputs.len())
            .filter_map(elem)
            .find(|&(_, t)| !is_float(t));
        if let Some((i, t)) = wrong {
            return Err(format!(
                "input {i} ('{}') is {}; {} needs floating-point inputs",
                name(i),
                type_name(t),
                node.op.op_type()
            ));
        }
    }
    let typed: Vec<(usize, i32)> = same.into_iter().filter_map(elem).collect();
    if let (Some(&(i, a)), Some(&(j, b))) =
        (typed.first(), typed.iter().find(|&&(_, t)| t != typed[0].1))
    {
        return Err(format!(
            "input {i} ('{}') is {} but input {j} ('{}') is {}; the spec requires one type",
            name(i),
            type_name(a),
            name(j),
            type_name(b)
        ));
    }
    Ok(())
}

/// Checks that an optional per-channel vector input (a bias, a BatchNorm statistic) is a vector of
/// `channels` elements.
pub fn check_vector(
    graph: &Graph,
    id: NodeId,
    index: usize,
    what: &str,
    channels: &Dim,
) -> Result<(), String> {
    let Some(shape) = graph.input_shape(id, index) else {
        return Ok(());
    };
    let fits = shape.rank() == 1
        && match (&shape.0[0], channels) {
            (Dim::Known(a), Dim::Known(b)) => a == b,
            _ => true,
        };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "{what} has shape {shape}, but there are {channels} channels: it must be [{channels}]"
        ))
    }
}

/// Checks that Gemm's C broadcasts to the output [M, N] in one direction, as the spec allows.
pub fn check_gemm_bias(c: &Shape, out: &[Dim; 2]) -> Result<(), String> {
    if c.rank() > 2 {
        return Err(format!("C has shape {c}, more than 2 dimensions"));
    }
    let offset = 2 - c.rank();
    for (i, d) in c.0.iter().enumerate() {
        let target = &out[offset + i];
        if let (Dim::Known(a), Dim::Known(b)) = (d, target) {
            if *a != 1 && a != b {
                return Err(format!(
                    "C has shape {c}, which does not broadcast to the output [{}, {}]",
                    out[0], out[1]
                ));
            }
        }
    }
    Ok(())
}
