//! Bias compensation for removed channels: a consumer that loses input channel c loses, on
//! average, m_c times the weights that read it, so m_c · Σ W is added to its bias. m_c comes from
//! the trace (`trace.rs`) back to the BatchNorm before the channel.

use super::trace;
use crate::groups::{ChannelGroups, Segment, Slice, SliceKind};
use crate::{PruneError, PruningPlan};
use ndarray::{ArrayD, Axis, IxDyn};
use pare_ir::{Graph, NodeId, Op, Tensor, ValueId, ValueSource};
use std::collections::{BTreeMap, HashMap};

/// What compensation did, for the report. A *read* is one removed channel read by one consumer
/// (a channel read by two layers is two reads).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Compensation {
    /// Removed channels read by a consumer, counted per consumer.
    pub reads: usize,
    /// Reads whose expected value went into the consumer's bias.
    pub compensated: usize,
    /// Reads left alone because the channel's expected value is unknown.
    pub unknown: usize,
    /// Consumers that cannot take a bias (a MatMul, a computed or shared bias, a Gemm with
    /// beta 0); none of their reads is compensated.
    pub consumers_skipped: usize,
    /// Zero biases added to Conv or Gemm consumers that had none.
    pub biases_added: usize,
    /// Why reads were not compensated, with how many reads each reason covers.
    pub skipped: BTreeMap<String, usize>,
}

impl Compensation {
    fn skip(&mut self, why: String, reads: usize) {
        *self.skipped.entry(why).or_default() += reads;
    }
}

/// Adds, for every channel `plan` removes, its expected value times the consumer's weights over
/// it to each consumer's bias, so the consumers' outputs keep their mean. Call it on the
/// unpruned graph right before `plan.apply(graph, groups)`: a Conv or Gemm consumer without a
/// bias gets a zero one, and `groups` gets its slice so that surgery cuts it with the layer's
/// outputs. Nothing is changed when the plan is refused.
pub fn compensate_removed(
    graph: &mut Graph,
    groups: &mut ChannelGroups,
    plan: &PruningPlan,
) -> Result<Compensation, PruneError> {
    plan.check(groups)?;
    let readers = graph.consumers();
    let mut out = Compensation::default();
    // Expected values by (consumer input, element along axis 1): consumers share inputs.
    let mut means: HashMap<(ValueId, usize), Result<f64, String>> = HashMap::new();
    for slice in groups.slices.clone() {
        if slice.kind != SliceKind::Consumer {
            continue;
        }
        let removed = removed_elements(groups, plan, &slice.segments);
        if removed.is_empty() {
            continue;
        }
        out.reads += removed.len();
        let target = match BiasTarget::of(graph, &readers, &slice) {
            Ok(target) => target,
            Err(why) => {
                out.consumers_skipped += 1;
                out.skip(why, removed.len());
                continue;
            }
        };
        let mut delta = vec![0.0f64; target.outputs];
        let mut compensated = 0;
        for (start, block) in removed {
            let mean = means
                .entry((target.input, start))
                .or_insert_with(|| trace::expected_value(graph, target.input, start));
            match mean {
                Ok(m) => {
                    for j in start..start + block {
                        let read = target.weight.index_axis(Axis(slice.axis), j);
                        for (d, row) in delta.iter_mut().zip(read.outer_iter()) {
                            *d += *m * row.iter().map(|&w| f64::from(w)).sum::<f64>();
                        }
                    }
                    compensated += 1;
                }
                Err(why) => {
                    out.unknown += 1;
                    out.skip(why.clone(), 1);
                }
            }
        }
        if compensated > 0 {
            out.compensated += compensated;
            if target.bias.is_none() {
                out.biases_added += 1;
            }
            target.add(graph, groups, &slice, &delta);
        }
    }
    Ok(out)
}

/// The first element along the consumer's input axis of each channel the plan removes from
/// `segments`, with the channel's block (features per channel after a Flatten, else 1).
fn removed_elements(
    groups: &ChannelGroups,
    plan: &PruningPlan,
    segments: &[Segment],
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for s in segments {
        if let Some(drop) = plan.drop.get(&groups.group_of_space(s.space)) {
            out.extend(
                drop.iter()
                    .filter(|&&c| c < s.len)
                    .map(|&c| (offset + c * s.block, s.block)),
            );
        }
        offset += s.len * s.block;
    }
    out
}

/// A consumer that can take compensation: its data input, its weight, and its bias (or the
/// lack of one), and the factor between a change of its output and a change of that bias.
struct BiasTarget {
    node: NodeId,
    input: ValueId,
    weight: ArrayD<f32>,
    outputs: usize,
    bias: Option<ValueId>,
    /// Gemm computes alpha·A·B + beta·C, so C moves by alpha/beta per unit of A·B.
    scale: f64,
}

impl BiasTarget {
    fn of(graph: &Graph, readers: &[Vec<NodeId>], slice: &Slice) -> Result<BiasTarget, String> {
        let node = graph.node(slice.node);
        // The op type, not the node: reasons key a summary (see trace.rs).
        let label = node.op.op_type().to_string();
        let Some(Tensor::F32(weight)) = graph.value(slice.tensor).initializer() else {
            return Err(format!("{label} has a weight that is not a float constant"));
        };
        let (outputs, scale) = match &node.op {
            Op::Conv(c) if c.group == 1 && slice.axis == 1 && weight.ndim() >= 3 => {
                (weight.shape()[0], 1.0)
            }
            Op::Gemm(g) if g.beta == 0.0 => {
                return Err(format!("{label} has beta 0: its C is ignored"))
            }
            Op::Gemm(g) if weight.ndim() == 2 && slice.axis < 2 => (
                weight.shape()[1 - slice.axis],
                f64::from(g.alpha) / f64::from(g.beta),
            ),
            _ => return Err(format!("{label} has no bias to take the compensation")),
        };
        let input = node.inputs.first().copied().flatten();
        let input = input.ok_or_else(|| format!("{label} has no data input"))?;
        let bias = match node.inputs.get(2).copied().flatten() {
            None => None,
            Some(b) => {
                let fits = matches!(&graph.value(b).source,
                    ValueSource::Initializer(Tensor::F32(t))
                        if t.len() == outputs && t.shape().last() == Some(&outputs));
                if !fits || readers[b.0 as usize].len() != 1 {
                    return Err(format!(
                        "{label} has a bias that is computed, shared or not one per output"
                    ));
                }
                Some(b)
            }
        };
        Ok(BiasTarget {
            node: slice.node,
            input,
            weight: weight.clone(),
            outputs,
            bias,
            scale,
        })
    }

    /// Adds `delta` (per output, before the Gemm scale) to the bias, creating a zero bias with
    /// its Producer slice when there is none.
    fn add(&self, graph: &mut Graph, groups: &mut ChannelGroups, consumer: &Slice, delta: &[f64]) {
        let bias = self
            .bias
            .unwrap_or_else(|| self.zero_bias(graph, groups, consumer));
        if let ValueSource::Initializer(Tensor::F32(t)) = &mut graph.value_mut(bias).source {
            for (b, d) in t.iter_mut().zip(delta) {
                *b += (d * self.scale) as f32;
            }
        }
    }

    fn zero_bias(
        &self,
        graph: &mut Graph,
        groups: &mut ChannelGroups,
        consumer: &Slice,
    ) -> ValueId {
        let node_name = graph.node(self.node).name.clone();
        let base = format!("{node_name}.compensation_bias");
        let mut name = base.clone();
        let mut n = 1;
        while graph.find_value(&name).is_some() {
            name = format!("{base}.{n}");
            n += 1;
        }
        let zeros = ArrayD::zeros(IxDyn(&[self.outputs]));
        let bias = graph.add_value(&name, ValueSource::Initializer(Tensor::F32(zeros)));
        let inputs = &mut graph.nodes[self.node.0 as usize].inputs;
        inputs.resize(inputs.len().max(3), None);
        inputs[2] = Some(bias);
        // The layer's outputs may be pruned by the same plan: the bias must be cut with them,
        // along the layout of the weight's output axis.
        let producer = groups
            .slices
            .iter()
            .find(|s| {
                s.node == self.node && s.tensor == consumer.tensor && s.kind == SliceKind::Producer
            })
            .cloned();
        if let Some(weight) = producer {
            let index = groups.slices.len();
            for s in &weight.segments {
                let group = groups.group_of_space(s.space);
                let listed = &mut groups.groups[group.0 as usize].slices;
                if !listed.contains(&index) {
                    listed.push(index);
                }
            }
            groups.slices.push(Slice {
                tensor: bias,
                axis: 0,
                input: 2,
                role: format!(
                    "{} bias (added by compensation)",
                    graph.node(self.node).op.op_type()
                ),
                ..weight
            });
        }
        bias
    }
}
