//! Shape inference for the modelled ops. Opaque ops keep the shapes the model declares.

use crate::check;
use crate::graph::{Graph, NodeId, ValueSource};
use crate::shape::{normalize_axis, Dim, Shape};
use crate::tensor::element_count;
use crate::{IrError, Op, Window};

/// Infers the shape and element type of every node output, in order. A node whose inputs have
/// unknown shapes gets unknown (or declared) output shapes; a node whose inputs contradict its op
/// is an error naming it.
pub fn infer_shapes(graph: &mut Graph) -> Result<(), IrError> {
    infer(graph, true)
}

/// As `infer_shapes`, but an input whose shape is unknown only leaves the output unknown: what
/// import runs before folding, which may yet make that shape known (a weight an Opaque Transpose
/// computes from a constant).
pub(crate) fn infer_shapes_lenient(graph: &mut Graph) -> Result<(), IrError> {
    infer(graph, false)
}

fn infer(graph: &mut Graph, strict: bool) -> Result<(), IrError> {
    for v in &mut graph.values {
        if let ValueSource::Initializer(t) = &v.source {
            v.shape = Some(Shape::known(&t.shape()));
            v.elem_type = t.data_type();
        }
    }
    // Declared shapes (Opaque outputs keep theirs) are checked here, inferred ones per node.
    for v in &graph.values {
        if let Some(problem) = v.shape.as_ref().and_then(too_large) {
            return Err(IrError::Tensor {
                tensor: v.name.clone(),
                problem,
            });
        }
    }
    for id in graph.node_ids() {
        let inferred = check::check_arity(graph, id)
            .and_then(|()| check::check_types(graph, id))
            .and_then(|()| infer_node(graph, id, strict))
            .and_then(|shapes| {
                let outputs = &graph.node(id).outputs;
                for (shape, &o) in shapes.iter().zip(outputs) {
                    if let Some(problem) = shape.as_ref().and_then(too_large) {
                        return Err(format!("output '{}': {problem}", graph.value(o).name));
                    }
                }
                Ok(shapes)
            })
            .map_err(|problem| {
                let node = graph.node(id);
                IrError::Node {
                    node: node.name.clone(),
                    op: node.op.op_type().to_string(),
                    problem,
                }
            })?;
        let first_elem = graph
            .node(id)
            .inputs
            .first()
            .copied()
            .flatten()
            .map_or(0, |v| graph.value(v).elem_type);
        let outputs = graph.node(id).outputs.clone();
        let opaque = matches!(graph.node(id).op, Op::Opaque(_));
        for (i, o) in outputs.into_iter().enumerate() {
            let value = graph.value_mut(o);
            if let Some(shape) = inferred.get(i).cloned().flatten() {
                value.shape = Some(shape);
            }
            // Opaque outputs keep the type the model declares for them (0 if none).
            if !opaque {
                value.elem_type = first_elem;
            }
        }
    }
    Ok(())
}

/// The most elements one value may have per sample (symbols counted as 1): 2^30, 4 GiB of
/// float32, eight times the largest activation of a 2048×1024 segmentation network. Beyond it a
/// shape is an attribute gone wrong, and running it would only exhaust memory.
pub const MAX_VALUE_ELEMENTS: usize = 1 << 30;

/// Why a shape is refused, if it has more elements than `MAX_VALUE_ELEMENTS` (symbols counted as
/// 1): every shape in a graph passes this, so no later product of its dimensions can overflow and
/// no activation pare computes is absurdly large.
fn too_large(shape: &Shape) -> Option<String> {
    let dims: Vec<usize> = shape.0.iter().map(|d| d.known().unwrap_or(1)).collect();
    element_count(&dims)
        .is_none_or(|n| n > MAX_VALUE_ELEMENTS)
        .then(|| {
            format!(
                "shape {shape} has more than 2^30 elements per sample, more than pare handles; \
                 fix the shape the model declares or the attributes that produce it"
            )
        })
}

/// What a node whose input `index` has no shape infers: an error saying why when `strict`,
/// otherwise an unknown output.
fn unknown(
    strict: bool,
    graph: &Graph,
    id: NodeId,
    index: usize,
    what: &str,
) -> Result<Vec<Option<Shape>>, String> {
    if strict {
        Err(unknown_shape(graph, id, index, what))
    } else {
        Ok(vec![None])
    }
}

/// Why input `index` of a node has no shape: the Opaque node (or undeclared input) it comes
/// from, found by walking back through nodes whose shape is unknown.
fn unknown_shape(graph: &Graph, id: NodeId, index: usize, what: &str) -> String {
    let mut origin = graph.node(id).inputs.get(index).copied().flatten();
    while let Some(v) = origin {
        let value = graph.value(v);
        let ValueSource::Node(n) = value.source else {
            return format!(
                "{what} is unknown: graph input '{}' declares no shape; declare it, or pass \
                 --input-shape",
                value.name
            );
        };
        let producer = graph.node(n);
        if let Op::Opaque(_) = producer.op {
            return format!(
                "{what} is unknown: it comes from node '{}' ({}), which pare does not model and \
                 whose output shape the model does not declare; replace that op when exporting \
                 (or declare its output in value_info)",
                producer.name,
                producer.op.op_type()
            );
        }
        origin = producer
            .inputs
            .iter()
            .flatten()
            .copied()
            .find(|&i| graph.value(i).shape.is_none());
    }
    format!("{what} is unknown")
}

/// Multidirectional (numpy) broadcasting of two shapes.
pub fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let at = |s: &Shape, i: usize| -> Dim {
        let offset = rank - s.rank();
        if i < offset {
            Dim::Known(1)
        } else {
            s.0[i - offset].clone()
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Ok(x),
            (Dim::Known(1), y) => Ok(y),
            (x, Dim::Known(1)) => Ok(x),
            (Dim::Known(x), Dim::Known(y)) => {
                Err(format!("cannot broadcast {a} with {b} ({x} vs {y})"))
            }
            (Dim::Known(x), Dim::Sym(_)) | (Dim::Sym(_), Dim::Known(x)) => Ok(Dim::Known(x)),
            (x @ Dim::Sym(_), Dim::Sym(_)) => Ok(x),
        })
        .collect::<Result<_, _>>()
        .map(Shape)
}

fn infer_node(graph: &Graph, id: NodeId, strict: bool) -> Result<Vec<Option<Shape>>, String> {
    let node = graph.node(id);
    let input = |i: usize| graph.input_shape(id, i);
    let Some(x) = input(0).cloned() else {
        return Ok(vec![]);
    };
    let expect_rank = |s: &Shape, min: usize, what: &str| {
        if s.rank() >= min {
            Ok(())
        } else {
            Err(format!("{what} has shape {s}, needs rank {min} or more"))
        }
    };
    let shape = match &node.op {
        Op::Conv(c) => {
            let Some(w) = input(1) else {
                return unknown(strict, graph, id, 1, "the weight shape");
            };
            let k = c.window.kernel_shape.len();
            expect_rank(&x, k + 2, "the input")?;
            if w.rank() != k + 2 {
                return Err(format!("weight shape {w} does not match a {k}-d kernel"));
            }
            if let Some(spatial) = Shape(w.0[2..].to_vec()).to_known() {
                if spatial != c.window.kernel_shape {
                    return Err(format!(
                        "kernel_shape {:?} disagrees with the weight's shape {w}",
                        c.window.kernel_shape
                    ));
                }
            }
            check::check_vector(graph, id, 2, "the bias", &w.0[0])?;
            let (Some(wcin), Some(m)) = (w.0[1].known(), w.0[0].known()) else {
                return Ok(vec![None]);
            };
            // Input channels the model leaves open are not checked, but the output is still
            // inferred: a shape kept from before would go stale when surgery slices the weight.
            let cin = x.0[1].known();
            let needs = wcin.checked_mul(c.group);
            if cin.is_some_and(|cin| needs != Some(cin)) || m % c.group != 0 {
                let cin = cin.map_or("?".into(), |cin| cin.to_string());
                return Err(format!(
                    "input has {cin} channels, but a weight {w} with group {} needs {} and an \
                     output count the group divides",
                    c.group,
                    needs.map_or("more than memory holds".into(), |n| n.to_string())
                ));
            }
            let mut dims = vec![x.0[0].clone(), Dim::Known(m)];
            dims.extend(window_output(&c.window, &x, false)?);
            Shape(dims)
        }
        Op::MaxPool(p) | Op::AveragePool { pool: p, .. } => {
            let k = p.window.kernel_shape.len();
            expect_rank(&x, k + 2, "the input")?;
            let mut dims = x.0[..2].to_vec();
            dims.extend(window_output(&p.window, &x, p.ceil_mode)?);
            Shape(dims)
        }
        Op::GlobalAveragePool => {
            expect_rank(&x, 3, "the input")?;
            let mut dims = x.0[..2].to_vec();
            dims.extend(std::iter::repeat_n(Dim::Known(1), x.rank() - 2));
            Shape(dims)
        }
        Op::Gemm(g) => {
            let Some(b) = input(1) else {
                return unknown(strict, graph, id, 1, "the shape of B");
            };
            if x.rank() != 2 || b.rank() != 2 {
                return Err(format!("Gemm needs 2-d inputs, found {x} and {b}"));
            }
            let (m, ka) = if g.trans_a {
                (&x.0[1], &x.0[0])
            } else {
                (&x.0[0], &x.0[1])
            };
            let (kb, n) = if g.trans_b {
                (&b.0[1], &b.0[0])
            } else {
                (&b.0[0], &b.0[1])
            };
            if let (Some(ka), Some(kb)) = (ka.known(), kb.known()) {
                if ka != kb {
                    return Err(format!("A {x} and B {b} disagree on K ({ka} vs {kb})"));
                }
            }
            if let Some(c) = input(2) {
                check::check_gemm_bias(c, &[m.clone(), n.clone()])?;
            }
            Shape(vec![m.clone(), n.clone()])
        }
        Op::MatMul => {
            let Some(b) = input(1) else {
                return unknown(strict, graph, id, 1, "the shape of B");
            };
            matmul_shape(&x, b)?
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let Some(b) = input(1) else {
                return unknown(strict, graph, id, 1, "the second input's shape");
            };
            broadcast(&x, b)?
        }
        Op::BatchNorm { .. } => {
            expect_rank(&x, 2, "the input")?;
            for (i, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
                check::check_vector(graph, id, i, what, &x.0[1])?;
            }
            x
        }
        Op::Relu
        | Op::Clip
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::HardSigmoid { .. }
        | Op::HardSwish
        | Op::Dropout { .. }
        | Op::Identity => x,
        Op::Softmax { axis } => {
            normalize_axis(*axis, x.rank())
                .ok_or(format!("axis {axis} is out of range for input {x}"))?;
            x
        }
        Op::Flatten { axis } => {
            let r = x.rank() as i64;
            let a = if *axis < 0 { axis + r } else { *axis };
            if !(0..=r).contains(&a) {
                return Err(format!("axis {axis} is out of range for input {x}"));
            }
            let a = a as usize;
            let product = |dims: &[Dim]| -> Dim {
                match dims {
                    [d] => d.clone(),
                    _ => dims
                        .iter()
                        .map(Dim::known)
                        .product::<Option<usize>>()
                        .map_or(Dim::Sym("?".into()), Dim::Known),
                }
            };
            Shape(vec![product(&x.0[..a]), product(&x.0[a..])])
        }
        Op::Reshape { allowzero } => {
            let Some(target) = graph.const_input(id, 1).and_then(|t| t.as_i64()) else {
                return Ok(vec![None]);
            };
            if target.ndim() != 1 {
                return Err(format!(
                    "the shape input must be a vector, not of shape {:?}",
                    target.shape()
                ));
            }
            reshape_shape(&x, target.iter().copied().collect(), *allowzero)?
        }
        Op::Concat { axis } => {
            let a = normalize_axis(*axis, x.rank())
                .ok_or(format!("axis {axis} is out of range for {x}"))?;
            let mut dims = x.0.clone();
            let mut total = Some(0usize);
            for i in 0..node.inputs.len() {
                let Some(s) = input(i) else {
                    return unknown(strict, graph, id, i, "an input's shape");
                };
                if s.rank() != x.rank() {
                    return Err(format!(
                        "inputs of rank {} and {} cannot be concatenated",
                        x.rank(),
                        s.rank()
                    ));
                }
                total = total
                    .zip(s.0[a].known())
                    .and_then(|(t, d)| t.checked_add(d));
            }
            dims[a] = total.map_or(Dim::Sym("?".into()), Dim::Known);
            Shape(dims)
        }
        Op::Opaque(_) => return Ok(vec![]),
    };
    Ok(vec![Some(shape)])
}

/// The spatial output dims of a window over input `x` (NC + spatial): open ('?') while any input
/// spatial dim is open (an exporter left the image size free), so channels still flow.
fn window_output(window: &Window, x: &Shape, ceil_mode: bool) -> Result<Vec<Dim>, String> {
    let Some(spatial) = x.0[2..].iter().map(Dim::known).collect::<Option<Vec<_>>>() else {
        return Ok(vec![Dim::Sym("?".into()); x.rank() - 2]);
    };
    let out = window
        .output_size(&spatial, ceil_mode)
        .ok_or_else(|| format!("window {:?} does not fit input {x}", window.kernel_shape))?;
    Ok(out.into_iter().map(Dim::Known).collect())
}

fn matmul_shape(a: &Shape, b: &Shape) -> Result<Shape, String> {
    if a.rank() == 0 || b.rank() == 0 {
        return Err("MatMul inputs must have rank 1 or more".into());
    }
    let a2 = if a.rank() == 1 {
        Shape(vec![Dim::Known(1), a.0[0].clone()])
    } else {
        a.clone()
    };
    let b2 = if b.rank() == 1 {
        Shape(vec![b.0[0].clone(), Dim::Known(1)])
    } else {
        b.clone()
    };
    let (ra, rb) = (a2.rank(), b2.rank());
    if let (Some(ka), Some(kb)) = (a2.0[ra - 1].known(), b2.0[rb - 2].known()) {
        if ka != kb {
            return Err(format!("{a} and {b} disagree on K ({ka} vs {kb})"));
        }
    }
    let batch = broadcast(
        &Shape(a2.0[..ra - 2].to_vec()),
        &Shape(b2.0[..rb - 2].to_vec()),
    )?;
    let mut dims = batch.0;
    if a.rank() > 1 {
        dims.push(a2.0[ra - 2].clone());
    }
    if b.rank() > 1 {
        dims.push(b2.0[rb - 1].clone());
    }
    Ok(Shape(dims))
}

/// The output of Reshape: 0 copies the input dimension (unless allowzero), -1 takes the rest.
pub fn reshape_shape(x: &Shape, target: Vec<i64>, allowzero: bool) -> Result<Shape, String> {
    let mut dims: Vec<Option<Dim>> = Vec::with_capacity(target.len());
    for (i, &t) in target.iter().enumerate() {
        dims.push(match t {
            0 if !allowzero => Some(
                x.0.get(i)
                    .cloned()
                    .ok_or(format!("0 at position {i} copies a dimension {x} lacks"))?,
            ),
            -1 => None,
            t if t >= 0 => Some(Dim::Known(t as usize)),
            t => return Err(format!("invalid target dimension {t}")),
        });
    }
    let unknown = dims.iter().filter(|d| d.is_none()).count();
    if unknown > 1 {
        return Err("more than one -1 in the target shape".into());
    }
    // Symbols copied by 0 cancel out; any other symbol makes -1 unknowable.
    let copied: Vec<&Dim> = dims
        .iter()
        .flatten()
        .filter(|d| matches!(d, Dim::Sym(_)))
        .collect();
    let mut input_syms: Vec<&Dim> = x.0.iter().filter(|d| matches!(d, Dim::Sym(_))).collect();
    for c in &copied {
        if let Some(p) = input_syms.iter().position(|s| s == c) {
            input_syms.remove(p);
        } else {
            return Ok(Shape(
                dims.into_iter()
                    .map(|d| d.unwrap_or(Dim::Sym("?".into())))
                    .collect(),
            ));
        }
    }
    let known_in =
        x.0.iter()
            .filter_map(Dim::known)
            .try_fold(1usize, usize::checked_mul)
            .ok_or(format!("input {x} has more elements than memory can hold"))?;
    let known_out = dims
        .iter()
        .flatten()
        .filter_map(Dim::known)
        .try_fold(1usize, usize::checked_mul)
        .ok_or(format!(
            "target {target:?} has more elements than memory can hold"
        ))?;
    let rest = if let ([sym], true) = (input_syms.as_slice(), known_in == known_out && unknown == 1)
    {
        // The only open input dimension is what -1 stands for (a flattened batch).
        Some((*sym).clone())
    } else if input_syms.is_empty() {
        if unknown == 0 {
            if known_in != known_out {
                return Err(format!(
                    "cannot reshape {x} ({known_in} elements) to {target:?}"
                ));
            }
            None
        } else {
            if known_out == 0 || !known_in.is_multiple_of(known_out) {
                return Err(format!("cannot reshape {x} to {target:?}"));
            }
            Some(Dim::Known(known_in / known_out))
        }
    } else {
        Some(Dim::Sym("?".into()))
    };
    Ok(Shape(
        dims.into_iter()
            .map(|d| d.or_else(|| rest.clone()).unwrap_or(Dim::Sym("?".into())))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(dims: &[&str]) -> Shape {
        Shape(
            dims.iter()
                .map(|d| d.parse().map(Dim::Known).unwrap_or(Dim::Sym(d.to_string())))
                .collect(),
        )
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast(&s(&["N", "8", "4", "4"]), &s(&["8", "1", "1"])).unwrap(),
            s(&["N", "8", "4", "4"])
        );
        assert!(broadcast(&s(&["3"]), &s(&["4"])).is_err());
    }

    #[test]
    fn reshape_copies_and_infers() {
        assert_eq!(
            reshape_shape(&s(&["N", "16", "5", "5"]), vec![0, -1], false).unwrap(),
            s(&["N", "400"])
        );
        assert_eq!(
            reshape_shape(&s(&["2", "16", "5", "5"]), vec![2, -1], false).unwrap(),
            s(&["2", "400"])
        );
        assert!(reshape_shape(&s(&["2", "3"]), vec![4, -1], false).is_err());
        assert_eq!(
            reshape_shape(&s(&["N", "16", "5", "5"]), vec![-1, 400], false).unwrap(),
            s(&["N", "400"])
        );
    }

    #[test]
    fn matmul_handles_vectors_and_batches() {
        assert_eq!(
            matmul_shape(&s(&["N", "4"]), &s(&["4", "3"])).unwrap(),
            s(&["N", "3"])
        );
        assert_eq!(
            matmul_shape(&s(&["4"]), &s(&["2", "4", "3"])).unwrap(),
            s(&["2", "3"])
        );
    }
}
