//! Bias compensation for removed channels: a consumer that loses input channel c loses, on
//! average, m_c times the weights that read it, so m_c · Σ W is added to its bias. m_c comes from
//! the trace (`trace.rs`) back to the BatchNorm before the channel.

use super::trace;
use crate::bias::BiasTarget;
use crate::groups::{ChannelGroups, Segment, SliceKind};
use crate::{PruneError, PruningPlan};
use pare_ir::{Graph, ValueId};
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
                    target.add_reads(slice.axis, start..start + block, *m, &mut delta);
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
