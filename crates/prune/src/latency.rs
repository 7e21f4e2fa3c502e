//! Predicting a graph's batch-1 latency from measurements (pare-latency makes them in tract):
//! the table of what narrowing each channel group did to the whole model's time.
//!
//! A prediction adds, for every group, how much narrowing that group alone changed the whole
//! model's time: T(widths) = T0 + Σ_g (T_g(w_g) − B_g), where B_g is the unpruned model timed in
//! the same rounds as group g's widths (so load drifts between groups cancel) and T_g is linear
//! between measured widths. A layer that reads group a and writes group b does work a·b, not
//! a + b: narrowing both saves less than the two savings added, so each such pair adds its cross
//! term, measured with both at their floors and scaled by how much of its floor's change each
//! group's width makes (docs/methods/latency.md, "Pairs").
//!
//! Groups are named by their first activation (`group_key`), which survives surgery.

use crate::groups::{analyze, ChannelGroups, GroupId};
use crate::plan::PruningPlan;
use pare_ir::Graph;
use std::collections::BTreeMap;

/// A measured width is only taken for slower than a wider one when it is slower by more than
/// this share of the model's time: ladder times of one group differ by 1–3% from noise alone on
/// a loaded machine (ResNet-20), while a width that leaves SIMD lanes empty cost 7% (VGG-style,
/// 112 of 128 channels).
const SLOWER_MARGIN: f64 = 0.03;

/// One measured width of a group: the whole model's batch-1 median with only that group narrowed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WidthTime {
    pub width: usize,
    pub ms: f64,
}

/// A group's ladder and its times.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupLatency {
    /// The group's name across analyses: its first activation (`group_key`).
    pub key: String,
    /// The unpruned model's median in the same rounds as `points`.
    pub baseline_ms: f64,
    /// Ascending widths, from the floor to the full width, whose time is `baseline_ms`.
    pub points: Vec<WidthTime>,
}

impl GroupLatency {
    pub fn full_width(&self) -> usize {
        self.points.last().map_or(0, |p| p.width)
    }

    /// The model's time with this group at `width` channels: linear between measured widths,
    /// the nearest end's time outside them.
    pub fn time_at(&self, width: usize) -> f64 {
        let p = &self.points;
        let above = p.partition_point(|q| q.width < width);
        match (above.checked_sub(1).map(|i| p[i]), p.get(above).copied()) {
            (_, Some(hi)) if hi.width == width => hi.ms,
            (Some(lo), Some(hi)) => {
                let t = (width - lo.width) as f64 / (hi.width - lo.width) as f64;
                lo.ms + t * (hi.ms - lo.ms)
            }
            (None, Some(end)) | (Some(end), None) => end.ms,
            (None, None) => self.baseline_ms,
        }
    }

    /// How much narrowing this group alone to `width` changes the model's time.
    pub fn delta_at(&self, width: usize) -> f64 {
        self.time_at(width) - self.baseline_ms
    }

    /// How much of the floor's change `width` makes: `delta_at(width) / delta_at(floor)`, within
    /// [0, 1]; zero when the floor saved nothing.
    pub fn share_of_floor_change(&self, width: usize) -> f64 {
        let Some(floor) = self.points.first() else {
            return 0.0;
        };
        let at_floor = self.delta_at(floor.width);
        if at_floor < 0.0 {
            (self.delta_at(width) / at_floor).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// Two measured groups joined by a layer (a Conv, Gemm or MatMul reading one and writing the
/// other), measured once with both at their floors: `cross_ms` is that time less the baseline
/// and less both groups' own changes at their floors. At other widths the term scales with each
/// group's `share_of_floor_change`, as a layer whose work is the product of the two widths does.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairLatency {
    pub a: String,
    pub b: String,
    pub cross_ms: f64,
}

/// A graph's batch-1 latency, measured as given and per group at a ladder of widths: what a
/// latency target is predicted with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencyTable {
    /// The f32 lanes of the CPU's vector registers the ladders were built around.
    pub vector_width: usize,
    /// T0: the unpruned model's median, the median of every group's `baseline_ms`.
    pub baseline_ms: f64,
    /// The measured groups, highest MACs at stake first.
    pub groups: Vec<GroupLatency>,
    /// Pairs of measured groups joined by a layer: the correction of their product.
    pub pairs: Vec<PairLatency>,
    /// Prunable groups left unmeasured (a bound on the variants): predicted as no change.
    pub unmeasured: Vec<String>,
}

impl LatencyTable {
    pub fn group(&self, key: &str) -> Option<&GroupLatency> {
        self.groups.iter().find(|g| g.key == key)
    }

    /// The predicted median in milliseconds with each group of `widths` (by key) at its width;
    /// groups it does not name keep their full width, and unknown keys change nothing.
    pub fn predict(&self, widths: &BTreeMap<String, usize>) -> f64 {
        let alone: f64 = self
            .groups
            .iter()
            .filter_map(|g| widths.get(&g.key).map(|&w| g.delta_at(w)))
            .sum();
        let share = |key: &str| {
            self.group(key)
                .zip(widths.get(key))
                .map_or(0.0, |(g, &w)| g.share_of_floor_change(w))
        };
        let pairs: f64 = self
            .pairs
            .iter()
            .map(|p| p.cross_ms * share(&p.a) * share(&p.b))
            .sum();
        self.baseline_ms + alone + pairs
    }

    /// The predicted median of `graph` in milliseconds, its groups' widths read from the graph.
    pub fn predict_graph(&self, graph: &Graph) -> f64 {
        let groups = analyze(graph);
        self.predict(&widths_after(graph, &groups, &PruningPlan::default()))
    }

    /// Milliseconds one channel of group `key` saves on average between `width` and the
    /// narrowest measured width: what a latency target weighs a channel's score against. Zero
    /// for an unmeasured group, or one whose narrowing saved nothing.
    pub fn saving_per_channel(&self, key: &str, width: usize) -> f64 {
        let Some(group) = self.group(key) else {
            return 0.0;
        };
        let Some(floor) = group.points.first().map(|p| p.width) else {
            return 0.0;
        };
        if width <= floor {
            return 0.0;
        }
        ((group.time_at(width) - group.time_at(floor)) / (width - floor) as f64).max(0.0)
    }

    /// The widths of group `key` (`full` channels wide) a width ladder snaps to: every multiple
    /// of the vector width and every measured width, less each measured width that was slower
    /// than a wider one measured by more than `SLOWER_MARGIN` of the model's time, plus `full`. A group no wider than one vector register, or one
    /// not measured, may take any width.
    pub fn fast_widths(&self, key: &str, full: usize) -> Vec<usize> {
        let vector_width = self.vector_width.max(1);
        let measured = self.group(key).map_or(&[][..], |g| &g.points[..]);
        if full <= vector_width || measured.is_empty() {
            return (1..=full).collect();
        }
        let margin = SLOWER_MARGIN * self.group(key).map_or(0.0, |g| g.baseline_ms);
        let slower_than_wider = |w: usize| {
            let t = measured.iter().find(|p| p.width == w).map(|p| p.ms);
            t.is_some_and(|t| measured.iter().any(|p| p.width > w && p.ms + margin < t))
        };
        let mut widths: Vec<usize> = (1..=full / vector_width)
            .map(|k| k * vector_width)
            .chain(measured.iter().map(|p| p.width).filter(|&w| w <= full))
            .filter(|&w| !slower_than_wider(w))
            .chain([full])
            .collect();
        widths.sort_unstable();
        widths.dedup();
        widths
    }
}

/// A group's name across analyses: the name of its first activation, or of the first tensor it
/// slices. Group ids are renumbered after surgery; these names are not.
pub fn group_key(graph: &Graph, groups: &ChannelGroups, id: GroupId) -> Option<String> {
    Some(graph.value(groups.key(id)?).name.clone())
}

/// The width of every group of `graph` (analysed as `groups`) that is not frozen once `plan` is
/// applied, by `group_key`: what `LatencyTable::predict` takes. An empty plan gives the current
/// widths. A group pruned to one channel is no longer prunable, but its width still counts.
pub fn widths_after(
    graph: &Graph,
    groups: &ChannelGroups,
    plan: &PruningPlan,
) -> BTreeMap<String, usize> {
    groups
        .groups
        .iter()
        .filter(|g| g.frozen.is_empty())
        .filter_map(|g| {
            let key = group_key(graph, groups, g.id)?;
            Some((key, plan.kept(g.id, g.channels).len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(key: &str, baseline_ms: f64, points: &[(usize, f64)]) -> GroupLatency {
        GroupLatency {
            key: key.into(),
            baseline_ms,
            points: points
                .iter()
                .map(|&(width, ms)| WidthTime { width, ms })
                .collect(),
        }
    }

    /// Two groups measured in rounds whose baselines differ (10.0 and 10.4) from T0 = 10.2.
    fn model() -> LatencyTable {
        LatencyTable {
            vector_width: 16,
            baseline_ms: 10.2,
            groups: vec![
                group("a", 10.0, &[(4, 6.0), (16, 7.0), (20, 9.0), (32, 10.0)]),
                group("b", 10.4, &[(2, 9.4), (8, 10.4)]),
            ],
            pairs: Vec::new(),
            unmeasured: vec!["c".into()],
        }
    }

    fn widths(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|&(k, w)| (k.to_string(), w)).collect()
    }

    #[test]
    fn unpruned_widths_predict_the_baseline() {
        let m = model();
        assert_eq!(m.predict(&widths(&[])), 10.2);
        assert_eq!(m.predict(&widths(&[("a", 32), ("b", 8), ("c", 5)])), 10.2);
    }

    #[test]
    fn prediction_adds_each_group_s_change_interpolated_linearly() {
        let m = model();
        // a at 16: 7.0 − 10.0 = −3; b at 5: halfway from 9.4 to 10.4, 9.9 − 10.4 = −0.5.
        let t = m.predict(&widths(&[("a", 16), ("b", 5)]));
        assert!((t - (10.2 - 3.0 - 0.5)).abs() < 1e-12, "{t}");
        // a at 10: halfway from 6.0 to 7.0 → −3.5; at 26: halfway from 9 to 10 → −0.5.
        assert!((m.predict(&widths(&[("a", 10)])) - 6.7).abs() < 1e-12);
        assert!((m.predict(&widths(&[("a", 26)])) - 9.7).abs() < 1e-12);
        // Below the floor: the floor's time.
        assert!((m.predict(&widths(&[("a", 1)])) - 6.2).abs() < 1e-12);
    }

    #[test]
    fn a_pair_adds_its_cross_term_scaled_by_each_group_s_share() {
        // r: the floor (2) saves 4 ms, width 6 saves 2: half the floor's change.
        // w: the floor (5) saves 2 ms: all of it at 5.
        let m = LatencyTable {
            baseline_ms: 10.0,
            groups: vec![
                group("r", 10.0, &[(2, 6.0), (10, 10.0)]),
                group("w", 10.0, &[(5, 8.0), (10, 10.0)]),
            ],
            pairs: vec![PairLatency {
                a: "r".into(),
                b: "w".into(),
                cross_ms: 0.6,
            }],
            ..model()
        };
        assert_eq!(m.groups[0].share_of_floor_change(6), 0.5);
        let floors = m.predict(&widths(&[("r", 2), ("w", 5)]));
        assert!(
            (floors - (10.0 - 4.0 - 2.0 + 0.6)).abs() < 1e-12,
            "{floors}"
        );
        let both = m.predict(&widths(&[("r", 6), ("w", 5)]));
        assert!(
            (both - (10.0 - 2.0 - 2.0 + 0.6 * 0.5)).abs() < 1e-12,
            "{both}"
        );
        let alone = m.predict(&widths(&[("r", 6)]));
        assert!(
            (alone - 8.0).abs() < 1e-12,
            "one group alone: no pair term, {alone}"
        );
        assert_eq!(m.predict(&widths(&[("r", 10), ("w", 10)])), 10.0);
    }

    #[test]
    fn widths_snap_to_multiples_of_the_vector_width_and_fast_measured_ones() {
        // 20 was measured slower than 32 and 4 slower than 16, both by more than 3% of the
        // model's 5 ms: neither is offered; the unmeasured multiples of 8 are.
        let m = LatencyTable {
            vector_width: 8,
            groups: vec![group(
                "g",
                5.0,
                &[(4, 3.0), (16, 2.5), (20, 4.5), (32, 4.0), (40, 5.0)],
            )],
            ..model()
        };
        assert_eq!(m.fast_widths("g", 40), vec![8, 16, 24, 32, 40]);
        // Full widths need not be multiples; unmeasured or narrow groups take any width.
        assert_eq!(m.fast_widths("g", 37), vec![8, 16, 24, 32, 37]);
        assert_eq!(m.fast_widths("other", 5), vec![1, 2, 3, 4, 5]);
        assert_eq!(m.fast_widths("g", 8), (1..=8).collect::<Vec<_>>());
        // Slower than a wider width by less than 3% of the model's time: noise, still offered.
        let noisy = LatencyTable {
            vector_width: 8,
            groups: vec![group("g", 5.0, &[(12, 4.9), (20, 5.1), (32, 5.0)])],
            ..model()
        };
        assert_eq!(noisy.fast_widths("g", 32), vec![8, 12, 16, 20, 24, 32]);
    }

    #[test]
    fn a_channel_saves_the_mean_slope_down_to_the_narrowest_width() {
        let m = model();
        // a: 10.0 ms at 32, 6.0 at 4: 4 ms over 28 channels.
        assert!((m.saving_per_channel("a", 32) - 4.0 / 28.0).abs() < 1e-12);
        // From 16: 1 ms over 12 channels.
        assert!((m.saving_per_channel("a", 16) - 1.0 / 12.0).abs() < 1e-12);
        assert_eq!(m.saving_per_channel("a", 4), 0.0);
        assert_eq!(m.saving_per_channel("c", 5), 0.0, "unmeasured");
    }
}
