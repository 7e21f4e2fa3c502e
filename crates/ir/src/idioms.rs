//! Exporter idioms rewritten into the ops pare models, so their channels can be followed rather
//! than frozen behind an Opaque node. Each rewrite computes exactly what the original did:
//! - a node left Opaque because its weight was computed (a Conv without `kernel_shape`) is typed
//!   again once folding made the weight a constant;
//! - a zero-valued constant Pad of spatial axes read only by Conv nodes becomes those Convs' own
//!   padding (TensorFlow and Paddle converters pad separately);
//! - Squeeze and Unsqueeze with known shapes become a Reshape to a constant target that copies
//!   the batch (`0`), as PyTorch writes before its classifier;
//! - a Relu reading a Relu reads the first one's input instead (Relu is idempotent), so a run of
//!   Relus becomes one: tract's optimiser takes time quadratic in such a run (2,000 in a row:
//!   20 s), and a model pare writes must not hand it one.

use crate::graph::{Graph, NodeId, ValueSource};
use crate::op::MAX_WINDOW_ATTR;
use crate::shape::Dim;
use crate::{fold_const, IrError, Op, Padding, Tensor};
use ndarray::{ArrayD, IxDyn};
use pare_onnx::proto::NodeProto;

/// Applies every rewrite the graph allows.
pub fn rewrite(graph: &mut Graph) -> Result<(), IrError> {
    let mut changed = false;
    for id in graph.node_ids() {
        retype(graph, id)?;
        changed |= squeeze_to_reshape(graph, id);
        changed |= merge_pad_into_convs(graph, id);
        changed |= skip_repeated_relu(graph, id);
    }
    if changed {
        graph.remove_unused();
    }
    Ok(())
}

/// Parses an Opaque node again with what is known now (its weight's shape).
fn retype(graph: &mut Graph, id: NodeId) -> Result<(), IrError> {
    let Op::Opaque(proto) = &graph.node(id).op else {
        return Ok(());
    };
    let kernel = graph
        .const_input(id, 1)
        .map(|w| w.shape())
        .filter(|s| s.len() > 2)
        .map(|s| s[2..].to_vec());
    let op = Op::from_node(proto, graph.meta.opset(), kernel.as_deref()).map_err(|problem| {
        IrError::Node {
            node: graph.node(id).name.clone(),
            op: graph.node(id).op.op_type().to_string(),
            problem,
        }
    })?;
    graph.nodes[id.0 as usize].op = op;
    Ok(())
}

/// The Opaque node of a default-domain op of this type, if `id` is one.
fn opaque<'a>(graph: &'a Graph, id: NodeId, op_type: &str) -> Option<&'a NodeProto> {
    let Op::Opaque(proto) = &graph.node(id).op else {
        return None;
    };
    let domain = proto.domain.as_deref().unwrap_or("");
    (proto.op_type.as_deref() == Some(op_type) && (domain.is_empty() || domain == "ai.onnx"))
        .then_some(&**proto)
}

fn ints_attr(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .map(|a| a.ints.clone())
}

/// Squeeze/Unsqueeze → Reshape(x, constant target).
fn squeeze_to_reshape(graph: &mut Graph, id: NodeId) -> bool {
    let opset = graph.meta.opset();
    let (squeeze, proto) = match (opaque(graph, id, "Squeeze"), opaque(graph, id, "Unsqueeze")) {
        (Some(p), _) => (true, p),
        (_, Some(p)) => (false, p),
        _ => return false,
    };
    if proto.attribute.len() > usize::from(opset < 13) {
        return false;
    }
    let node = graph.node(id);
    let axes: Option<Vec<i64>> = if opset >= 13 {
        match node.inputs.get(1).copied().flatten() {
            None => None,
            Some(v) => match graph.value(v).initializer().and_then(Tensor::as_i64) {
                Some(a) => Some(a.iter().copied().collect()),
                None => return false,
            },
        }
    } else {
        ints_attr(proto, "axes")
    };
    let (Some(data), Some(input)) = (
        node.inputs.first().copied().flatten(),
        graph.input_shape(id, 0),
    ) else {
        return false;
    };
    // Work on sizes, with the batch (a symbol at axis 0) standing in as a size of 2, which no
    // rewrite drops or moves; any other symbol stops the rewrite.
    let batch = input
        .0
        .first()
        .filter(|d| matches!(d, Dim::Sym(_)))
        .cloned();
    let sizes: Option<Vec<usize>> = input
        .0
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Known(k) => Some(*k),
            Dim::Sym(_) if i == 0 => Some(2),
            Dim::Sym(_) => None,
        })
        .collect();
    let Some(sizes) = sizes else { return false };
    let out = if squeeze {
        fold_const::squeezed(&sizes, axes.as_deref())
    } else {
        axes.and_then(|a| fold_const::unsqueezed(&sizes, &a))
    };
    let Some(out) = out else { return false };
    if out.contains(&0) || batch.is_some() && out.first() != Some(&2) {
        return false;
    }
    let target: Vec<i64> = out
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if i == 0 && batch.is_some() {
                0
            } else {
                d as i64
            }
        })
        .collect();
    let name = format!("{}_target", graph.node(id).name);
    let tensor =
        Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[target.len()]), target).expect("a vector"));
    let target = graph.add_value(&name, ValueSource::Initializer(tensor));
    let node = &mut graph.nodes[id.0 as usize];
    node.op = Op::Reshape { allowzero: false };
    node.inputs = vec![Some(data), Some(target)];
    true
}

/// Relu(Relu(x)) → Relu(x): the outer Relu reads x; the inner one goes once nothing reads it.
/// Nodes are visited in topological order, so a whole run collapses in one sweep.
fn skip_repeated_relu(graph: &mut Graph, id: NodeId) -> bool {
    let node = graph.node(id);
    let (Op::Relu, Some(Some(input))) = (&node.op, node.inputs.first().copied()) else {
        return false;
    };
    let ValueSource::Node(producer) = graph.value(input).source else {
        return false;
    };
    let producer = graph.node(producer);
    let (Op::Relu, Some(Some(x))) = (&producer.op, producer.inputs.first().copied()) else {
        return false;
    };
    graph.nodes[id.0 as usize].inputs[0] = Some(x);
    true
}

/// Pad(x) read only by Convs → each Conv reads x with the pads added to its own.
fn merge_pad_into_convs(graph: &mut Graph, id: NodeId) -> bool {
    let Some(proto) = opaque(graph, id, "Pad") else {
        return false;
    };
    let opset = graph.meta.opset();
    let node = graph.node(id);
    let mode_is_constant = proto.attribute.iter().all(|a| match a.name.as_deref() {
        Some("mode") => a.s.as_deref().is_none_or(|m| m == b"constant"),
        Some("pads") | Some("value") => opset < 11,
        _ => false,
    });
    if !mode_is_constant || node.outputs.len() != 1 {
        return false;
    }
    let const_f32 = |i: usize| {
        node.inputs
            .get(i)
            .copied()
            .flatten()
            .map(|v| graph.value(v).initializer().and_then(Tensor::as_f32))
    };
    let (pads, value) = if opset >= 11 {
        let Some(pads) = graph.const_input(id, 1).and_then(Tensor::as_i64) else {
            return false;
        };
        let value = match const_f32(2) {
            None => 0.0,
            Some(Some(v)) if v.len() == 1 => v.iter().copied().next().unwrap_or(0.0),
            Some(_) => return false,
        };
        if node.inputs.get(3).copied().flatten().is_some() {
            return false; // explicit axes (opset 18)
        }
        (pads.iter().copied().collect::<Vec<_>>(), value)
    } else {
        let value = proto
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some("value"))
            .map_or(0.0, |a| a.f.unwrap_or(0.0));
        let Some(pads) = ints_attr(proto, "pads") else {
            return false;
        };
        (pads, value)
    };
    let rank = pads.len() / 2;
    let spatial: Option<Vec<usize>> = (0..rank)
        .flat_map(|i| [i, i + rank])
        .map(|i| {
            let p = usize::try_from(pads[i])
                .ok()
                .filter(|_| pads[i] <= MAX_WINDOW_ATTR)?;
            (i % rank >= 2 || p == 0).then_some(p)
        })
        .collect();
    let (Some(_), true, true) = (spatial, value == 0.0, rank > 2 && pads.len() == 2 * rank) else {
        return false;
    };
    let n = rank - 2;
    let begins: Vec<usize> = pads[2..rank].iter().map(|&p| p as usize).collect();
    let ends: Vec<usize> = pads[rank + 2..].iter().map(|&p| p as usize).collect();
    let (Some(x), &[out]) = (node.inputs.first().copied().flatten(), &node.outputs[..]) else {
        return false;
    };
    if graph.outputs.contains(&out) {
        return false;
    }
    let readers: Vec<NodeId> = graph
        .node_ids()
        .filter(|&n| graph.node(n).inputs.contains(&Some(out)))
        .collect();
    let all_convs = !readers.is_empty()
        && readers.iter().all(|&r| {
            let reader = graph.node(r);
            reader.inputs.iter().skip(1).all(|&v| v != Some(out))
                && matches!(&reader.op, Op::Conv(c)
                    if c.window.kernel_shape.len() == n
                        && matches!(c.window.pads, Padding::Explicit(_) | Padding::Valid))
        });
    if !all_convs {
        return false;
    }
    for r in readers {
        let reader = &mut graph.nodes[r.0 as usize];
        let Op::Conv(c) = &mut reader.op else {
            continue; // checked above
        };
        let old = match &c.window.pads {
            Padding::Explicit(p) => p.clone(),
            _ => vec![0; 2 * n],
        };
        let merged = (0..2 * n)
            .map(|i| old[i] + if i < n { begins[i] } else { ends[i - n] })
            .collect();
        c.window.pads = Padding::Explicit(merged);
        reader.inputs[0] = Some(x);
    }
    true
}
