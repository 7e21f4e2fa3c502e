//! Relief's two-input rule on residual streams: each channel of a residual Add is a unit with two
//! inputs, the main branch and the shortcut. When one side carries less than (1 − α)/α of the
//! other's signal on the pruning set, that side's channel is switched off: a Conv (and its
//! BatchNorm) producing it loses the filter, by masks; any other side (an identity shortcut) is
//! gated by a Mul with a constant per-channel 0/1 tensor, held fixed through training and written
//! into the exported graph.

use super::sweep;
use crate::PruneError;
use ndarray::{Array3, ArrayD, Axis, Ix4, IxDyn};
use pare_data::Dataset;
use pare_ir::{Graph, Node, NodeId, Op, Tensor, ValueId, ValueSource};
use pare_train::optim::Masks;

/// How one side of a residual Add switches a channel off.
#[derive(Debug, Clone, PartialEq)]
enum Switch {
    /// The parameters whose entry c (along their first axis) zero channel c: a Conv's weight and
    /// bias, and its BatchNorm's scale and shift.
    Filter(Vec<ValueId>),
    /// A gate (a held [1, C, 1, 1] constant) multiplies the side, or will once one is needed.
    Gate(Option<ValueId>),
}

/// A residual Add and, for each of its two inputs, how to switch a channel off.
#[derive(Debug, Clone, PartialEq)]
struct Junction {
    add: NodeId,
    sides: [(ValueId, Switch); 2],
}

fn f32_param(graph: &Graph, v: Option<ValueId>) -> Option<ValueId> {
    v.filter(|&v| matches!(graph.value(v).initializer(), Some(Tensor::F32(_))))
}

/// How `side` (an input of an Add) switches a channel off. A Conv, or a BatchNorm over a Conv,
/// read by nothing else is switched off by its filter.
fn switch(graph: &Graph, readers: &[Vec<NodeId>], side: ValueId, masks: &Masks) -> Switch {
    let alone = |v: ValueId| readers[v.0 as usize].len() == 1;
    let ValueSource::Node(p) = graph.value(side).source else {
        return Switch::Gate(None);
    };
    let node = graph.node(p);
    let input = |n: &Node, i: usize| n.inputs.get(i).copied().flatten();
    match &node.op {
        Op::Mul if input(node, 1).is_some_and(|g| masks.is_held(g)) => {
            return Switch::Gate(input(node, 1));
        }
        Op::Conv(_) if alone(side) => {
            let params = [input(node, 1), input(node, 2)];
            return Switch::Filter(
                params
                    .into_iter()
                    .filter_map(|v| f32_param(graph, v))
                    .collect(),
            );
        }
        Op::BatchNorm { .. } if alone(side) => {
            if let Some(conv_out) = input(node, 0).filter(|&v| alone(v)) {
                if let ValueSource::Node(c) = graph.value(conv_out).source {
                    let conv = graph.node(c);
                    if matches!(conv.op, Op::Conv(_)) {
                        let params = [
                            input(conv, 1),
                            input(conv, 2),
                            input(node, 1),
                            input(node, 2),
                        ];
                        return Switch::Filter(
                            params
                                .into_iter()
                                .filter_map(|v| f32_param(graph, v))
                                .collect(),
                        );
                    }
                }
            }
        }
        _ => {}
    }
    Switch::Gate(None)
}

/// Every Add of two computed NCHW activations of the same shape.
fn junctions(graph: &Graph, masks: &Masks) -> Vec<Junction> {
    let readers = graph.consumers();
    graph
        .node_ids()
        .filter_map(|id| {
            let node = graph.node(id);
            let (Op::Add, [Some(a), Some(b)]) = (&node.op, node.inputs.as_slice()) else {
                return None;
            };
            let computed = |v: ValueId| graph.value(v).initializer().is_none();
            let shape = |v: ValueId| graph.value(v).shape.clone();
            let four_d = shape(*a).is_some_and(|s| s.0.len() == 4);
            (computed(*a) && computed(*b) && four_d && shape(*a) == shape(*b)).then(|| Junction {
                add: id,
                sides: [*a, *b].map(|v| (v, switch(graph, &readers, v, masks))),
            })
        })
        .collect()
}

/// Per junction and side, the Frobenius norm of each channel's mean |map| over `data`.
fn side_norms(
    graph: &Graph,
    junctions: &[Junction],
    data: &Dataset,
    batch_size: usize,
) -> Result<Vec<[Vec<f64>; 2]>, PruneError> {
    let mut sums: Vec<[Option<Array3<f64>>; 2]> = junctions.iter().map(|_| [None, None]).collect();
    sweep(graph, data, batch_size, |tape| {
        for (j, sum) in junctions.iter().zip(&mut sums) {
            for ((side, _), sum) in j.sides.iter().zip(sum.iter_mut()) {
                let x = tape
                    .value(*side)
                    .and_then(|x| x.view().into_dimensionality::<Ix4>().ok())
                    .ok_or_else(|| PruneError::Relief {
                        node: graph.node(j.add).name.clone(),
                        problem: "an input of the residual Add was not kept by the forward pass"
                            .into(),
                    })?;
                let total = x.mapv(|v| v.abs() as f64).sum_axis(Axis(0));
                match sum {
                    Some(s) => *s += &total,
                    None => *sum = Some(total),
                }
            }
        }
        Ok(())
    })?;
    Ok(sums
        .into_iter()
        .map(|pair| {
            pair.map(|s| {
                s.map(|s| {
                    s.outer_iter()
                        .map(|plane| plane.iter().map(|v| v * v).sum::<f64>().sqrt())
                        .collect()
                })
                .unwrap_or_default()
            })
        })
        .collect())
}

/// Applies the two-input rule with `alpha` to every residual Add of `graph`, measured on `data`:
/// masks the filters and inserts or updates the gates it decides on (gates go into `masks` as
/// held parameters). Returns how many channel sides it switched off.
pub fn gate_residuals(
    graph: &mut Graph,
    data: &Dataset,
    batch_size: usize,
    alpha: f64,
    masks: &mut Masks,
) -> Result<usize, PruneError> {
    let found = junctions(graph, masks);
    let norms = side_norms(graph, &found, data, batch_size)?;
    let ratio = (1.0 - alpha) / alpha;
    let mut switched = 0;
    // Gates are inserted last to first, so the NodeIds of the junctions still to do stay valid.
    for (j, [u, v]) in found.iter().zip(norms).rev() {
        for (side, (mine, other)) in [(&u, &v), (&v, &u)].into_iter().enumerate() {
            let off: Vec<usize> = (0..mine.len())
                .filter(|&c| mine[c] > 0.0 && mine[c] < ratio * other[c])
                .collect();
            if off.is_empty() {
                continue;
            }
            switched += off.len();
            let (value, how) = &j.sides[side];
            match how {
                Switch::Filter(params) => {
                    for &p in params {
                        mask_rows(graph, masks, p, &off);
                    }
                }
                Switch::Gate(gate) => {
                    let gate = gate
                        .unwrap_or_else(|| insert_gate(graph, j.add, *value, mine.len(), masks));
                    mask_rows_of_held(masks, gate, &off);
                }
            }
        }
    }
    pare_ir::infer_shapes(graph)?;
    Ok(switched)
}

/// Masks entries `rows` along the first axis of parameter `p`.
fn mask_rows(graph: &Graph, masks: &mut Masks, p: ValueId, rows: &[usize]) {
    let Some(Tensor::F32(t)) = graph.value(p).initializer() else {
        return;
    };
    let mut mask = masks
        .get(p)
        .cloned()
        .unwrap_or_else(|| ArrayD::ones(t.raw_dim()));
    for &c in rows {
        mask.index_axis_mut(Axis(0), c).fill(0.0);
    }
    masks.insert(p, mask);
}

/// Closes channels `rows` of a held [1, C, 1, 1] gate.
fn mask_rows_of_held(masks: &mut Masks, gate: ValueId, rows: &[usize]) {
    if let Some(g) = masks.get_mut(gate) {
        for &c in rows {
            g.index_axis_mut(Axis(1), c).fill(0.0);
        }
    }
}

/// Inserts `gated = side · gate` just before the Add `add` and makes the Add read it; the gate is
/// an open [1, channels, 1, 1] constant, held in `masks`. Nodes from `add` on move one place.
fn insert_gate(
    graph: &mut Graph,
    add: NodeId,
    side: ValueId,
    channels: usize,
    masks: &mut Masks,
) -> ValueId {
    let side_name = graph.value(side).name.clone();
    let name = format!("{side_name}_relief_gate");
    let open = ArrayD::<f32>::ones(IxDyn(&[1, channels, 1, 1]));
    let gate = graph.add_value(&name, ValueSource::Initializer(Tensor::F32(open.clone())));
    let gated = graph.add_value(&format!("{side_name}_gated"), ValueSource::Input);
    graph.value_mut(gated).elem_type = graph.value(side).elem_type;
    for value in &mut graph.values {
        if let ValueSource::Node(n) = &mut value.source {
            if n.0 >= add.0 {
                n.0 += 1;
            }
        }
    }
    graph.value_mut(gated).source = ValueSource::Node(add);
    let position = add.0 as usize;
    for input in graph.nodes[position].inputs.iter_mut().flatten() {
        if *input == side {
            *input = gated;
        }
    }
    graph.nodes.insert(
        position,
        Node {
            name: format!("{name}_Mul"),
            op: Op::Mul,
            inputs: vec![Some(side), Some(gate)],
            outputs: vec![gated],
            doc_string: None,
            metadata_props: Vec::new(),
        },
    );
    masks.hold(gate, open);
    gate
}
