//! Constant folding of shape subgraphs: the Shape → Gather → Unsqueeze → Concat → Reshape chains
//! that exporters write to compute a target shape from the input's.
//!
//! Values are evaluated as small integer tensors whose elements may be symbols (a batch size
//! left open). A fully known result replaces its node by an initializer. A Reshape whose target
//! still holds the batch symbol at the position the data has it gets a constant target with 0
//! ("copy this dimension") there, so the folded model still takes any batch size. Only integer
//! shape arithmetic is folded; float computation is never touched.

use crate::graph::{Graph, NodeId, ValueId, ValueSource};
use crate::shape::Dim;
use crate::{IrError, Op, Tensor};
use ndarray::{ArrayD, IxDyn};
use pare_onnx::proto::{tensor_proto::DataType, AttributeProto, TensorProto};
use std::collections::HashMap;

/// One element of a shape tensor.
#[derive(Debug, Clone, PartialEq)]
enum SymInt {
    Int(i64),
    Sym(String),
}

/// An integer tensor of rank 0 or 1 whose elements may be symbolic.
#[derive(Debug, Clone, PartialEq)]
struct SymTensor {
    /// `[]` for a scalar, `[n]` for a vector.
    dims: Vec<usize>,
    data: Vec<SymInt>,
    elem_type: i32,
}

impl SymTensor {
    fn vector(data: Vec<SymInt>, elem_type: i32) -> Self {
        SymTensor {
            dims: vec![data.len()],
            data,
            elem_type,
        }
    }

    fn ints(&self) -> Option<Vec<i64>> {
        self.data
            .iter()
            .map(|d| match d {
                SymInt::Int(v) => Some(*v),
                SymInt::Sym(_) => None,
            })
            .collect()
    }

    fn to_tensor(&self) -> Option<Tensor> {
        let values = self.ints()?;
        let proto = TensorProto {
            dims: self.dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(self.elem_type),
            raw_data: Some(if self.elem_type == DataType::Int32 as i32 {
                values
                    .iter()
                    .flat_map(|&v| (v as i32).to_le_bytes())
                    .collect()
            } else {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            }),
            ..Default::default()
        };
        Tensor::from_proto(&proto).ok()
    }
}

const INT64: i32 = DataType::Int64 as i32;
const INT32: i32 = DataType::Int32 as i32;

/// Folds every shape computation that can be folded, then drops the nodes left unused.
pub fn fold_shape_subgraphs(graph: &mut Graph) -> Result<(), IrError> {
    let mut known: HashMap<ValueId, SymTensor> = HashMap::new();
    for id in graph.value_ids() {
        if let Some(t) = graph.value(id).initializer() {
            if let Some(s) = sym_of_tensor(t) {
                known.insert(id, s);
            }
        }
    }
    let mut folded = vec![false; graph.nodes.len()];
    for id in graph.node_ids() {
        let node = graph.node(id);
        if let Op::Reshape { allowzero: false } = node.op {
            rewrite_reshape_target(graph, id, &known);
            continue;
        }
        let Some(result) = evaluate(graph, id, &known) else {
            continue;
        };
        let out = graph.node(id).outputs[0];
        if let Some(tensor) = result.to_tensor() {
            let value = graph.value_mut(out);
            value.elem_type = tensor.data_type();
            value.source = ValueSource::Initializer(tensor);
            folded[id.0 as usize] = true;
        }
        known.insert(out, result);
    }
    if folded.iter().any(|&f| f) {
        graph.retain_nodes(|id| !folded[id.0 as usize]);
    }
    graph.remove_unused();
    Ok(())
}

fn sym_of_tensor(t: &Tensor) -> Option<SymTensor> {
    let a = t.as_i64()?;
    if a.ndim() > 1 || a.len() > 64 {
        return None;
    }
    Some(SymTensor {
        dims: a.shape().to_vec(),
        data: a.iter().map(|&v| SymInt::Int(v)).collect(),
        elem_type: INT64,
    })
}

/// Replaces a Reshape's computed target by a constant when the only symbols in it are the data's
/// own dimensions at the same positions (written as 0).
fn rewrite_reshape_target(graph: &mut Graph, id: NodeId, known: &HashMap<ValueId, SymTensor>) {
    let Some(Some(target_id)) = graph.node(id).inputs.get(1).copied() else {
        return;
    };
    if graph.value(target_id).initializer().is_some() {
        return;
    }
    let (Some(target), Some(data)) = (known.get(&target_id), graph.input_shape(id, 0)) else {
        return;
    };
    let values: Option<Vec<i64>> = target
        .data
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            SymInt::Int(0) => None, // a literal 0 would change meaning next to a copied symbol
            SymInt::Int(v) => Some(*v),
            SymInt::Sym(s) => (data.dim(i) == Some(&Dim::Sym(s.clone()))).then_some(0),
        })
        .collect();
    let Some(values) = values else { return };
    let name = format!("{}_folded_shape", graph.value(target_id).name);
    let tensor = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[values.len()]), values).expect("1-d"));
    let new = graph.add_value(&name, ValueSource::Initializer(tensor));
    graph.nodes[id.0 as usize].inputs[1] = Some(new);
}

fn attr<'a>(attrs: &'a [AttributeProto], name: &str) -> Option<&'a AttributeProto> {
    attrs.iter().find(|a| a.name.as_deref() == Some(name))
}

/// Evaluates an integer shape op whose inputs are all known, or None.
fn evaluate(graph: &Graph, id: NodeId, known: &HashMap<ValueId, SymTensor>) -> Option<SymTensor> {
    let node = graph.node(id);
    if node.outputs.len() != 1 {
        return None;
    }
    let input = |i: usize| -> Option<&SymTensor> { known.get(&node.inputs.get(i).copied()??) };
    let opset = graph.meta.opset();
    match &node.op {
        Op::Identity => input(0).cloned(),
        Op::Concat { .. } => {
            let parts: Vec<&SymTensor> =
                (0..node.inputs.len()).map(input).collect::<Option<_>>()?;
            let elem_type = parts.first()?.elem_type;
            if parts.iter().any(|p| p.dims.len() != 1) {
                return None;
            }
            Some(SymTensor::vector(
                parts.iter().flat_map(|p| p.data.clone()).collect(),
                elem_type,
            ))
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let (a, b) = (input(0)?, input(1)?);
            let (x, y) = (a.ints()?, b.ints()?);
            let n = x.len().max(y.len());
            if !(x.len() == n || x.len() == 1) || !(y.len() == n || y.len() == 1) {
                return None;
            }
            let pick = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
            let data = (0..n)
                .map(|i| {
                    let (p, q) = (pick(&x, i), pick(&y, i));
                    Some(SymInt::Int(match node.op {
                        Op::Add => p.checked_add(q)?,
                        Op::Sub => p.checked_sub(q)?,
                        Op::Mul => p.checked_mul(q)?,
                        _ => p.checked_div(q)?,
                    }))
                })
                .collect::<Option<Vec<_>>>()?;
            let dims = if a.dims.len() >= b.dims.len() {
                a.dims.clone()
            } else {
                b.dims.clone()
            };
            Some(SymTensor {
                dims,
                data,
                elem_type: a.elem_type,
            })
        }
        Op::Opaque(proto) => {
            let domain = proto.domain.as_deref().unwrap_or("");
            if !domain.is_empty() && domain != "ai.onnx" {
                return None;
            }
            let attrs = &proto.attribute;
            match proto.op_type.as_deref()? {
                "Shape" => {
                    let shape = graph.input_shape(id, 0)?;
                    let r = shape.rank() as i64;
                    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                    let start = clamp(attr(attrs, "start").and_then(|a| a.i).unwrap_or(0));
                    let end = clamp(attr(attrs, "end").and_then(|a| a.i).unwrap_or(r));
                    let data = shape.0[start..end.max(start)]
                        .iter()
                        .map(|d| match d {
                            Dim::Known(v) => SymInt::Int(*v as i64),
                            Dim::Sym(s) if s != "?" => SymInt::Sym(s.clone()),
                            Dim::Sym(_) => SymInt::Sym(format!("?{}", id.0)),
                        })
                        .collect();
                    Some(SymTensor::vector(data, INT64))
                }
                "Gather" => {
                    let data = input(0)?;
                    let indices = input(1)?;
                    let axis = attr(attrs, "axis").and_then(|a| a.i).unwrap_or(0);
                    if data.dims.len() != 1 || axis != 0 && axis != -1 || indices.dims.len() > 1 {
                        return None;
                    }
                    let n = data.data.len() as i64;
                    let picked = indices
                        .ints()?
                        .into_iter()
                        .map(|i| {
                            let i = if i < 0 { i + n } else { i };
                            data.data.get(usize::try_from(i).ok()?).cloned()
                        })
                        .collect::<Option<Vec<_>>>()?;
                    Some(SymTensor {
                        dims: indices.dims.clone(),
                        data: picked,
                        elem_type: data.elem_type,
                    })
                }
                "Unsqueeze" | "Squeeze" => {
                    let data = input(0)?;
                    let axes = if opset >= 13 {
                        node.inputs
                            .get(1)
                            .copied()
                            .flatten()
                            .map(|_| input(1)?.ints())
                            .unwrap_or(Some(vec![]))?
                    } else {
                        attr(attrs, "axes")
                            .map(|a| a.ints.clone())
                            .unwrap_or_default()
                    };
                    let squeeze = proto.op_type.as_deref() == Some("Squeeze");
                    let dims = match (squeeze, data.dims.len(), axes.as_slice()) {
                        (false, 0, [0] | [-1]) => vec![1],
                        (true, 1, [0] | [-1] | []) if data.data.len() == 1 => vec![],
                        _ => return None,
                    };
                    Some(SymTensor {
                        dims,
                        ..data.clone()
                    })
                }
                "Cast" => {
                    let to = attr(attrs, "to").and_then(|a| a.i)? as i32;
                    let data = input(0)?;
                    (to == INT64 || to == INT32).then(|| SymTensor {
                        elem_type: to,
                        ..data.clone()
                    })
                }
                "Slice" => {
                    let data = input(0)?;
                    if data.dims.len() != 1 {
                        return None;
                    }
                    let (starts, ends, axes, steps) = if opset >= 10 {
                        let opt = |i: usize| match node.inputs.get(i).copied().flatten() {
                            Some(_) => input(i)?.ints().map(Some),
                            None => Some(None),
                        };
                        (input(1)?.ints()?, input(2)?.ints()?, opt(3)?, opt(4)?)
                    } else {
                        let ints = |n: &str| attr(attrs, n).map(|a| a.ints.clone());
                        (ints("starts")?, ints("ends")?, ints("axes"), None)
                    };
                    if starts.len() != 1
                        || ends.len() != 1
                        || axes.is_some_and(|a| a != [0] && a != [-1])
                    {
                        return None;
                    }
                    let step = steps.map_or(Some(1), |s| s.first().copied())?;
                    slice_1d(&data.data, starts[0], ends[0], step)
                        .map(|d| SymTensor::vector(d, data.elem_type))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// ONNX Slice on a vector, with the spec's clamping.
fn slice_1d(data: &[SymInt], start: i64, end: i64, step: i64) -> Option<Vec<SymInt>> {
    if step == 0 {
        return None;
    }
    let n = data.len() as i64;
    let resolve = |v: i64| if v < 0 { v + n } else { v };
    let (s, e) = (resolve(start), resolve(end));
    let out: Vec<SymInt> = if step > 0 {
        let (s, e) = (s.clamp(0, n), e.clamp(0, n));
        (s..e)
            .step_by(step as usize)
            .map(|i| data[i as usize].clone())
            .collect()
    } else {
        let (s, e) = (s.clamp(-1, n - 1), e.clamp(-1, n - 1));
        let mut v = Vec::new();
        let mut i = s;
        while i > e {
            v.push(data[i as usize].clone());
            i += step;
        }
        v
    };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slicing_clamps_like_onnx() {
        let d: Vec<SymInt> = (0..4).map(SymInt::Int).collect();
        let ints = |v: Vec<SymInt>| SymTensor::vector(v, INT64).ints().unwrap();
        assert_eq!(ints(slice_1d(&d, 1, i64::MAX, 1).unwrap()), vec![1, 2, 3]);
        assert_eq!(
            ints(slice_1d(&d, -1, i64::MIN, -1).unwrap()),
            vec![3, 2, 1, 0]
        );
        assert_eq!(ints(slice_1d(&d, 0, 2, 1).unwrap()), vec![0, 1]);
    }
}
