//! The backward pass: each node's gradient kernel in reverse graph order, reading the tape.

use super::node::{
    activation, binary, four_d, gemm_spec, input, node_err, optional, output, softmax_axis,
};
use super::tape::{Saved, Tape};
use crate::TrainError;
use ndarray::{ArrayD, Axis, Ix4, IxDyn};
use pare_ir::{Graph, NodeId, Op, PerValue, ValueId, ValueSource};
use pare_kernels::batchnorm::{self, OutputGradient};
use pare_kernels::conv;
use pare_kernels::elementwise::{self, Activation};
use pare_kernels::into_standard;
use pare_kernels::linear;
use pare_kernels::pool;

/// Back-propagates `grad` of value `from` (see `super::backward`); the gradient of each value
/// that received one.
pub(super) fn run(
    graph: &Graph,
    tape: &Tape,
    from: ValueId,
    grad: ArrayD<f32>,
) -> Result<PerValue<Option<ArrayD<f32>>>, TrainError> {
    let mut grads = PerValue::for_values(graph, None);
    grads[from] = Some(grad);
    // Which inputs of a node take a gradient: computed values and float initializers.
    let wanted_inputs = |id: NodeId| -> Vec<bool> {
        let needs = |v: ValueId| match &graph.value(v).source {
            ValueSource::Input => false,
            ValueSource::Initializer(t) => t.as_f32().is_some(),
            ValueSource::Node(_) => true,
        };
        graph
            .node(id)
            .inputs
            .iter()
            .map(|v| v.is_some_and(needs))
            .collect()
    };
    for id in graph.node_ids().collect::<Vec<_>>().into_iter().rev() {
        let node = graph.node(id);
        let Some(mut dy) = grads[node.outputs[0]].take() else {
            continue;
        };
        // A pool fused after an activation: the activation's output at each winner is the
        // pooled value, so its derivative applies here, before the gradient is routed.
        if let Some(act) = fused_activation_before(graph, tape, id) {
            act.backward_from_output(&output(tape, node), &mut dy);
        }
        // A pool that ran in BatchNorm's kernel hands its gradient to BatchNorm's backward
        // directly, which then stands for the pool, BatchNorm and any activation between.
        let pooled_batchnorm = match &tape.saved[id] {
            Saved::MaxPool {
                argmax,
                producer: Some(bn),
                ..
            } if matches!(graph.node(*bn).op, Op::BatchNorm { .. }) => Some((*bn, argmax)),
            _ => None,
        };
        let target = pooled_batchnorm.map_or(id, |(bn, _)| bn);
        let wants = wanted_inputs(target);
        let input_grads = match pooled_batchnorm {
            Some((bn, argmax)) => {
                let dy = into_standard(dy);
                let dy = OutputGradient::Pooled {
                    dy: dy.as_slice().expect("standard"),
                    argmax: argmax.as_slice().expect("fresh array"),
                };
                batchnorm_backward(graph, tape, bn, dy)?
            }
            None => backward_node(graph, tape, id, dy, &wants)?,
        };
        let node = graph.node(target);
        // Kernels may return a gradient for an optional input the node does not have.
        for ((g, v), want) in input_grads.into_iter().zip(&node.inputs).zip(&wants) {
            let (Some(g), Some(v), true) = (g, *v, *want) else {
                continue;
            };
            match &mut grads[v] {
                Some(acc) => *acc += &g,
                slot => *slot = Some(g),
            }
        }
        // Keep the gradient of node outputs only while needed; parameters keep theirs.
    }
    Ok(grads)
}

/// The activation fused between a producer and the MaxPool `pool`, if any.
fn fused_activation_before(graph: &Graph, tape: &Tape, pool: NodeId) -> Option<Activation> {
    let x = graph.node(pool).inputs.first().copied().flatten()?;
    let ValueSource::Node(a) = graph.value(x).source else {
        return None;
    };
    matches!(tape.saved[a], Saved::BeforePool)
        .then(|| activation(graph, tape, a))
        .flatten()
}

/// The gradients of BatchNorm node `id`'s inputs (x, scale, bias) from `dy`.
fn batchnorm_backward(
    graph: &Graph,
    tape: &Tape,
    id: NodeId,
    dy: OutputGradient,
) -> Result<Vec<Option<ArrayD<f32>>>, TrainError> {
    let (Op::BatchNorm { epsilon, .. }, Saved::BatchNorm(stats)) =
        (&graph.node(id).op, &tape.saved[id])
    else {
        unreachable!("a BatchNorm node with its forward state")
    };
    let get = |i| input(graph, tape, id, i).map(|a| a.iter().copied().collect::<Vec<f32>>());
    let (scale, mean, var) = (get(1)?, get(3)?, get(4)?);
    let x = input(graph, tape, id, 0)?;
    let (dx, ds, db) = batchnorm::backward(x, dy, &scale, &mean, &var, *epsilon, stats.as_ref());
    let shape = |i: usize| input(graph, tape, id, i).map(|a| a.raw_dim());
    Ok(vec![
        Some(dx),
        Some(ArrayD::from_shape_vec(shape(1)?, ds).expect("scale size")),
        Some(ArrayD::from_shape_vec(shape(2)?, db).expect("bias size")),
    ])
}

/// The gradients of the node's inputs from `dy`, the gradient of its output; ops whose input
/// gradient has the output's shape write it over `dy`. Every op has its arm, so a new op has
/// no backward pass until it is written here.
fn backward_node(
    graph: &Graph,
    tape: &Tape,
    id: NodeId,
    mut dy: ArrayD<f32>,
    wants: &[bool],
) -> Result<Vec<Option<ArrayD<f32>>>, TrainError> {
    let node = graph.node(id);
    let saved = &tape.saved[id];
    let y = || output(tape, node);
    let x = || input(graph, tape, id, 0);
    let want = |i: usize| wants.get(i).copied().unwrap_or(false);
    let no_backward = || node_err(graph, id, "no backward pass for this op");
    Ok(match &node.op {
        Op::Relu
        | Op::Clip
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::HardSigmoid { .. }
        | Op::HardSwish => {
            let act = activation(graph, tape, id).expect("an activation op");
            if matches!(saved, Saved::BeforePool) {
                // Fused before a pool, whose backward applied the derivative already.
            } else if act.output_determines_derivative() {
                // An activation that ran in place has no input kept; its output is enough.
                act.backward_from_output(&y(), &mut dy);
            } else {
                dy = act.backward(&x()?, &y(), &dy.view());
            }
            vec![Some(dy)]
        }
        // A max pool needs neither its input (which a fusion may not have kept) nor its output.
        Op::MaxPool(_) => {
            let Saved::MaxPool { window, argmax, .. } = saved else {
                return Err(no_backward());
            };
            let dy4 = dy.view().into_dimensionality::<Ix4>().expect("4-d");
            vec![Some(pool::max_backward(window, argmax, dy4).into_dyn())]
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let op = binary(&node.op).expect("a binary op");
            let x = x()?;
            let b = input(graph, tape, id, 1)?;
            let (da, db) = elementwise::binary_backward(op, &x, &b, &dy.view());
            vec![Some(da), Some(db)]
        }
        Op::Conv(_) => {
            let Saved::Conv(geo) = saved else {
                return Err(no_backward());
            };
            let x = x()?;
            let w = input(graph, tape, id, 1)?;
            let w = w.as_standard_layout();
            let dy4 = dy
                .view()
                .into_dimensionality::<Ix4>()
                .expect("conv output is 4-d");
            let (dx, dw, db) = conv::backward(
                geo,
                four_d(graph, id, &x)?,
                w.as_slice().expect("std"),
                dy4,
                want(0),
            );
            let dw = ArrayD::from_shape_vec(w.raw_dim(), dw).expect("weight size");
            let db = node.inputs.get(2).copied().flatten().map(|b| {
                ArrayD::from_shape_vec(
                    IxDyn(
                        &graph
                            .value(b)
                            .shape
                            .as_ref()
                            .and_then(|s| s.to_known())
                            .unwrap_or(vec![db.len()]),
                    ),
                    db.clone(),
                )
                .expect("bias size")
            });
            vec![dx.map(|d| d.into_dyn()), Some(dw), db]
        }
        Op::Gemm(g) => {
            let spec = gemm_spec(g);
            let x = x()?;
            let b = input(graph, tape, id, 1)?;
            let c = optional(graph, tape, id, 2);
            let (da, db, dc) =
                linear::gemm_backward(spec, &x, &b, c.as_ref().map(|c| c.shape()), &dy.view());
            vec![Some(da), Some(db), dc]
        }
        Op::MatMul => {
            let x = x()?;
            let b = input(graph, tape, id, 1)?;
            let (da, db) = linear::matmul_backward(&x, &b, &dy.view());
            vec![Some(da), Some(db)]
        }
        Op::BatchNorm { .. } => {
            let Saved::BatchNorm(_) = saved else {
                return Err(no_backward());
            };
            return batchnorm_backward(graph, tape, id, OutputGradient::Full(dy));
        }
        Op::AveragePool { .. } => {
            let Saved::AvgPool(geo, include) = saved else {
                return Err(no_backward());
            };
            vec![Some(
                pool::avg_backward(
                    geo,
                    dy.view().into_dimensionality::<Ix4>().expect("4-d"),
                    *include,
                )
                .into_dyn(),
            )]
        }
        Op::GlobalAveragePool => {
            let x = x()?;
            let inner: usize = x.shape()[2..].iter().product();
            let (n, c) = (x.shape()[0], x.shape()[1]);
            let per = dy
                .as_standard_layout()
                .into_shape_with_order((n, c, 1))
                .expect("n,c,1...")
                .mapv(|v| v / inner as f32);
            let dx = per
                .broadcast((n, c, inner))
                .expect("broadcast")
                .to_owned()
                .into_shape_with_order(x.raw_dim())
                .expect("same count");
            vec![Some(dx)]
        }
        Op::Flatten { .. } | Op::Reshape { .. } => vec![Some(
            into_standard(dy)
                .into_shape_with_order(x()?.raw_dim())
                .expect("same count"),
        )],
        Op::Concat { axis } => {
            let a = softmax_axis(*axis, x()?.ndim());
            let mut start = 0;
            (0..node.inputs.len())
                .map(|i| {
                    let len = input(graph, tape, id, i)?.shape()[a];
                    let part = dy
                        .slice_axis(Axis(a), (start..start + len).into())
                        .to_owned();
                    start += len;
                    Ok(Some(part))
                })
                .collect::<Result<_, TrainError>>()?
        }
        Op::Dropout { .. } => {
            if let Saved::Dropout(mask) = saved {
                dy *= mask;
            }
            vec![Some(dy)]
        }
        Op::Identity => vec![Some(dy)],
        Op::Softmax { axis } => vec![Some(elementwise::softmax_backward(
            &y(),
            &dy.view(),
            softmax_axis(*axis, x()?.ndim()),
        ))],
        // Forward refuses it first; a tape of another graph ends here.
        Op::Opaque(_) => return Err(no_backward()),
    })
}
