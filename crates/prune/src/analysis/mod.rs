//! Effective-filter analysis (docs/methods/hierarchical.md): how many of a group's channels are
//! effective, from the singularity of a Gram matrix of what its consumers see, and so how far each
//! group, and the network, can be pruned.
//!
//! `gram` accumulates K_g over calibration passes, `linalg` turns it into an effective rank r_g
//! and a keep order (pivoted Cholesky). The caps r_g and the network's maximum reduction R_max are
//! measured by applying plans to copies of the graph, never estimated by a formula.

mod gram;
mod linalg;
mod refit;

pub use refit::{refit_consumers, Refit};

use crate::criteria::calibration_passes;
use crate::groups::{ChannelGroups, Group, GroupId, SliceKind};
use crate::plan::PruningPlan;
use crate::selection::Cost;
use crate::PruneError;
use gram::{silent_channels, Gram};
use nalgebra::DMatrix;
use pare_ir::Graph;
use pare_train::{BatchStream, Objective};

/// What the columns of a group's Gram matrix are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GramSource {
    /// The loss gradient of every consumer weight reading the channel.
    Gradients,
    /// The channel's activation where each consumer reads it: a forward-only variant.
    Activations,
}

impl GramSource {
    /// Both variants, in the order users see them listed.
    pub const ALL: [GramSource; 2] = [GramSource::Gradients, GramSource::Activations];

    /// The name users give it, as in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            GramSource::Gradients => "gradients",
            GramSource::Activations => "activations",
        }
    }
}

/// How the analysis runs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AnalysisSettings {
    /// Calibration batches K_g is summed over.
    pub batches: usize,
    /// The energy rule's tolerance: r_g eigenvalues hold at least 1 − ε of K_g's trace.
    pub epsilon: f64,
    pub gram: GramSource,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        AnalysisSettings {
            batches: 32,
            epsilon: 2e-2,
            gram: GramSource::Gradients,
        }
    }
}

impl AnalysisSettings {
    pub(crate) fn check(&self) -> Result<(), PruneError> {
        if self.batches == 0 {
            return Err(PruneError::Setting("the analysis batches", "at least 1"));
        }
        if !(0.0..1.0).contains(&self.epsilon) {
            return Err(PruneError::Setting(
                "the energy tolerance epsilon",
                "in [0, 1)",
            ));
        }
        Ok(())
    }
}

/// One prunable group's effective filters.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupAnalysis {
    pub group: GroupId,
    /// What writes the group, for people: "Conv 'conv1' output".
    pub name: String,
    pub channels: usize,
    /// r_g: the effective rank, raised to the group's floor.
    pub effective: usize,
    /// Channels every consumer weight of which is exactly zero.
    pub silent: usize,
    /// Every channel, in the order to keep them: pivoted Cholesky over K_g, silent ones last.
    pub keep_order: Vec<usize>,
}

impl GroupAnalysis {
    /// n_g − r_g: the most channels the cap lets go.
    pub fn removable(&self) -> usize {
        self.channels - self.effective
    }

    /// The `count` channels to drop: the end of the keep order.
    fn dropped(&self, count: usize) -> Vec<usize> {
        self.keep_order[self.channels - count.min(self.removable())..].to_vec()
    }
}

/// The analysis of every prunable group of one graph.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveFilters {
    pub settings: AnalysisSettings,
    pub groups: Vec<GroupAnalysis>,
}

/// Runs the analysis on `graph` (whose groups are `groups`) over `settings.batches` batches of
/// `stream`, calling `on_batch` with the number of batches done. No group's r_g is below
/// max(1, ⌈min_keep · n_g⌉).
pub fn effective_filters(
    graph: &Graph,
    groups: &ChannelGroups,
    stream: &mut BatchStream,
    settings: AnalysisSettings,
    loss: &Objective,
    min_keep: f64,
    on_batch: &mut dyn FnMut(usize),
) -> Result<EffectiveFilters, PruneError> {
    settings.check()?;
    let prunable: Vec<&Group> = groups.groups.iter().filter(|g| g.prunable()).collect();
    let mut grams: Vec<Gram> = prunable.iter().map(|g| Gram::new(g.channels)).collect();
    let mut done = 0;
    calibration_passes(
        graph,
        stream,
        settings.batches,
        loss,
        false,
        |tape, grads| {
            for (gram, group) in grams.iter_mut().zip(&prunable) {
                gram.add(graph, groups, group, settings.gram, tape, grads);
            }
            done += 1;
            on_batch(done);
        },
    )?;
    let analyses = prunable
        .iter()
        .zip(&grams)
        .map(|(group, gram)| {
            let floor = ((min_keep * group.channels as f64).ceil() as usize).max(1);
            group_analysis(graph, groups, group, gram, settings.epsilon, floor)
        })
        .collect();
    Ok(EffectiveFilters {
        settings,
        groups: analyses,
    })
}

/// r_g and the keep order of one group from its Gram matrix.
fn group_analysis(
    graph: &Graph,
    groups: &ChannelGroups,
    group: &Group,
    gram: &Gram,
    epsilon: f64,
    floor: usize,
) -> GroupAnalysis {
    let silent = silent_channels(graph, groups, group);
    let live: Vec<usize> = (0..group.channels).filter(|&c| !silent[c]).collect();
    let (rank, mut keep_order) = if gram.evidence {
        let k = DMatrix::from_fn(live.len(), live.len(), |i, j| gram.k[(live[i], live[j])]);
        let rank = linalg::energy_rank(&linalg::eigenvalues(&k), epsilon);
        let order = linalg::pivoted_cholesky_order(&k);
        (rank, order.into_iter().map(|i| live[i]).collect::<Vec<_>>())
    } else {
        // Nothing reads the group through a weight: no evidence that any channel is redundant.
        (live.len(), live.clone())
    };
    keep_order.extend((0..group.channels).filter(|&c| silent[c]));
    let name = group
        .slices
        .iter()
        .map(|&i| &groups.slices[i])
        .find(|s| s.kind == SliceKind::Producer)
        .or_else(|| group.slices.first().map(|&i| &groups.slices[i]))
        .map_or_else(|| format!("group {}", group.id.0), |s| s.role.clone());
    GroupAnalysis {
        group: group.id,
        name,
        channels: group.channels,
        effective: rank.max(floor).min(group.channels),
        silent: group.channels - live.len(),
        keep_order,
    }
}

impl EffectiveFilters {
    /// The plan that drops ⌊λ·(n_g − r_g)⌋ channels of every group, the end of each keep order:
    /// at λ = 1 every group is at its cap.
    pub fn plan(&self, lambda: f64) -> PruningPlan {
        let mut plan = PruningPlan::default();
        for g in &self.groups {
            let count = (lambda.clamp(0.0, 1.0) * g.removable() as f64 + 1e-9).floor() as usize;
            if count > 0 {
                plan.drop_channels(g.group, g.dropped(count));
            }
        }
        plan
    }

    /// Every λ in (0, 1] at which some group's count changes, ascending: k / (n_g − r_g).
    pub fn breakpoints(&self) -> Vec<f64> {
        let mut points: Vec<f64> = self
            .groups
            .iter()
            .flat_map(|g| (1..=g.removable()).map(move |k| k as f64 / g.removable() as f64))
            .collect();
        points.sort_by(f64::total_cmp);
        points.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
        points
    }

    /// The figures people read: per group its cap and what pruning to it alone saves, and for
    /// the network the cost with every group at its cap, each measured on a pruned copy.
    pub fn report(
        &self,
        graph: &Graph,
        groups: &ChannelGroups,
    ) -> Result<RedundancyReport, PruneError> {
        let original = Cost::of(graph);
        let cost_of = |plan: &PruningPlan| -> Result<Cost, PruneError> {
            let mut copy = graph.clone();
            plan.apply(&mut copy, groups)?;
            Ok(Cost::of(&copy))
        };
        let mut rows = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let mut alone = PruningPlan::default();
            alone.drop_channels(g.group, g.dropped(g.removable()));
            let at_cap = if g.removable() > 0 {
                cost_of(&alone)?
            } else {
                original
            };
            rows.push(GroupRedundancy {
                group: g.group,
                name: g.name.clone(),
                channels: g.channels,
                effective: g.effective,
                silent: g.silent,
                max_prune_ratio: g.removable() as f64 / g.channels as f64,
                macs_saved: original.macs - at_cap.macs,
                params_saved: original.params - at_cap.params,
            });
        }
        let at_caps = cost_of(&self.plan(1.0))?;
        let reduction = |a: u64, b: u64| 1.0 - a as f64 / b.max(1) as f64;
        Ok(RedundancyReport {
            settings: self.settings,
            groups: rows,
            original,
            at_caps,
            r_max_macs: reduction(at_caps.macs, original.macs),
            r_max_params: reduction(at_caps.params, original.params),
        })
    }
}

/// One group's line of the analysis report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupRedundancy {
    pub group: GroupId,
    pub name: String,
    pub channels: usize,
    /// r_g.
    pub effective: usize,
    pub silent: usize,
    /// 1 − r_g / n_g.
    pub max_prune_ratio: f64,
    /// What pruning this group alone to its cap saves.
    pub macs_saved: u64,
    pub params_saved: u64,
}

/// The analysis as reported: per group its cap, for the network R_max.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RedundancyReport {
    pub settings: AnalysisSettings,
    pub groups: Vec<GroupRedundancy>,
    pub original: Cost,
    /// The network with every group pruned to its cap.
    pub at_caps: Cost,
    /// 1 − at_caps / original: the largest reduction the caps allow.
    pub r_max_macs: f64,
    pub r_max_params: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze;
    use pare_data::Dataset;
    use pare_kernels::rng::SplitMix64;
    use pare_onnx::{attr, DimSpec, GraphBuilder};
    use pare_train::Loss;

    /// Channels of the first convolution: 0–2 independent, 3 a copy of 0, 4 = 1 + ½·2, 5 dead
    /// (zero filter and bias), 6 alive but every weight reading it zero.
    const CHANNELS: usize = 7;

    /// x[N,2,6,6] → Conv c1 (7, 3×3, pad 1, no activation) → Conv c2 (4, 3×3, pad 1) → Relu →
    /// GlobalAveragePool → Flatten → Gemm (3 classes) → y.
    fn graph() -> Graph {
        let mut rng = SplitMix64::new(7);
        let mut random =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.unit_f64() as f32 * 2.0 - 1.0).collect() };
        let filter = 2 * 9;
        let f: Vec<Vec<f32>> = (0..3).map(|_| random(filter + 1)).collect();
        let mut filters = vec![f[0].clone(), f[1].clone(), f[2].clone(), f[0].clone()];
        filters.push(f[1].iter().zip(&f[2]).map(|(a, b)| a + 0.5 * b).collect());
        filters.push(vec![0.0; filter + 1]);
        filters.push(random(filter + 1));
        let (weights, bias): (Vec<Vec<f32>>, Vec<f32>) = filters
            .into_iter()
            .map(|mut w| {
                let b = w.pop().unwrap();
                (w, b)
            })
            .unzip();
        let mut c2 = random(4 * CHANNELS * 9);
        for o in 0..4 {
            c2[(o * CHANNELS + 6) * 9..(o * CHANNELS + 7) * 9].fill(0.0);
        }
        let mut b = GraphBuilder::new("dependent", 17);
        b.input("x", [DimSpec::from("N"), 2.into(), 6.into(), 6.into()]);
        let conv = || vec![attr::ints("pads", &[1, 1, 1, 1])];
        b.initializer(attr::tensor_f32("c1.w", &[7, 2, 3, 3], weights.concat()));
        b.initializer(attr::tensor_f32("c1.b", &[7], bias));
        b.node("Conv", &["x", "c1.w", "c1.b"], &["a"], conv());
        b.initializer(attr::tensor_f32("c2.w", &[4, 7, 3, 3], c2));
        b.node("Conv", &["a", "c2.w"], &["c"], conv());
        b.node("Relu", &["c"], &["r"], vec![]);
        b.node("GlobalAveragePool", &["r"], &["gap"], vec![]);
        b.node("Flatten", &["gap"], &["flat"], vec![]);
        b.initializer(attr::tensor_f32("fc.w", &[3, 4], random(12)));
        b.node(
            "Gemm",
            &["flat", "fc.w"],
            &["y"],
            vec![attr::int("transB", 1)],
        );
        b.output("y", [DimSpec::from("N"), 3.into()]);
        pare_ir::import(&b.build()).unwrap()
    }

    fn data() -> Dataset {
        let mut rng = SplitMix64::new(3);
        Dataset::new(
            ndarray::Array4::from_shape_fn((32, 2, 6, 6), |_| rng.unit_f64() as f32),
            (0..32).map(|i| (i * 7) % 3).collect(),
        )
    }

    fn analysis(graph: &Graph, gram: GramSource) -> EffectiveFilters {
        let data = data();
        let mut stream = BatchStream::new(&data, 8, 0);
        let settings = AnalysisSettings {
            batches: 4,
            epsilon: 1e-4,
            gram,
        };
        let groups = analyze(graph);
        let mut batches = Vec::new();
        let result = effective_filters(
            graph,
            &groups,
            &mut stream,
            settings,
            &Loss::CrossEntropy.into(),
            0.05,
            &mut |b| batches.push(b),
        )
        .unwrap();
        assert_eq!(batches, vec![1, 2, 3, 4]);
        result
    }

    fn first_conv(filters: &EffectiveFilters) -> &GroupAnalysis {
        filters
            .groups
            .iter()
            .find(|g| g.channels == CHANNELS)
            .expect("the first convolution's group")
    }

    #[test]
    fn both_grams_find_the_three_effective_filters() {
        let g = graph();
        for gram in GramSource::ALL {
            let filters = analysis(&g, gram);
            let c1 = first_conv(&filters);
            assert_eq!(c1.effective, 3, "{gram:?}: {c1:?}");
            assert_eq!(c1.silent, 1, "{gram:?}");
            assert_eq!(c1.name, "Conv 'Conv_0' output");
            // The four channels to drop are the dead, the silent and one of each dependent pair;
            // the kept three are independent: one of the copies, two of {1, 2, 4}.
            let kept = &c1.keep_order[..3];
            assert_eq!(
                kept.iter().filter(|c| [0, 3].contains(c)).count(),
                1,
                "{kept:?}"
            );
            assert_eq!(kept.iter().filter(|c| [1, 2, 4].contains(c)).count(), 2);
            // The dead channel (nothing left to explain) ends the live ones; the silent one is last.
            assert_eq!(&c1.keep_order[5..], &[5, 6], "{gram:?}");
            // The second convolution's four channels are independent.
            let c2 = filters.groups.iter().find(|g| g.channels == 4).unwrap();
            assert_eq!(c2.effective, 4, "{gram:?}: {c2:?}");
        }
    }

    #[test]
    fn a_looser_tolerance_and_a_floor_change_the_rank_as_told() {
        let g = graph();
        let groups = analyze(&g);
        let data = data();
        let run = |epsilon: f64, min_keep: f64| {
            let mut stream = BatchStream::new(&data, 8, 0);
            let settings = AnalysisSettings {
                batches: 2,
                epsilon,
                gram: GramSource::Activations,
            };
            let f = effective_filters(
                &g,
                &groups,
                &mut stream,
                settings,
                &Loss::CrossEntropy.into(),
                min_keep,
                &mut |_| {},
            )
            .unwrap();
            first_conv(&f).effective
        };
        assert_eq!(
            run(0.999, 0.0),
            1,
            "one eigenvalue holds a thousandth of the trace"
        );
        assert_eq!(run(1e-4, 0.9), 7, "⌈0.9 · 7⌉ = 7");
        let bad = AnalysisSettings {
            epsilon: 1.0,
            ..Default::default()
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn the_caps_plan_and_its_dry_run_measure_the_pruned_graph() {
        let g = graph();
        let groups = analyze(&g);
        let filters = analysis(&g, GramSource::Gradients);
        let c1 = first_conv(&filters).group;
        assert_eq!(filters.plan(1.0).drop[&c1].len(), 4);
        assert_eq!(filters.plan(0.5).drop[&c1].len(), 2);
        assert!(filters.plan(0.2).drop.is_empty());
        assert_eq!(filters.breakpoints(), vec![0.25, 0.5, 0.75, 1.0]);
        let report = filters.report(&g, &groups).unwrap();
        // Per sample: c1 is 2·9 MACs per output at 36 positions, c2 reads c1's channels, fc 4·3.
        let macs = |c: u64| c * 2 * 9 * 36 + 4 * c * 9 * 36 + 12;
        assert_eq!(report.original.macs, macs(7));
        assert_eq!(report.at_caps.macs, macs(3));
        let row = report.groups.iter().find(|r| r.group == c1).unwrap();
        assert_eq!(row.macs_saved, macs(7) - macs(3));
        assert!((row.max_prune_ratio - 4.0 / 7.0).abs() < 1e-12);
        assert!((report.r_max_macs - (1.0 - macs(3) as f64 / macs(7) as f64)).abs() < 1e-12);
    }
}
