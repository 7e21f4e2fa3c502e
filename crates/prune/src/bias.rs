//! The bias of a layer that reads a group's channels, as a place to put what removed channels
//! contributed on average (data-free compensation, the least-squares refit).

use crate::groups::{ChannelGroups, Slice, SliceKind};
use ndarray::{ArrayD, Axis, IxDyn};
use pare_ir::{Graph, NodeId, Op, Tensor, ValueId, ValueSource};
use std::ops::Range;

/// A consumer that can take a bias change: its data input, its weight, and its bias (or the
/// lack of one, `None`), and the factor between a change of its output and a change of that bias.
pub(crate) struct BiasTarget {
    node: NodeId,
    pub input: ValueId,
    weight: ArrayD<f32>,
    pub outputs: usize,
    pub bias: Option<ValueId>,
    /// Gemm computes alpha·A·B + beta·C, so C moves by alpha/beta per unit of A·B.
    scale: f64,
}

impl BiasTarget {
    pub fn of(graph: &Graph, readers: &[Vec<NodeId>], slice: &Slice) -> Result<BiasTarget, String> {
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

    /// Adds `factor` times the sum of the weights that read input elements `elements` (along
    /// `axis`) to each output's entry of `delta`.
    pub fn add_reads(&self, axis: usize, elements: Range<usize>, factor: f64, delta: &mut [f64]) {
        for j in elements {
            let read = self.weight.index_axis(Axis(axis), j);
            for (d, row) in delta.iter_mut().zip(read.outer_iter()) {
                *d += factor * row.iter().map(|&w| f64::from(w)).sum::<f64>();
            }
        }
    }

    /// Adds `delta` (per output, before the Gemm scale) to the bias, creating a zero bias with
    /// its Producer slice when there is none.
    pub fn add(
        &self,
        graph: &mut Graph,
        groups: &mut ChannelGroups,
        consumer: &Slice,
        delta: &[f64],
    ) {
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
