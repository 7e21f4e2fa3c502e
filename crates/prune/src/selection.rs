//! From scores to plans: the order in which channels are dropped, and the shortest prefix of that
//! order that meets a cost target.
//!
//! Every prefix of a `DropOrder` is a valid plan: it respects each group's minimum width and the
//! widths its `WidthRule` allows, and never empties a group. This module measures costs by
//! applying plans to a copy of the graph, so it never changes the caller's graph.

use crate::criteria::Scores;
use crate::groups::{ChannelGroups, GroupId};
use crate::latency::LatencyTable;
use crate::plan::PruningPlan;
use crate::PruneError;
use pare_ir::Graph;
use std::collections::BTreeMap;

/// How scores of different groups are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ranking {
    /// Each group loses the same fraction of its channels, its lowest-scored first.
    Local,
    /// Channels compete across groups on their score divided by their group's mean score.
    Global,
}

/// Parameters and multiply-accumulates of a graph (symbolic dimensions as 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Cost {
    pub params: u64,
    pub macs: u64,
}

impl Cost {
    pub fn of(graph: &Graph) -> Cost {
        let costs = pare_ir::node_costs(graph);
        Cost {
            params: costs.iter().map(|c| c.params as u64).sum(),
            macs: costs.iter().map(|c| c.macs).sum(),
        }
    }
}

/// A cost to reach, as a fraction of the original model's.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Macs(f64),
    Params(f64),
    /// Batch-1 latency, predicted from a `LatencyTable` while pruning.
    Latency(f64),
}

impl Target {
    /// The fraction of the original to reach.
    pub fn goal(&self) -> f64 {
        match self {
            Target::Macs(f) | Target::Params(f) | Target::Latency(f) => *f,
        }
    }

    /// Whether a cost of `fraction` of the original meets the target.
    pub fn allows(&self, fraction: f64) -> bool {
        fraction <= self.goal() + 1e-12
    }
}

/// What costs are measured against: the original graph's cost and, for a latency target, the
/// table that predicts a graph's time.
#[derive(Debug, Clone, Copy)]
pub struct Meter<'a> {
    original: Cost,
    latency: Option<&'a LatencyTable>,
}

impl<'a> Meter<'a> {
    pub fn new(original: &Graph, latency: Option<&'a LatencyTable>) -> Self {
        Meter {
            original: Cost::of(original),
            latency,
        }
    }

    /// The original graph's parameters and MACs.
    pub fn original(&self) -> Cost {
        self.original
    }

    /// `graph`'s cost in `target`'s measure, as a fraction of the original's. A latency is
    /// predicted from the table, relative to its T0; without a table it is 1 (nothing is known
    /// to be faster; `CompressConfig::check` refuses latency targets without one).
    pub fn fraction(&self, target: Target, graph: &Graph) -> f64 {
        let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
        match target {
            Target::Macs(_) => ratio(Cost::of(graph).macs, self.original.macs),
            Target::Params(_) => ratio(Cost::of(graph).params, self.original.params),
            Target::Latency(_) => self.latency.map_or(1.0, |table| {
                table.predict_graph(graph) / table.baseline_ms.max(f64::MIN_POSITIVE)
            }),
        }
    }

    pub fn is_met(&self, target: Target, graph: &Graph) -> bool {
        target.allows(self.fraction(target, graph))
    }

    /// How a latency target cuts the groups of `graph` (analysed as `groups`): each to its fast
    /// widths, every channel weighed by the time one channel of its group saves. Multiples of
    /// `round_to` for other targets, or when `snap` is off (`round_to` then still holds).
    pub fn width_rule(
        &self,
        target: Option<Target>,
        graph: &Graph,
        groups: &ChannelGroups,
        round_to: usize,
        snap: bool,
    ) -> WidthRule {
        let mut rule = WidthRule::multiples(round_to);
        let (Some(Target::Latency(_)), Some(table)) = (target, self.latency) else {
            return rule;
        };
        let keyed: Vec<(GroupId, String, usize)> = groups
            .groups
            .iter()
            .filter(|g| g.prunable())
            .filter_map(|g| Some((g.id, crate::group_key(graph, groups, g.id)?, g.channels)))
            .collect();
        let savings: Vec<f64> = keyed
            .iter()
            .map(|(_, key, width)| table.saving_per_channel(key, *width))
            .collect();
        let positive: Vec<f64> = savings.iter().copied().filter(|&s| s > 0.0).collect();
        let mean = positive.iter().sum::<f64>() / positive.len().max(1) as f64;
        for ((id, key, width), saving) in keyed.into_iter().zip(savings) {
            if mean > 0.0 {
                rule.saving.insert(id, saving / mean);
            }
            if snap {
                rule.snap.insert(id, table.fast_widths(&key, width));
            }
        }
        rule
    }
}

/// Which widths a group may be cut to, and what a channel of each group saves.
#[derive(Debug, Clone, Default)]
pub struct WidthRule {
    /// Widths that shrink stay multiples of this (groups `snap` does not list).
    pub round_to: usize,
    /// Per group, the widths it may be cut to, ascending.
    pub snap: BTreeMap<GroupId, Vec<usize>>,
    /// Per group, the time one of its channels saves relative to the mean over groups: a
    /// channel's place in the order is its score divided by this (accuracy lost per millisecond
    /// saved). A group not listed weighs 1.
    pub saving: BTreeMap<GroupId, f64>,
}

impl WidthRule {
    /// Multiples of `round_to`, every channel weighing the same.
    pub fn multiples(round_to: usize) -> Self {
        WidthRule {
            round_to: round_to.max(1),
            ..WidthRule::default()
        }
    }

    /// The width group `g`, `width` wide, is cut to when `dropped` of its channels go: the
    /// widest allowed width no wider than what is left, and never below `floor`.
    fn kept(&self, g: GroupId, width: usize, dropped: usize, floor: usize) -> usize {
        let left = width - dropped;
        match self.snap.get(&g) {
            Some(allowed) => {
                let mut fits = allowed
                    .iter()
                    .copied()
                    .filter(|&w| w >= floor && w <= width);
                let smallest = fits.clone().next().unwrap_or(width);
                fits.rfind(|&w| w <= left).unwrap_or(smallest)
            }
            None => {
                let n = self.round_to.max(1);
                (left / n * n).max(floor.div_ceil(n) * n)
            }
        }
    }

    /// What ranks a channel of group `g` ahead: its key divided by the group's saving (a group
    /// that saves nothing goes last).
    fn weigh(&self, g: GroupId, key: f64) -> f64 {
        match self.saving.get(&g) {
            Some(&s) if s > 0.0 => key / s,
            Some(_) => f64::INFINITY,
            None => key,
        }
    }
}

/// How many channels `shortest_within` tries to give back (each try prunes a copy of the graph).
const GIVE_BACK_TRIES: usize = 64;

/// Channels in the order they are dropped.
#[derive(Debug, Clone)]
pub struct DropOrder {
    /// (group, position in the group's ranking), first dropped first.
    order: Vec<(GroupId, usize)>,
    /// Per group, its channels from lowest to highest score.
    ranked: BTreeMap<GroupId, Vec<usize>>,
    /// Per group, the fewest channels it may keep.
    min_kept: BTreeMap<GroupId, usize>,
    widths: WidthRule,
}

impl DropOrder {
    /// Orders the scored channels. A group offers at most `max_drop(group, width)` channels and
    /// keeps at least `min_kept(group)`; widths shrink to those `widths` allows, and its savings
    /// weigh each group's channels.
    pub fn new(
        scores: &Scores,
        ranking: Ranking,
        max_drop: impl Fn(GroupId, usize) -> usize,
        min_kept: impl Fn(GroupId) -> usize,
        widths: WidthRule,
    ) -> DropOrder {
        let mut keyed: Vec<(f64, GroupId, usize)> = Vec::new();
        let mut ranked = BTreeMap::new();
        let mut floors = BTreeMap::new();
        for (&g, s) in scores {
            let width = s.len();
            let mut channels: Vec<usize> = (0..width).collect();
            channels.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
            let floor = min_kept(g).clamp(1, width.max(1));
            let offered = max_drop(g, width).min(width.saturating_sub(floor));
            let mean = s.iter().sum::<f64>() / width.max(1) as f64;
            for (rank, &c) in channels.iter().enumerate().take(offered) {
                let key = match ranking {
                    Ranking::Local => (rank as f64 + 0.5) / width as f64,
                    Ranking::Global if mean > 0.0 => s[c] / mean,
                    Ranking::Global => 0.0,
                };
                keyed.push((widths.weigh(g, key), g, rank));
            }
            ranked.insert(g, channels);
            floors.insert(g, floor);
        }
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        DropOrder {
            order: keyed.into_iter().map(|(_, g, r)| (g, r)).collect(),
            ranked,
            min_kept: floors,
            widths,
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The plan that drops the first `k` channels of the order, widths cut down to one the
    /// `WidthRule` allows (but not below the group's minimum, itself rounded up to one).
    pub fn plan(&self, k: usize) -> PruningPlan {
        self.plan_of(&self.order[..k.min(self.order.len())])
    }

    /// The plan that drops as many channels of each group as `chosen` names, lowest-scored first,
    /// with the same rounding as `plan`.
    fn plan_of(&self, chosen: &[(GroupId, usize)]) -> PruningPlan {
        let mut counts: BTreeMap<GroupId, usize> = BTreeMap::new();
        for &(g, _) in chosen {
            *counts.entry(g).or_default() += 1;
        }
        let mut plan = PruningPlan::default();
        for (g, dropped) in counts {
            let ranked = &self.ranked[&g];
            let width = ranked.len();
            let kept = self.widths.kept(g, width, dropped, self.min_kept[&g]);
            if kept < width {
                plan.drop_channels(g, ranked[..width - kept].iter().copied());
            }
        }
        plan
    }

    /// A plan of channels among the first `limit` of the order whose pruned graph satisfies
    /// `within` (given the pruned copy), and whether it does (the whole `limit` prefix when even that falls short).
    ///
    /// The shortest such prefix is found first; then, from its highest-scored channel down (at
    /// most `GIVE_BACK_TRIES` of them), each channel the target does not need is given back, so
    /// one costly channel early in the order does not overshoot the target.
    pub fn shortest_within(
        &self,
        graph: &Graph,
        groups: &ChannelGroups,
        limit: usize,
        within: impl Fn(&Graph) -> bool,
    ) -> Result<(PruningPlan, bool), PruneError> {
        let limit = limit.min(self.len());
        let meets = |chosen: &[(GroupId, usize)]| -> Result<bool, PruneError> {
            let mut copy = graph.clone();
            self.plan_of(chosen).apply(&mut copy, groups)?;
            Ok(within(&copy))
        };
        if !meets(&self.order[..limit])? {
            return Ok((self.plan(limit), false));
        }
        let (mut lo, mut hi) = (0, limit);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if meets(&self.order[..mid])? {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let mut chosen = self.order[..lo].to_vec();
        // Each try prunes a copy of the graph: bounded, so large models stay quick.
        for i in (0..chosen.len()).rev().take(GIVE_BACK_TRIES) {
            let mut fewer = chosen.clone();
            fewer.remove(i);
            if meets(&fewer)? {
                chosen = fewer;
            }
        }
        Ok((self.plan_of(&chosen), true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores() -> Scores {
        [
            (GroupId(0), (0..10).map(|i| i as f64).collect()),
            (GroupId(1), vec![4.0, 1.0, 3.0, 2.0]),
        ]
        .into_iter()
        .collect()
    }

    fn dropped(plan: &PruningPlan, g: u32) -> Vec<usize> {
        plan.drop.get(&GroupId(g)).cloned().unwrap_or_default()
    }

    #[test]
    fn local_order_drops_the_same_fraction_of_each_group_lowest_first() {
        let order = DropOrder::new(
            &scores(),
            Ranking::Local,
            |_, w| w,
            |_| 1,
            WidthRule::multiples(1),
        );
        assert_eq!(order.len(), 9 + 3, "each group keeps one channel");
        // Positions (rank + ½)/width interleave: 0.05, 0.125, 0.15, 0.25, 0.35, 0.375 …
        let plan = order.plan(6);
        assert_eq!(dropped(&plan, 0), vec![0, 1, 2, 3]);
        assert_eq!(dropped(&plan, 1), vec![1, 3]);
        let all = order.plan(order.len());
        assert_eq!(dropped(&all, 1), vec![1, 2, 3], "channel 0 scores highest");
    }

    #[test]
    fn limits_floors_and_multiples_hold_for_every_prefix() {
        let order = DropOrder::new(
            &scores(),
            Ranking::Global,
            |_, w| w / 2,
            |_| 3,
            WidthRule::multiples(4),
        );
        for k in 0..=order.len() {
            let plan = order.plan(k);
            let kept0 = 10 - dropped(&plan, 0).len();
            let kept1 = 4 - dropped(&plan, 1).len();
            assert!(kept0 == 10 || kept0.is_multiple_of(4), "k {k}: {kept0}");
            assert!(kept0 >= 3 && kept1 >= 3, "k {k}: {kept0} {kept1}");
        }
    }

    #[test]
    fn global_order_compares_scores_normalised_by_their_group() {
        // Group 1's mean is 2.5: its 1.0 normalises to 0.4, below group 0's 1.0/4.5.
        let order = DropOrder::new(
            &scores(),
            Ranking::Global,
            |_, w| w,
            |_| 1,
            WidthRule::multiples(1),
        );
        assert_eq!(dropped(&order.plan(1), 0), vec![0], "score 0 first");
        assert_eq!(dropped(&order.plan(2), 0), vec![0, 1]);
        assert_eq!(dropped(&order.plan(3), 1), vec![1]);
    }
}
