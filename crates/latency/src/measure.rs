//! Measuring a latency model in tract: the graph as given, then for each prunable group the whole
//! graph with only that group narrowed (its last channels dropped: which ones does not matter for
//! time) to each width of its ladder, then each pair of groups a layer joins with both at their
//! floors; every model loaded from its encoded bytes at batch 1.

use crate::ladder::plan_ladders;
use crate::model::LatencyModel;
use crate::pairs::joined;
use crate::{cache_key, vector_width, LadderSettings, LatencyError};
use ndarray::Array4;
use pare_ir::{Graph, NodeCost};
use pare_prune::latency::{group_key, GroupLatency, LatencyTable, PairLatency, WidthTime};
use pare_prune::{ChannelGroups, GroupId, PruningPlan};
use pare_verify::{latency_interleaved, Clock, TractModel};
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

/// What every timing shares: the graph and its groups, the unpruned model, the image, the runs.
struct Timing<'a> {
    graph: &'a Graph,
    groups: &'a ChannelGroups,
    input_shape: Vec<usize>,
    images: Array4<f32>,
    baseline: TractModel,
    warmup: usize,
    runs: usize,
    clock: Clock,
}

impl Timing<'_> {
    /// Loads the graph with each (group, width) of `narrow` narrowed (their last channels
    /// dropped) from its encoded bytes.
    fn load(&self, narrow: &[(&Candidate, usize)]) -> Result<TractModel, LatencyError> {
        let mut plan = PruningPlan::default();
        for &(c, width) in narrow {
            plan.drop_channels(c.id, width..c.full);
        }
        let names: Vec<String> = narrow
            .iter()
            .map(|(c, w)| format!("'{}' at {w}", c.key))
            .collect();
        let names = names.join(" and ");
        let mut copy = self.graph.clone();
        plan.apply(&mut copy, self.groups)
            .map_err(|source| LatencyError::Variant {
                groups: names.clone(),
                source,
            })?;
        let bytes = pare_onnx::encode(&pare_ir::export(&copy));
        let label = PathBuf::from(format!("the model with {names} channels"));
        Ok(TractModel::from_bytes(&label, &bytes, &self.input_shape)?)
    }

    /// Medians of the unpruned model and of `models`, timed in rounds together.
    fn rounds(&self, models: &[TractModel]) -> Result<(f64, Vec<f64>), LatencyError> {
        let timed: Vec<&TractModel> = std::iter::once(&self.baseline).chain(models).collect();
        let times = latency_interleaved(
            &timed,
            self.images.view(),
            self.warmup,
            self.runs,
            self.clock,
        )?;
        let ms: Vec<f64> = times.iter().map(|t| t.median_ms).collect();
        Ok((ms[0], ms[1..].to_vec()))
    }
}

impl LatencyModel {
    /// Measures `graph` (analysed as `groups`) in tract at batch 1: its median T0, each
    /// prunable group at the widths of its ladder, and each pair of groups a layer joins at both
    /// floors, the narrowed models timed in rounds with the unpruned one. Takes about
    /// (variants + groups + pair batches) × (warmup + runs) × T0 plus one tract load per
    /// variant; `settings.max_variants` bounds the variants.
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
        let estimate = latency_interleaved(
            &[&baseline],
            images.view(),
            settings.warmup,
            3,
            settings.clock,
        )?[0]
            .median_ms;
        let timing = Timing {
            graph,
            groups,
            input_shape,
            images,
            baseline,
            warmup: settings.warmup,
            runs: settings.runs_for(estimate),
            clock: settings.clock,
        };
        let vector_width = settings.vector_width.unwrap_or_else(vector_width);
        let costs = pare_ir::node_costs(graph);
        let mut candidates = candidates(graph, groups, &costs, settings);
        candidates.sort_by(|a, b| b.macs.cmp(&a.macs).then(a.id.cmp(&b.id)));
        let spans: Vec<(usize, usize)> = candidates.iter().map(|c| (c.floor, c.full)).collect();
        let macs: Vec<u64> = candidates.iter().map(|c| c.macs).collect();
        let ladders = plan_ladders(&spans, &macs, vector_width, settings);
        let (mut measured, mut unmeasured, mut variants) = (BTreeMap::new(), Vec::new(), 0);
        for (i, (c, ladder)) in candidates.iter().zip(&ladders).enumerate() {
            let Some((&full, narrower)) = ladder.split_last() else {
                unmeasured.push(c.key.clone());
                continue;
            };
            if narrower.is_empty() {
                continue;
            }
            let models = narrower
                .iter()
                .map(|&width| timing.load(&[(c, width)]))
                .collect::<Result<Vec<_>, _>>()?;
            variants += models.len();
            let (baseline_ms, ms) = timing.rounds(&models)?;
            let widths = narrower.iter().chain([&full]);
            let ms = ms.into_iter().chain([baseline_ms]);
            let points = widths.zip(ms).map(|(&width, ms)| WidthTime { width, ms });
            let group = GroupLatency {
                key: c.key.clone(),
                baseline_ms,
                points: points.collect(),
            };
            measured.insert(i, group);
        }
        let ids: Vec<GroupId> = candidates.iter().map(|c| c.id).collect();
        let pairs: Vec<(usize, usize)> = joined(groups, &ids, &costs)
            .into_iter()
            .filter(|(a, b)| measured.contains_key(a) && measured.contains_key(b))
            .take(settings.max_variants.saturating_sub(variants))
            .collect();
        variants += pairs.len();
        let mut pair_terms = Vec::with_capacity(pairs.len());
        for batch in pairs.chunks(settings.widths_per_group - 1) {
            let models = batch
                .iter()
                .map(|&(a, b)| {
                    let (ca, cb) = (&candidates[a], &candidates[b]);
                    timing.load(&[(ca, ca.floor), (cb, cb.floor)])
                })
                .collect::<Result<Vec<_>, _>>()?;
            let (baseline_ms, ms) = timing.rounds(&models)?;
            for (&(a, b), both) in batch.iter().zip(ms) {
                let (ga, gb) = (&measured[&a], &measured[&b]);
                let alone = ga.delta_at(candidates[a].floor) + gb.delta_at(candidates[b].floor);
                pair_terms.push(PairLatency {
                    a: ga.key.clone(),
                    b: gb.key.clone(),
                    cross_ms: both - baseline_ms - alone,
                });
            }
        }
        let measured: Vec<GroupLatency> = measured.into_values().collect();
        let baseline_ms = if measured.is_empty() {
            timing.rounds(&[])?.0
        } else {
            median(measured.iter().map(|g| g.baseline_ms).collect())
        };
        Ok(LatencyModel {
            cache_key: cache_key(&bytes),
            clock: timing.clock,
            input_shape: timing.input_shape,
            table: LatencyTable {
                vector_width,
                baseline_ms,
                groups: measured,
                pairs: pair_terms,
                unmeasured,
            },
            runs: timing.runs,
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
