//! The forward pass: each node's kernel in graph order, with the fusions decided up front,
//! writing the tape.

use super::fusion::{fused_epilogue, fused_pool, fusions, runs_epilogue, Fusion};
use super::node::{
    activation, binary, four_d, gemm_spec, input, node_err, optional, scalar_input, softmax_axis,
    window_2d,
};
use super::tape::{Mode, Saved, Tape};
use crate::TrainError;
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};
use pare_ir::{Graph, NodeId, Op, PerNode, Pool, Tensor, ValueId};
use pare_kernels::batchnorm;
use pare_kernels::conv::{self, ConvGeometry};
use pare_kernels::elementwise;
use pare_kernels::linear;
use pare_kernels::pool;

/// Runs the graph on `input`, fed to graph input `first` (see `super::forward`).
pub(super) fn run(
    graph: &Graph,
    first: ValueId,
    input: ArrayD<f32>,
    mode: Mode,
    mean_inputs: bool,
    dropout: Option<u64>,
) -> Result<Tape, TrainError> {
    let mut tape = Tape::new(graph);
    tape.values[first] = Some(input);
    let fusions = fusions(graph, &tape, mode);
    let mut fused = PerNode::for_nodes(graph, false);
    for id in graph.node_ids() {
        if fused[id] {
            continue;
        }
        let fusion = fusions[id];
        let out = forward_node(graph, &tape, id, mode, mean_inputs, dropout, fusion)?;
        let mut output = graph.node(id).outputs[0];
        if let Some(reader) = fusion.activation {
            fused[reader] = true;
            if fusion.max_pool.is_some() {
                tape.saved[reader] = Saved::BeforePool;
            }
            output = graph.node(reader).outputs[0];
        }
        if let (Some(pool), Some(saved)) = (fusion.max_pool, out.pool) {
            fused[pool] = true;
            tape.saved[pool] = saved;
            output = graph.node(pool).outputs[0];
        }
        check_inferred(graph, id, output, &out.value)?;
        tape.values[output] = Some(out.value);
        tape.plane_sums[output] = out.plane_sums;
        tape.saved[id] = out.saved;
        tape.mean_inputs[id] = out.mean;
    }
    Ok(tape)
}

/// Refuses an output whose shape disagrees with what import inferred for it (the batch aside):
/// the kernels after it size their work from those shapes, so a model whose run contradicts its
/// own shapes stops here with the node's name instead of indexing out of bounds later.
fn check_inferred(
    graph: &Graph,
    id: NodeId,
    output: ValueId,
    value: &ArrayD<f32>,
) -> Result<(), TrainError> {
    let Some(shape) = &graph.value(output).shape else {
        return Ok(());
    };
    let fits = shape.rank() == value.ndim()
        && shape
            .0
            .iter()
            .zip(value.shape())
            .skip(1)
            .all(|(d, &n)| d.known().is_none_or(|k| k == n));
    if fits {
        return Ok(());
    }
    let node = graph.node(id);
    Err(TrainError::Node {
        node: node.name.clone(),
        op: node.op.op_type().to_string(),
        problem: format!(
            "computed shape {:?}, but the model's shapes say {shape}",
            value.shape()
        ),
    })
}

/// What a node's forward pass gives the tape.
struct NodeOutput {
    value: ArrayD<f32>,
    saved: Saved,
    /// The RLS mean input, when asked for.
    mean: Option<Vec<f32>>,
    /// The saved state of a MaxPool fused into the node (see `Fusion`).
    pool: Option<Saved>,
    /// Σ and Σ² of each output plane, for the BatchNorm that reads the output (see `Fusion`).
    plane_sums: Option<Vec<(f64, f64)>>,
}

fn forward_node(
    graph: &Graph,
    tape: &Tape,
    id: NodeId,
    mode: Mode,
    want_mean: bool,
    dropout: Option<u64>,
    fusion: Fusion,
) -> Result<NodeOutput, TrainError> {
    let node = graph.node(id);
    let err = |p: String| node_err(graph, id, p);
    let x = input(graph, tape, id, 0)?;
    let then = fusion.activation.and_then(|a| activation(graph, tape, a));
    let (mut pool, mut plane_sums) = (None, None);
    let (mut value, saved, mean) = match &node.op {
        Op::Relu
        | Op::Clip
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::HardSigmoid { .. }
        | Op::HardSwish => {
            let act = activation(graph, tape, id).expect("an activation op");
            (act.forward(&x), Saved::Nothing, None)
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let op = binary(&node.op).expect("a binary op");
            let b = input(graph, tape, id, 1)?;
            let y = elementwise::binary_forward(op, &x, &b).ok_or_else(|| {
                err(format!(
                    "shapes {:?} and {:?} do not broadcast",
                    x.shape(),
                    b.shape()
                ))
            })?;
            (y, Saved::Nothing, None)
        }
        Op::Conv(c) => {
            let x4 = four_d(graph, id, &x)?;
            let w = input(graph, tape, id, 1)?;
            let (b, ci, h, wd) = x4.dim();
            let ws = w.shape();
            let geo = ConvGeometry {
                batch: b,
                c_in: ci,
                c_out: ws[0],
                group: c.group,
                window: window_2d(&c.window, false, h, wd).map_err(err)?,
            };
            if ci != ws[1] * c.group {
                return Err(err(format!(
                    "input has {ci} channels, weight {ws:?} with group {}",
                    c.group
                )));
            }
            let w = w.as_standard_layout();
            let bias = optional(graph, tape, id, 2);
            let bias1 = bias
                .as_ref()
                .map(|b| b.view().into_shape_with_order(b.len()).expect("1-d bias"));
            let w = w.as_slice().expect("std");
            let epilogue = fused_epilogue(graph, fusion, then, geo.window.out)?;
            let out = conv::forward(&geo, x4, w, bias1, epilogue, want_mean);
            pool = fused_pool(id, epilogue, out.argmax);
            plane_sums = out.plane_sums;
            let mean = out.mean_patch.map(|m| m.to_vec());
            (out.y.into_dyn(), Saved::Conv(geo), mean)
        }
        Op::Gemm(g) => {
            let spec = gemm_spec(g);
            let b = input(graph, tape, id, 1)?;
            if x.ndim() != 2 || b.ndim() != 2 {
                return Err(err(format!(
                    "Gemm needs 2-d inputs, got {:?} and {:?}",
                    x.shape(),
                    b.shape()
                )));
            }
            let c = optional(graph, tape, id, 2);
            // Shapes were inferred with open dimensions; check what this batch really gives.
            let (m, ka) = if g.trans_a {
                (x.shape()[1], x.shape()[0])
            } else {
                (x.shape()[0], x.shape()[1])
            };
            let (kb, n) = if g.trans_b {
                (b.shape()[1], b.shape()[0])
            } else {
                (b.shape()[0], b.shape()[1])
            };
            let c_fits = c
                .as_ref()
                .is_none_or(|c| c.broadcast(IxDyn(&[m, n])).is_some());
            if ka != kb || !c_fits {
                return Err(err(format!(
                    "A {:?} and B {:?} (C {:?}) do not multiply on this batch",
                    x.shape(),
                    b.shape(),
                    c.as_ref().map(|c| c.shape().to_vec())
                )));
            }
            let mean = want_mean
                .then(|| {
                    if g.trans_a {
                        x.mean_axis(Axis(1))
                    } else {
                        x.mean_axis(Axis(0))
                    }
                })
                .flatten()
                .map(|m| m.iter().copied().collect());
            (
                linear::gemm_forward(spec, &x, &b, c.as_ref()),
                Saved::Nothing,
                mean,
            )
        }
        Op::MatMul => {
            let b = input(graph, tape, id, 1)?;
            let y = linear::matmul_forward(&x, &b).ok_or_else(|| {
                err(format!(
                    "training supports A[..., K] × B[K, N]; got {:?} × {:?}",
                    x.shape(),
                    b.shape()
                ))
            })?;
            let mean = want_mean.then(|| {
                let k = *x.shape().last().expect("rank checked");
                let rows = x.len() / k.max(1);
                x.as_standard_layout()
                    .into_shape_with_order((rows, k))
                    .expect("rows")
                    .mean_axis(Axis(0))
                    .map(|m| m.to_vec())
            });
            (y, Saved::Nothing, mean.flatten())
        }
        Op::BatchNorm { epsilon, .. } => {
            let get =
                |i| input(graph, tape, id, i).map(|a| a.iter().copied().collect::<Vec<f32>>());
            let (scale, bias, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
            let plane = match fusion.max_pool {
                Some(p) => four_d(graph, p, &x).map(|x4| (x4.dim().2, x4.dim().3))?,
                None => (0, 0),
            };
            let epilogue = fused_epilogue(graph, fusion, then, plane)?;
            let training = mode == Mode::Train;
            let sums = node.inputs[0].and_then(|v| tape.plane_sums[v].as_deref());
            let out = batchnorm::forward(
                x, &scale, &bias, &mean, &var, *epsilon, training, epilogue, sums,
            );
            pool = fused_pool(id, epilogue, out.argmax);
            (out.y, Saved::BatchNorm(out.stats), None)
        }
        Op::MaxPool(Pool { window, ceil_mode }) => {
            let x4 = four_d(graph, id, &x)?;
            let geo = window_2d(window, *ceil_mode, x4.dim().2, x4.dim().3).map_err(err)?;
            let (y, arg) = pool::max_forward(&geo, x4);
            let saved = Saved::MaxPool {
                window: geo,
                argmax: arg,
                producer: None,
            };
            (y.into_dyn(), saved, None)
        }
        Op::AveragePool {
            pool: Pool { window, ceil_mode },
            count_include_pad,
        } => {
            let x4 = four_d(graph, id, &x)?;
            let geo = window_2d(window, *ceil_mode, x4.dim().2, x4.dim().3).map_err(err)?;
            (
                pool::avg_forward(&geo, x4, *count_include_pad).into_dyn(),
                Saved::AvgPool(geo, *count_include_pad),
                None,
            )
        }
        Op::GlobalAveragePool => {
            let (n, c) = (x.shape()[0], x.shape()[1]);
            let inner: usize = x.shape()[2..].iter().product();
            let flat = x
                .as_standard_layout()
                .into_shape_with_order((n, c, inner))
                .expect("same count")
                .mean_axis(Axis(2))
                .expect("non-empty");
            let mut shape = vec![n, c];
            shape.extend(std::iter::repeat_n(1, x.ndim() - 2));
            (
                flat.into_shape_with_order(IxDyn(&shape))
                    .expect("same count"),
                Saved::Nothing,
                None,
            )
        }
        Op::Flatten { axis } => {
            let a = if *axis < 0 {
                (*axis + x.ndim() as i64) as usize
            } else {
                *axis as usize
            };
            let outer: usize = x.shape()[..a].iter().product();
            (
                x.as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(IxDyn(&[outer, x.len() / outer.max(1)]))
                    .expect("same count"),
                Saved::Nothing,
                None,
            )
        }
        Op::Reshape { allowzero } => {
            let target = graph
                .const_input(id, 1)
                .and_then(Tensor::as_i64)
                .ok_or_else(|| err("the target shape is not a constant".into()))?;
            let t: Vec<i64> = target.iter().copied().collect();
            let shape = reshape_target(x.shape(), &t, *allowzero)
                .ok_or_else(|| err(format!("cannot reshape {:?} to {t:?}", x.shape())))?;
            (
                x.as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(IxDyn(&shape))
                    .expect("checked count"),
                Saved::Nothing,
                None,
            )
        }
        Op::Concat { axis } => {
            let a = softmax_axis(*axis, x.ndim());
            let parts: Vec<ArrayViewD<f32>> = (0..node.inputs.len())
                .map(|i| input(graph, tape, id, i))
                .collect::<Result<_, _>>()?;
            (
                ndarray::concatenate(Axis(a), &parts).map_err(|e| err(e.to_string()))?,
                Saved::Nothing,
                None,
            )
        }
        Op::Dropout { ratio } => {
            // Opsets before 12 give the ratio as an attribute, later ones as input 1.
            let ratio = ratio.unwrap_or_else(|| scalar_input(graph, tape, id, 1, 0.5));
            if !(0.0..1.0).contains(&ratio) {
                return Err(err(format!(
                    "dropout ratio {ratio} is outside [0, 1); fix the model's ratio"
                )));
            }
            match dropout {
                Some(seed) if ratio > 0.0 => {
                    // One stream per node, so two Dropouts of one pass drop independently.
                    let seed = seed ^ (u64::from(id.0) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let mask = elementwise::dropout_mask(x.shape(), ratio, seed);
                    (&x * &mask, Saved::Dropout(mask), None)
                }
                _ => (x.to_owned(), Saved::Nothing, None),
            }
        }
        Op::Identity => (x.to_owned(), Saved::Nothing, None),
        Op::Softmax { axis } => (
            elementwise::softmax_forward(&x, softmax_axis(*axis, x.ndim())),
            Saved::Nothing,
            None,
        ),
        Op::Opaque(_) => {
            return Err(err(
                "pare cannot run this op; only the modelled CNN ops can be trained".into(),
            ))
        }
    };
    // Kernels that run an epilogue applied the activation already.
    if let Some(act) = then.filter(|_| !runs_epilogue(&node.op)) {
        match value.as_slice_memory_order_mut() {
            Some(values) => act.apply_in_place(values),
            None => value.mapv_inplace(|v| act.apply(v)),
        }
    }
    Ok(NodeOutput {
        value,
        saved,
        mean,
        pool,
        plane_sums,
    })
}

/// The target of a Reshape for an input of `shape` (0 copies, -1 takes the rest).
fn reshape_target(shape: &[usize], target: &[i64], allowzero: bool) -> Option<Vec<usize>> {
    let total: usize = shape.iter().product();
    let mut out: Vec<Option<usize>> = target
        .iter()
        .enumerate()
        .map(|(i, &t)| match t {
            0 if !allowzero => shape.get(i).copied(),
            -1 => None,
            t => usize::try_from(t).ok(),
        })
        .collect();
    let known: usize = out.iter().flatten().product();
    if let Some(slot) = out.iter_mut().find(|d| d.is_none()) {
        *slot = Some(total.checked_div(known)?);
    }
    let out: Vec<usize> = out.into_iter().collect::<Option<_>>()?;
    (out.iter().product::<usize>() == total).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_targets_copy_and_infer() {
        assert_eq!(
            reshape_target(&[4, 16, 5, 5], &[0, -1], false),
            Some(vec![4, 400])
        );
        assert_eq!(
            reshape_target(&[4, 16, 5, 5], &[-1, 400], false),
            Some(vec![4, 400])
        );
        assert_eq!(reshape_target(&[4, 6], &[5, -1], false), None);
    }
}
