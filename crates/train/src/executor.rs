//! Runs a Graph forward on a batch, keeping what the backward pass needs (the tape), and runs
//! it backward from the gradient of one output.
//!
//! Reads parameters straight from the graph's initializers and never changes the graph; the
//! optimisers do that. Opaque ops cannot be trained through and are refused by name.

use crate::TrainError;
use ndarray::{Array4, ArrayD, ArrayViewD, Axis, Ix4, IxDyn};
use pare_ir::{Graph, NodeId, Op, Pool, Tensor, ValueId, ValueSource, Window};
use pare_kernels::batchnorm::{self, BatchStats, OutputGradient};
use pare_kernels::conv::{self, ConvGeometry};
use pare_kernels::elementwise::{self, Activation, Binary};
use pare_kernels::epilogue::Epilogue;
use pare_kernels::into_standard;
use pare_kernels::linear::{self, GemmSpec};
use pare_kernels::pool;
use pare_kernels::window::Window2d;

/// Whether BatchNorm uses batch statistics (training) or running statistics (inference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// Per-node memory of the forward pass.
#[derive(Debug, Clone)]
enum Saved {
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
    values: Vec<Option<ArrayD<f32>>>,
    saved: Vec<Saved>,
    /// For each Conv/Gemm/MatMul node, the mean input vector over the batch (and positions), when
    /// requested: what RLS updates P with.
    pub mean_inputs: Vec<Option<Vec<f32>>>,
    /// Per value, Σ and Σ² of each plane when its producer summed them for a BatchNorm.
    plane_sums: Vec<Option<Vec<(f64, f64)>>>,
}

impl Tape {
    /// The value computed for `v` (an input or node output).
    pub fn value(&self, v: ValueId) -> Option<&ArrayD<f32>> {
        self.values[v.0 as usize].as_ref()
    }

    /// The batch statistics a training-mode BatchNorm node used.
    pub fn batch_stats(&self, node: NodeId) -> Option<&BatchStats> {
        match &self.saved[node.0 as usize] {
            Saved::BatchNorm(stats) => stats.as_ref(),
            _ => None,
        }
    }
}

fn node_err(graph: &Graph, id: NodeId, problem: impl Into<String>) -> TrainError {
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
        _ => tape.values[v.0 as usize].as_ref().map(|a| a.view()),
    }
}

fn input<'a>(
    graph: &'a Graph,
    tape: &'a Tape,
    id: NodeId,
    i: usize,
) -> Result<ArrayViewD<'a, f32>, TrainError> {
    optional(graph, tape, id, i)
        .ok_or_else(|| node_err(graph, id, format!("input {i} is missing or not float32")))
}

fn optional<'a>(
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

fn scalar_input(graph: &Graph, tape: &Tape, id: NodeId, i: usize, default: f32) -> f32 {
    optional(graph, tape, id, i)
        .and_then(|a| a.iter().next().copied())
        .unwrap_or(default)
}

fn four_d<'a>(
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
fn gemm_spec(g: &pare_ir::Gemm) -> GemmSpec {
    GemmSpec {
        alpha: g.alpha,
        beta: g.beta,
        trans_a: g.trans_a,
        trans_b: g.trans_b,
    }
}

/// The 2-d window of a Conv or pool node over an (h, w) input.
fn window_2d(window: &Window, ceil_mode: bool, h: usize, w: usize) -> Result<Window2d, String> {
    let pads = window.resolved_pads(&[h, w]);
    let out = window
        .output_size(&[h, w], ceil_mode)
        .ok_or("the window does not fit the input")?;
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
fn activation(graph: &Graph, tape: &Tape, id: NodeId) -> Option<Activation> {
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
        _ => return None,
    })
}

fn binary(op: &Op) -> Option<Binary> {
    Some(match op {
        Op::Add => Binary::Add,
        Op::Sub => Binary::Sub,
        Op::Mul => Binary::Mul,
        Op::Div => Binary::Div,
        _ => return None,
    })
}

fn softmax_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64) as usize
    } else {
        axis as usize
    }
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

/// Runs the graph on `input` (the first graph input). `mean_inputs` records the RLS input means.
/// With `dropout: Some(seed)` Dropout nodes drop as in training, with masks drawn from the seed;
/// with None they are the identity, as at inference.
pub fn forward(
    graph: &Graph,
    input: ArrayD<f32>,
    mode: Mode,
    mean_inputs: bool,
    dropout: Option<u64>,
) -> Result<Tape, TrainError> {
    let mut tape = Tape {
        values: vec![None; graph.values.len()],
        saved: vec![Saved::Nothing; graph.nodes.len()],
        mean_inputs: vec![None; graph.nodes.len()],
        plane_sums: vec![None; graph.values.len()],
    };
    let first = *graph
        .inputs
        .first()
        .ok_or(TrainError::OutputShape(vec![]))?;
    tape.values[first.0 as usize] = Some(input);
    let fusions = fusions(graph, &tape, mode);
    let mut fused = vec![false; graph.nodes.len()];
    for id in graph.node_ids() {
        if fused[id.0 as usize] {
            continue;
        }
        let fusion = fusions[id.0 as usize];
        let out = forward_node(graph, &tape, id, mode, mean_inputs, dropout, fusion)?;
        let mut output = graph.node(id).outputs[0];
        if let Some(reader) = fusion.activation {
            fused[reader.0 as usize] = true;
            if fusion.max_pool.is_some() {
                tape.saved[reader.0 as usize] = Saved::BeforePool;
            }
            output = graph.node(reader).outputs[0];
        }
        if let (Some(pool), Some(saved)) = (fusion.max_pool, out.pool) {
            fused[pool.0 as usize] = true;
            tape.saved[pool.0 as usize] = saved;
            output = graph.node(pool).outputs[0];
        }
        tape.values[output.0 as usize] = Some(out.value);
        tape.plane_sums[output.0 as usize] = out.plane_sums;
        tape.saved[id.0 as usize] = out.saved;
        tape.mean_inputs[id.0 as usize] = out.mean;
    }
    Ok(tape)
}

/// Nodes that run inside their producer's kernel, right after it (see `Epilogue`). Each must
/// be the only reader of the value before it, which is not a graph output; the values between
/// are never kept.
#[derive(Debug, Clone, Copy, Default)]
struct Fusion {
    /// An activation whose derivative follows from its own output (so backward never needs its
    /// input) and whose other inputs are constants (known before its turn). Any producer.
    activation: Option<NodeId>,
    /// A MaxPool after the producer or its activation; Conv and BatchNorm only. Its backward
    /// applies the activation's derivative at the pooled values, the winning activated values.
    max_pool: Option<NodeId>,
    /// Whether a Conv sums its output planes for the training-mode BatchNorm that alone reads
    /// its output (or its activation's), which then need not read them once more.
    batchnorm_stats: bool,
}

/// The fusion of each node (see `Fusion`). Running an activation or a pool inside its producer
/// saves a pass over memory and a buffer each.
fn fusions(graph: &Graph, tape: &Tape, mode: Mode) -> Vec<Fusion> {
    let consumers = graph.consumers();
    // The node reading `v` alone, through its first input only.
    let sole_reader = |v: ValueId| match consumers[v.0 as usize][..] {
        [reader] if !graph.outputs.contains(&v) => {
            let inputs = &graph.node(reader).inputs;
            let only_first =
                inputs.first() == Some(&Some(v)) && inputs.iter().skip(1).all(|&i| i != Some(v));
            only_first.then_some(reader)
        }
        _ => None,
    };
    let unused = |v: &ValueId| consumers[v.0 as usize].is_empty() && !graph.outputs.contains(v);
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
            if let Some(reader) = sole_reader(v).filter(|&r| in_place(r)) {
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
fn runs_epilogue(op: &Op) -> bool {
    matches!(op, Op::Conv(_) | Op::BatchNorm { .. })
}

/// The epilogue for a node's `fusion`, over output planes of `plane` (height, width): the
/// activation `then`, and the fused MaxPool's window over such planes.
fn fused_epilogue(
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
fn fused_pool(producer: NodeId, epilogue: Epilogue, argmax: Option<Array4<u32>>) -> Option<Saved> {
    Some(Saved::MaxPool {
        window: epilogue.max_pool?,
        argmax: argmax?,
        producer: Some(producer),
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
    let (mut value, saved, mean) = if let Some(act) = activation(graph, tape, id) {
        (act.forward(&x), Saved::Nothing, None)
    } else if let Some(op) = binary(&node.op) {
        let b = input(graph, tape, id, 1)?;
        let y = elementwise::binary_forward(op, &x, &b).ok_or_else(|| {
            err(format!(
                "shapes {:?} and {:?} do not broadcast",
                x.shape(),
                b.shape()
            ))
        })?;
        (y, Saved::Nothing, None)
    } else {
        match &node.op {
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
                let sums = node.inputs[0].and_then(|v| tape.plane_sums[v.0 as usize].as_deref());
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
            _ => unreachable!("activations and binary ops are handled above"),
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

/// Gradients of every float value that received one, indexed by ValueId. Initializers among
/// them are the parameter gradients.
pub struct Gradients(pub Vec<Option<ArrayD<f32>>>);

impl Gradients {
    pub fn of(&self, v: ValueId) -> Option<&ArrayD<f32>> {
        self.0[v.0 as usize].as_ref()
    }
}

/// Back-propagates `grad` of value `from` through every node before it.
pub fn backward(
    graph: &Graph,
    tape: &Tape,
    from: ValueId,
    grad: ArrayD<f32>,
) -> Result<Gradients, TrainError> {
    let mut grads: Vec<Option<ArrayD<f32>>> = vec![None; graph.values.len()];
    grads[from.0 as usize] = Some(grad);
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
        let Some(mut dy) = grads[node.outputs[0].0 as usize].take() else {
            continue;
        };
        // A pool fused after an activation: the activation's output at each winner is the
        // pooled value, so its derivative applies here, before the gradient is routed.
        if let Some(act) = fused_activation_before(graph, tape, id) {
            act.backward_from_output(&output(tape, node), &mut dy);
        }
        // A pool that ran in BatchNorm's kernel hands its gradient to BatchNorm's backward
        // directly, which then stands for the pool, BatchNorm and any activation between.
        let pooled_batchnorm = match &tape.saved[id.0 as usize] {
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
            match &mut grads[v.0 as usize] {
                Some(acc) => *acc += &g,
                slot => *slot = Some(g),
            }
        }
        // Keep the gradient of node outputs only while needed; parameters keep theirs.
    }
    Ok(Gradients(grads))
}

/// The activation fused between a producer and the MaxPool `pool`, if any.
fn fused_activation_before(graph: &Graph, tape: &Tape, pool: NodeId) -> Option<Activation> {
    let x = graph.node(pool).inputs.first().copied().flatten()?;
    let ValueSource::Node(a) = graph.value(x).source else {
        return None;
    };
    matches!(tape.saved[a.0 as usize], Saved::BeforePool)
        .then(|| activation(graph, tape, a))
        .flatten()
}

/// The kept output of `node`.
fn output<'a>(tape: &'a Tape, node: &pare_ir::Node) -> ArrayViewD<'a, f32> {
    tape.values[node.outputs[0].0 as usize]
        .as_ref()
        .expect("forward ran")
        .view()
}

/// The gradients of BatchNorm node `id`'s inputs (x, scale, bias) from `dy`.
fn batchnorm_backward(
    graph: &Graph,
    tape: &Tape,
    id: NodeId,
    dy: OutputGradient,
) -> Result<Vec<Option<ArrayD<f32>>>, TrainError> {
    let (Op::BatchNorm { epsilon, .. }, Saved::BatchNorm(stats)) =
        (&graph.node(id).op, &tape.saved[id.0 as usize])
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
/// gradient has the output's shape write it over `dy`.
fn backward_node(
    graph: &Graph,
    tape: &Tape,
    id: NodeId,
    mut dy: ArrayD<f32>,
    wants: &[bool],
) -> Result<Vec<Option<ArrayD<f32>>>, TrainError> {
    let node = graph.node(id);
    let y = || output(tape, node);
    if let Some(act) = activation(graph, tape, id) {
        // Fused before a pool, whose backward applied the derivative already.
        if matches!(tape.saved[id.0 as usize], Saved::BeforePool) {
            return Ok(vec![Some(dy)]);
        }
        // An activation that ran in place has no input kept; its output is enough.
        if act.output_determines_derivative() {
            act.backward_from_output(&y(), &mut dy);
            return Ok(vec![Some(dy)]);
        }
        let x = input(graph, tape, id, 0)?;
        return Ok(vec![Some(act.backward(&x, &y(), &dy.view()))]);
    }
    // A max pool needs neither its input (which a fusion may not have kept) nor its output.
    if let (Op::MaxPool(_), Saved::MaxPool { window, argmax, .. }) =
        (&node.op, &tape.saved[id.0 as usize])
    {
        let dy4 = dy.view().into_dimensionality::<Ix4>().expect("4-d");
        return Ok(vec![Some(
            pool::max_backward(window, argmax, dy4).into_dyn(),
        )]);
    }
    let x = input(graph, tape, id, 0)?;
    if let Some(op) = binary(&node.op) {
        let b = input(graph, tape, id, 1)?;
        let (da, db) = elementwise::binary_backward(op, &x, &b, &dy.view());
        return Ok(vec![Some(da), Some(db)]);
    }
    let want = |i: usize| wants.get(i).copied().unwrap_or(false);
    Ok(match (&node.op, &tape.saved[id.0 as usize]) {
        (Op::Conv(_), Saved::Conv(geo)) => {
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
        (Op::Gemm(g), _) => {
            let spec = gemm_spec(g);
            let b = input(graph, tape, id, 1)?;
            let c = optional(graph, tape, id, 2);
            let (da, db, dc) =
                linear::gemm_backward(spec, &x, &b, c.as_ref().map(|c| c.shape()), &dy.view());
            vec![Some(da), Some(db), dc]
        }
        (Op::MatMul, _) => {
            let b = input(graph, tape, id, 1)?;
            let (da, db) = linear::matmul_backward(&x, &b, &dy.view());
            vec![Some(da), Some(db)]
        }
        (Op::BatchNorm { .. }, Saved::BatchNorm(_)) => {
            return batchnorm_backward(graph, tape, id, OutputGradient::Full(dy))
        }
        (Op::AveragePool { .. }, Saved::AvgPool(geo, include)) => vec![Some(
            pool::avg_backward(
                geo,
                dy.view().into_dimensionality::<Ix4>().expect("4-d"),
                *include,
            )
            .into_dyn(),
        )],
        (Op::GlobalAveragePool, _) => {
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
        (Op::Flatten { .. } | Op::Reshape { .. }, _) => vec![Some(
            into_standard(dy)
                .into_shape_with_order(x.raw_dim())
                .expect("same count"),
        )],
        (Op::Concat { axis }, _) => {
            let a = softmax_axis(*axis, x.ndim());
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
        (Op::Dropout { .. }, Saved::Dropout(mask)) => {
            dy *= mask;
            vec![Some(dy)]
        }
        (Op::Dropout { .. } | Op::Identity, _) => vec![Some(dy)],
        (Op::Softmax { axis }, _) => vec![Some(elementwise::softmax_backward(
            &y(),
            &dy.view(),
            softmax_axis(*axis, x.ndim()),
        ))],
        _ => return Err(node_err(graph, id, "no backward pass for this op")),
    })
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
