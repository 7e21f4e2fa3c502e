//! Folding float constant subgraphs: weights an exporter computes at run time (a
//! ConstantOfShape, a Transpose or Reshape of a constant, a scale multiplied in) become
//! initializers, so pare sees weights it can slice and train. Only nodes whose inputs are all
//! constants fold, only ops whose semantics are simple and exact here, and only results of at most
//! `MAX_ELEMENTS` elements, so a model cannot make import allocate without bound.

use crate::graph::{Graph, NodeId, ValueSource};
use crate::infer::{broadcast, reshape_shape};
use crate::shape::{normalize_axis, Shape};
use crate::tensor::element_count;
use crate::{IrError, Op, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};
use pare_onnx::proto::{tensor_proto::DataType, AttributeProto, NodeProto};

/// The largest folded result: 16 Mi elements (64 MiB of float32).
pub const MAX_ELEMENTS: usize = 1 << 24;

/// Replaces every foldable node by an initializer holding its result, in graph order (so chains
/// fold), then drops the nodes no longer needed.
pub fn fold_constants(graph: &mut Graph) -> Result<(), IrError> {
    let mut folded = vec![false; graph.nodes.len()];
    for id in graph.node_ids() {
        let node = graph.node(id);
        let [out] = node.outputs[..] else { continue };
        if graph.outputs.contains(&out) {
            continue;
        }
        let inputs: Option<Vec<Option<&Tensor>>> = node
            .inputs
            .iter()
            .map(|v| match v {
                None => Some(None),
                Some(v) => graph.value(*v).initializer().map(Some),
            })
            .collect();
        let Some(inputs) = inputs else { continue };
        let Some(result) = evaluate(graph, id, &inputs) else {
            continue;
        };
        if element_count(&result.shape()).is_none_or(|n| n > MAX_ELEMENTS) {
            continue;
        }
        let value = graph.value_mut(out);
        value.shape = Some(Shape::known(&result.shape()));
        value.elem_type = result.data_type();
        value.source = ValueSource::Initializer(result);
        folded[id.0 as usize] = true;
    }
    if folded.contains(&true) {
        graph.retain_nodes(|id| !folded[id.0 as usize]);
        graph.remove_unused();
    }
    Ok(())
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

/// Whether a result of this shape is small enough to compute.
fn small(dims: &[usize]) -> bool {
    element_count(dims).is_some_and(|n| n <= MAX_ELEMENTS)
}

/// The node's result on constant inputs, or None when it is not one pare folds.
fn evaluate(graph: &Graph, id: NodeId, inputs: &[Option<&Tensor>]) -> Option<Tensor> {
    let node = graph.node(id);
    let f32_in = |i: usize| inputs.get(i).copied().flatten()?.as_f32();
    match &node.op {
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let (a, b) = (f32_in(0)?, f32_in(1)?);
            let shape = broadcast(&Shape::known(a.shape()), &Shape::known(b.shape())).ok()?;
            if !small(&shape.to_known()?) {
                return None;
            }
            Some(Tensor::F32(match node.op {
                Op::Add => a + b,
                Op::Sub => a - b,
                Op::Mul => a * b,
                _ => a / b,
            }))
        }
        Op::Relu => Some(Tensor::F32(f32_in(0)?.mapv(|v| v.max(0.0)))),
        Op::Identity => inputs.first().copied().flatten().cloned(),
        Op::Reshape { allowzero } => {
            let a = f32_in(0)?;
            let target = inputs.get(1).copied().flatten()?.as_i64()?;
            let shape = reshape_shape(
                &Shape::known(a.shape()),
                target.iter().copied().collect(),
                *allowzero,
            )
            .ok()?
            .to_known()?;
            reshaped(a, &shape)
        }
        Op::Flatten { axis } => {
            let a = f32_in(0)?;
            let at = if *axis < 0 {
                *axis + a.ndim() as i64
            } else {
                *axis
            };
            let at = usize::try_from(at).ok().filter(|&x| x <= a.ndim())?;
            let outer: usize = a.shape()[..at].iter().product();
            reshaped(a, &[outer, a.len().checked_div(outer).unwrap_or(0)])
        }
        Op::Concat { axis } => {
            let parts: Vec<_> = (0..inputs.len()).map(f32_in).collect::<Option<_>>()?;
            let axis = normalize_axis(*axis, parts.first()?.ndim())?;
            let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
            ndarray::concatenate(Axis(axis), &views)
                .ok()
                .map(Tensor::F32)
        }
        Op::Opaque(proto) => opaque(graph, proto, inputs),
        Op::Conv(_)
        | Op::Gemm(_)
        | Op::MatMul
        | Op::BatchNorm { .. }
        | Op::Clip
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::HardSigmoid { .. }
        | Op::HardSwish
        | Op::MaxPool(_)
        | Op::AveragePool { .. }
        | Op::GlobalAveragePool
        | Op::Dropout { .. }
        | Op::Softmax { .. } => None,
    }
}

fn reshaped(a: &ArrayD<f32>, dims: &[usize]) -> Option<Tensor> {
    let values: Vec<f32> = a.iter().copied().collect();
    ArrayD::from_shape_vec(IxDyn(dims), values)
        .ok()
        .map(Tensor::F32)
}

/// Ops pare does not model but folds when every input is a constant.
fn opaque(graph: &Graph, node: &NodeProto, inputs: &[Option<&Tensor>]) -> Option<Tensor> {
    let domain = node.domain.as_deref().unwrap_or("");
    if !domain.is_empty() && domain != "ai.onnx" {
        return None;
    }
    let input = |i: usize| inputs.get(i).copied().flatten();
    let f32_in = |i: usize| input(i)?.as_f32();
    let opset = graph.meta.opset();
    match node.op_type.as_deref()? {
        "ConstantOfShape" => {
            let dims: Vec<usize> = input(0)?
                .as_i64()?
                .iter()
                .map(|&d| usize::try_from(d).ok())
                .collect::<Option<_>>()?;
            if !small(&dims) {
                return None;
            }
            let value = match attr(node, "value").and_then(|a| a.t.as_ref()) {
                None => Tensor::F32(ArrayD::zeros(IxDyn(&[1]))),
                Some(t) => Tensor::from_proto(t).ok()?,
            };
            match value {
                Tensor::F32(v) if v.len() == 1 => Some(Tensor::F32(ArrayD::from_elem(
                    IxDyn(&dims),
                    *v.iter().next()?,
                ))),
                Tensor::I64(v) if v.len() == 1 => Some(Tensor::I64(ArrayD::from_elem(
                    IxDyn(&dims),
                    *v.iter().next()?,
                ))),
                _ => None,
            }
        }
        "Neg" => Some(Tensor::F32(f32_in(0)?.mapv(|v| -v))),
        "Sqrt" => Some(Tensor::F32(f32_in(0)?.mapv(f32::sqrt))),
        "Reciprocal" => Some(Tensor::F32(f32_in(0)?.mapv(|v| 1.0 / v))),
        "Cast" => {
            let to = attr(node, "to")?.i?;
            match (input(0)?, to) {
                (Tensor::F32(a), t) if t == DataType::Float as i64 => Some(Tensor::F32(a.clone())),
                (Tensor::I64(a), t) if t == DataType::Float as i64 => {
                    Some(Tensor::F32(a.mapv(|v| v as f32)))
                }
                _ => None,
            }
        }
        "Transpose" => {
            let a = f32_in(0)?;
            let perm: Vec<usize> = match attr(node, "perm") {
                Some(p) => p
                    .ints
                    .iter()
                    .map(|&i| usize::try_from(i).ok())
                    .collect::<Option<_>>()?,
                None => (0..a.ndim()).rev().collect(),
            };
            let mut seen = perm.clone();
            seen.sort_unstable();
            if seen != (0..a.ndim()).collect::<Vec<_>>() {
                return None;
            }
            Some(Tensor::F32(
                a.clone()
                    .permuted_axes(perm)
                    .as_standard_layout()
                    .into_owned(),
            ))
        }
        op @ ("Unsqueeze" | "Squeeze") => {
            let a = f32_in(0)?;
            let axes: Option<Vec<i64>> = if opset >= 13 {
                match input(1) {
                    None => None,
                    Some(t) => Some(t.as_i64()?.iter().copied().collect()),
                }
            } else {
                attr(node, "axes").map(|a| a.ints.clone())
            };
            let dims = if op == "Squeeze" {
                squeezed(a.shape(), axes.as_deref())?
            } else {
                unsqueezed(a.shape(), &axes?)?
            };
            reshaped(a, &dims)
        }
        _ => None,
    }
}

/// The shape after Squeeze: the given axes (which must be 1) or every 1 removed.
pub(crate) fn squeezed(shape: &[usize], axes: Option<&[i64]>) -> Option<Vec<usize>> {
    let drop: Vec<usize> = match axes {
        Some(axes) => axes
            .iter()
            .map(|&a| normalize_axis(a, shape.len()).filter(|&a| shape[a] == 1))
            .collect::<Option<_>>()?,
        None => (0..shape.len()).filter(|&a| shape[a] == 1).collect(),
    };
    Some(
        (0..shape.len())
            .filter(|a| !drop.contains(a))
            .map(|a| shape[a])
            .collect(),
    )
}

/// The shape after Unsqueeze: a 1 inserted at each axis of the output.
pub(crate) fn unsqueezed(shape: &[usize], axes: &[i64]) -> Option<Vec<usize>> {
    let rank = shape.len() + axes.len();
    let mut at: Vec<usize> = axes
        .iter()
        .map(|&a| normalize_axis(a, rank))
        .collect::<Option<_>>()?;
    at.sort_unstable();
    at.dedup();
    if at.len() != axes.len() {
        return None;
    }
    let mut rest = shape.iter();
    (0..rank)
        .map(|i| {
            if at.contains(&i) {
                Some(1)
            } else {
                rest.next().copied()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pare_onnx::attr::{self, tensor_f32, tensor_i64};
    use pare_onnx::GraphBuilder;

    #[test]
    fn squeeze_and_unsqueeze_shapes_follow_the_spec() {
        assert_eq!(squeezed(&[2, 8, 1, 1], Some(&[2, -1])), Some(vec![2, 8]));
        assert_eq!(squeezed(&[1, 8, 1], None), Some(vec![8]));
        assert_eq!(squeezed(&[2, 8], Some(&[1])), None, "8 is not 1");
        assert_eq!(unsqueezed(&[2, 8], &[-1, 2]), Some(vec![2, 8, 1, 1]));
        assert_eq!(unsqueezed(&[8], &[0, 0]), None, "a repeated axis");
    }

    /// w = Transpose(t) × ConstantOfShape([2, 3], 0.5) + 1, folded, against the values computed
    /// by hand.
    #[test]
    fn constant_subgraphs_fold_to_their_values() {
        let mut b = GraphBuilder::new("t", 17);
        b.input("x", [2, 3]).output("y", [2, 3]);
        b.initializer(tensor_f32("t", &[3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        b.initializer(tensor_i64("shape", &[2], vec![2, 3]));
        b.initializer(tensor_f32("one", &[], vec![1.0]));
        b.node("Transpose", &["t"], &["tt"], vec![]);
        let half = attr::tensor("value", tensor_f32("v", &[1], vec![0.5]));
        b.node("ConstantOfShape", &["shape"], &["h"], vec![half]);
        b.node("Mul", &["tt", "h"], &["m"], vec![]);
        b.node("Add", &["m", "one"], &["w"], vec![]);
        b.node("Add", &["x", "w"], &["y"], vec![]);
        let graph = crate::import(&b.build()).unwrap();
        assert_eq!(
            graph.nodes.len(),
            1,
            "only x + w is left: {:?}",
            graph.nodes
        );
        let w = graph.const_input(NodeId(0), 1).unwrap().as_f32().unwrap();
        let t = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
        for i in 0..2 {
            for j in 0..3 {
                assert_eq!(w[[i, j]], t[j][i] * 0.5 + 1.0);
            }
        }
    }

    #[test]
    fn results_beyond_the_bound_stay_unfolded() {
        let mut b = GraphBuilder::new("t", 17);
        b.input("x", [1]).output("y", [1]);
        b.initializer(tensor_i64("shape", &[2], vec![1 << 13, 1 << 12]));
        b.node("ConstantOfShape", &["shape"], &["big"], vec![]);
        b.initializer(tensor_i64("flat", &[1], vec![-1]));
        b.node("Reshape", &["big", "flat"], &["v"], vec![]);
        b.initializer(tensor_i64("first", &[1], vec![0]));
        b.initializer(tensor_i64("one", &[1], vec![1]));
        b.node("Slice", &["v", "first", "one"], &["s"], vec![]);
        b.node("Add", &["x", "s"], &["y"], vec![]);
        // The Slice's output is declared, so its shape is known although it is not computed.
        b.output("s", [1]);
        let mut model = b.build();
        let graph_proto = model.graph.as_mut().unwrap();
        let declared = graph_proto.output.pop().unwrap();
        graph_proto.value_info.push(declared);
        let graph = crate::import(&model).unwrap();
        assert!(graph
            .nodes
            .iter()
            .any(|n| n.op.op_type() == "ConstantOfShape"));
    }
}
