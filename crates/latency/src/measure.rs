//! Measuring a latency model in tract: the graph as given, then for each prunable group the whole
//! graph with only that group narrowed (its last channels dropped: which ones does not matter for
//! time) to each width of its ladder, every model loaded from its encoded bytes at batch 1.

use crate::ladder::plan_ladders;
use crate::model::{GroupLatency, LatencyModel, PairLatency, WidthTime};
use crate::{cache_key, group_key, vector_width, LadderSettings, LatencyError};
use ndarray::Array4;
use pare_ir::{Graph, NodeCost};
use pare_prune::{ChannelGroups, GroupId, PruningPlan, SliceKind};
use pare_verify::{latency, latency_interleaved, TractModel};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A prunable group to measure: its id, key, floor and full width, and the MACs of the nodes it
/// slices (the order groups are measured in when the variant cap bites).
struct Candidate {
    id: GroupId,
    key: String,
    floor: usize,
    full: usize,
    macs: u64,
}

impl LatencyModel {
    /// Measures `graph` (analysed as `groups`) in tract at batch 1: its median T0, then each
    /// prunable group at the widths of its ladder, each group's narrowed models timed in rounds
    /// with the unpruned one. Takes about (variants + groups) × (warmup + runs) × T0 plus one
    /// tract load per variant; `settings.max_variants` bounds the variants.
    pub fn measure(
        graph: &Graph,
        groups: &ChannelGroups,
        settings: &LadderSettings,
    ) -> Result<LatencyModel, LatencyError> {
        settings.check()?;
        let start = Instant::now();
        let input_shape = batch_one_input(graph)?;
        let images = Array4::from_elem((1, input_shape[1], input_shape[2], input_shape[3]), 0.5f32);
        let bytes = pare_onnx::encode(&pare_ir::export(graph));
        let baseline =
            TractModel::from_bytes(Path::new("the model as given"), &bytes, &input_shape)?;
        let estimate = latency(&baseline, images.view(), settings.warmup, 3)?.median_ms;
        let runs = settings.runs_for(estimate);
        let vector_width = settings.vector_width.unwrap_or_else(vector_width);
        let costs = pare_ir::node_costs(graph);
        let mut candidates = candidates(graph, groups, &costs, settings);
        candidates.sort_by(|a, b| b.macs.cmp(&a.macs).then(a.id.cmp(&b.id)));
        let spans: Vec<(usize, usize)> = candidates.iter().map(|c| (c.floor, c.full)).collect();
        let macs: Vec<u64> = candidates.iter().map(|c| c.macs).collect();
        let ladders = plan_ladders(&spans, &macs, vector_width, settings);
        let (mut measured, mut unmeasured, mut variants) = (Vec::new(), Vec::new(), 0);
        for (c, ladder) in candidates.iter().zip(&ladders) {
            let Some((&full, narrower)) = ladder.split_last() else {
                unmeasured.push(c.key.clone());
                continue;
            };
            if narrower.is_empty() {
                continue;
            }
            let mut models = Vec::with_capacity(narrower.len());
            for &width in narrower {
                let bytes = narrowed(graph, groups, c, width)?;
                let label = PathBuf::from(format!("{} at {width} channels", c.key));
                models.push(TractModel::from_bytes(&label, &bytes, &input_shape)?);
            }
            variants += models.len();
            let timed: Vec<&TractModel> = std::iter::once(&baseline).chain(&models).collect();
            let times = latency_interleaved(&timed, images.view(), settings.warmup, runs)?;
            let baseline_ms = times[0].median_ms;
            let widths = narrower.iter().chain([&full]);
            let ms = times[1..].iter().map(|t| t.median_ms).chain([baseline_ms]);
            measured.push(GroupLatency {
                key: c.key.clone(),
                baseline_ms,
                points: widths
                    .zip(ms)
                    .map(|(&width, ms)| WidthTime { width, ms })
                    .collect(),
            });
        }
        let baseline_ms = if measured.is_empty() {
            latency(&baseline, images.view(), settings.warmup, runs)?.median_ms
        } else {
            median(measured.iter().map(|g| g.baseline_ms).collect())
        };
        Ok(LatencyModel {
            cache_key: cache_key(&bytes),
            vector_width,
            input_shape,
            baseline_ms,
            pairs: pairs(groups, &candidates, &measured, &costs),
            groups: measured,
            unmeasured,
            runs,
            variants,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// The prunable groups that have a key, with their floors and the MACs of the nodes they slice.
fn candidates(
    graph: &Graph,
    groups: &ChannelGroups,
    costs: &[NodeCost],
    settings: &LadderSettings,
) -> Vec<Candidate> {
    groups
        .groups
        .iter()
        .filter(|g| g.prunable())
        .filter_map(|g| {
            let nodes: BTreeSet<usize> = g
                .slices
                .iter()
                .map(|&i| groups.slices[i].node.0 as usize)
                .collect();
            Some(Candidate {
                id: g.id,
                key: group_key(graph, groups, g.id)?,
                floor: settings.floor(g.channels),
                full: g.channels,
                macs: nodes
                    .iter()
                    .filter_map(|&n| costs.get(n))
                    .map(|c| c.macs)
                    .sum(),
            })
        })
        .collect()
}

/// The encoded graph with only `c`'s group narrowed to `width` channels (its last ones dropped).
fn narrowed(
    graph: &Graph,
    groups: &ChannelGroups,
    c: &Candidate,
    width: usize,
) -> Result<Vec<u8>, LatencyError> {
    let mut plan = PruningPlan::default();
    plan.drop_channels(c.id, width..c.full);
    let mut copy = graph.clone();
    plan.apply(&mut copy, groups)
        .map_err(|source| LatencyError::Variant {
            group: c.key.clone(),
            width,
            source,
        })?;
    Ok(pare_onnx::encode(&pare_ir::export(&copy)))
}

/// The graph's first input at batch 1: [1, C, H, W] with C, H and W known.
fn batch_one_input(graph: &Graph) -> Result<Vec<usize>, LatencyError> {
    let &input = graph.inputs.first().ok_or(LatencyError::NoInput)?;
    let value = graph.value(input);
    let open = || LatencyError::OpenInput {
        input: value.name.clone(),
        shape: value
            .shape
            .as_ref()
            .map_or_else(|| "undeclared".into(), ToString::to_string),
    };
    let shape = value.shape.as_ref().ok_or_else(open)?;
    if shape.rank() != 4 {
        return Err(open());
    }
    let image: Option<Vec<usize>> = shape.0[1..].iter().map(|d| d.known()).collect();
    let image = image.ok_or_else(open)?;
    Ok([vec![1], image].concat())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The layers that read one measured group and write another, per (read, written) pair: their
/// unpruned time estimated from the two groups' scaling times, each spread over the MACs of the
/// layers its group touches (averaged over the two), times the share of the layer's input the
/// read group is (a layer reading a Concat reads each part for its share).
fn pairs(
    groups: &ChannelGroups,
    candidates: &[Candidate],
    measured: &[GroupLatency],
    costs: &[NodeCost],
) -> Vec<PairLatency> {
    let per_mac: BTreeMap<GroupId, (&str, f64)> = candidates
        .iter()
        .filter(|c| c.macs > 0)
        .filter_map(|c| {
            let g = measured.iter().find(|g| g.key == c.key)?;
            Some((c.id, (c.key.as_str(), g.scaling_ms() / c.macs as f64)))
        })
        .collect();
    // Per layer: the groups it reads (with their share of its input) and the groups it writes.
    let mut layers: BTreeMap<usize, (BTreeMap<GroupId, f64>, BTreeSet<GroupId>)> = BTreeMap::new();
    for slice in &groups.slices {
        let layer = layers.entry(slice.node.0 as usize).or_default();
        let total: usize = slice.segments.iter().map(|s| s.len * s.block).sum();
        for s in &slice.segments {
            let g = groups.group_of_space(s.space);
            match slice.kind {
                SliceKind::Consumer => {
                    let share = (s.len * s.block) as f64 / total.max(1) as f64;
                    *layer.0.entry(g).or_default() += share;
                }
                SliceKind::Producer => {
                    layer.1.insert(g);
                }
                SliceKind::PerChannel => {}
            }
        }
    }
    let mut summed: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for (node, (reads, writes)) in layers {
        let macs = costs.get(node).map_or(0, |c| c.macs) as f64;
        for (a, share) in &reads {
            for b in writes.iter().filter(|&b| b != a) {
                let (Some(&(ka, ra)), Some(&(kb, rb))) = (per_mac.get(a), per_mac.get(b)) else {
                    continue;
                };
                *summed.entry((ka, kb)).or_default() += macs * share.min(1.0) * (ra + rb) / 2.0;
            }
        }
    }
    summed
        .into_iter()
        .map(|((reads, writes), ms)| PairLatency {
            reads: reads.into(),
            writes: writes.into(),
            ms,
        })
        .collect()
}
