//! Hierarchical pruning under effective-filter caps (docs/methods/hierarchical.md): analyse the
//! network, decide how many channels each group loses (one λ for all, bisected to meet the
//! target, no group past its cap), then which (the end of each group's pivoted-Cholesky order),
//! optionally refit the layers that read the removed channels, prune once and fine-tune for the
//! whole budget.

use super::config::CompressConfig;
use super::report::Event;
use super::run::{PruningStrategy, Run};
use crate::analysis::EffectiveFilters;
use crate::groups::{analyze, ChannelGroups, GroupId};
use crate::latency::LatencyTable;
use crate::plan::PruningPlan;
use crate::selection::{Meter, Target};
use crate::PruneError;
use pare_ir::Graph;

/// `Strategy::Hierarchical`.
pub(crate) struct Hierarchical;

impl PruningStrategy for Hierarchical {
    fn check(&self, config: &CompressConfig) -> Result<(), PruneError> {
        // Counts are ⌊λ·(n_g − r_g)⌋: rounding widths to a multiple would pass a cap or the target.
        if config.round_to > 1 {
            return Err(PruneError::Setting(
                "the width multiple (--round-to) of the hierarchical strategy",
                "1",
            ));
        }
        Ok(())
    }

    fn run(&self, graph: &mut Graph, run: &mut Run) -> Result<(), PruneError> {
        let mut groups = analyze(graph);
        let filters = run.effective_filters(graph, &groups)?;
        let before = run.validate_and_record(graph, Event::Start)?;
        let (plan, clamped) = layer_budgets(
            graph,
            &groups,
            &filters,
            run.config.target,
            run.config.latency.as_ref(),
        )?;
        if clamped {
            run.clamp_target();
        }
        if run.config.refit {
            run.refit(graph, &mut groups, &plan)?;
        }
        run.prune(graph, &groups, plan, None)?;
        run.finetune(graph, before)
    }
}

/// The plan of the smallest λ whose ⌊λ·(n_g − r_g)⌋ channels per group meet `target` on a pruned
/// copy of `graph`, and false; or the plan at the caps (λ = 1) and true when even that misses the
/// target. Without a target, the caps. A latency target is predicted from `latency`. Costs only
/// fall as λ grows (each group drops a longer end of one fixed order), so bisection over the λs
/// where some count changes finds the smallest. Groups with equal n_g − r_g change count at the
/// same λ, so that step can cut far past the target: it is taken one group at a time
/// (`within_the_step`).
fn layer_budgets(
    graph: &Graph,
    groups: &ChannelGroups,
    filters: &EffectiveFilters,
    target: Option<Target>,
    latency: Option<&LatencyTable>,
) -> Result<(PruningPlan, bool), PruneError> {
    let caps = filters.plan(1.0);
    let Some(target) = target else {
        return Ok((caps, false));
    };
    let meter = Meter::new(graph, latency);
    // The cost of the pruned copy as a fraction of the original's.
    let measure = |plan: &PruningPlan| -> Result<f64, PruneError> {
        let mut copy = graph.clone();
        plan.apply(&mut copy, groups)?;
        Ok(meter.fraction(target, &copy))
    };
    let meets = |plan: &PruningPlan| Ok::<_, PruneError>(target.allows(measure(plan)?));
    if meter.is_met(target, graph) {
        return Ok((PruningPlan::default(), false));
    }
    if !meets(&caps)? {
        return Ok((caps, true));
    }
    let lambdas = filters.breakpoints();
    // The last λ is 1, which meets the target: find the first that does.
    let (mut lo, mut hi) = (0, lambdas.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if meets(&filters.plan(lambdas[mid]))? {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let below = if lo == 0 { 0.0 } else { lambdas[lo - 1] };
    let plan = within_the_step(
        filters.plan(below),
        &filters.plan(lambdas[lo]),
        target,
        measure,
    )?;
    Ok((plan, false))
}

/// From `below`, which misses the target, towards `above`, which meets it and drops more
/// channels in some groups: adds those groups' extra channels one group at a time until the cost
/// left (`measure`, a fraction of the original's) meets `target`. Best fit first: if one group's
/// channels meet it, those of the group that leaves the most cost; otherwise the group that saves
/// most, and again. Every group stays within its count in `above`, so no cap is passed.
fn within_the_step(
    mut below: PruningPlan,
    above: &PruningPlan,
    target: Target,
    measure: impl Fn(&PruningPlan) -> Result<f64, PruneError>,
) -> Result<PruningPlan, PruneError> {
    let mut steps: Vec<(&GroupId, &Vec<usize>)> = above
        .drop
        .iter()
        .filter(|(g, d)| below.drop.get(g).map_or(0, Vec::len) < d.len())
        .collect();
    while !steps.is_empty() {
        let mut tried = Vec::with_capacity(steps.len());
        for (i, &(&g, channels)) in steps.iter().enumerate() {
            let mut plan = below.clone();
            plan.drop_channels(g, channels.iter().copied());
            tried.push((i, measure(&plan)?, plan));
        }
        let fits = tried
            .iter()
            .filter(|(_, left, _)| target.allows(*left))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((.., plan)) = fits {
            return Ok(plan.clone());
        }
        let (i, _, plan) = tried
            .into_iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("steps is not empty");
        below = plan;
        steps.remove(i);
    }
    Ok(below)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{AnalysisSettings, GroupAnalysis};
    use pare_onnx::{attr, DimSpec, GraphBuilder};

    /// x[N,1,4,4] → Conv a (8) → Relu → Conv b (8) → Relu → Conv c (2) → GAP → Flatten → y.
    fn graph() -> Graph {
        let mut b = GraphBuilder::new("chain", 17);
        b.input("x", [DimSpec::from("N"), 1.into(), 4.into(), 4.into()]);
        for (name, out, inp) in [("a", 8, 1), ("b", 8, 8), ("c", 2, 8)] {
            let w = format!("{name}.w");
            b.initializer(attr::tensor_f32(
                &w,
                &[out, inp, 1, 1],
                vec![0.5; (out * inp) as usize],
            ));
        }
        b.node("Conv", &["x", "a.w"], &["a"], vec![]);
        b.node("Relu", &["a"], &["ra"], vec![]);
        b.node("Conv", &["ra", "b.w"], &["b"], vec![]);
        b.node("Relu", &["b"], &["rb"], vec![]);
        b.node("Conv", &["rb", "c.w"], &["c"], vec![]);
        b.node("GlobalAveragePool", &["c"], &["gap"], vec![]);
        b.node("Flatten", &["gap"], &["y"], vec![]);
        b.output("y", [DimSpec::from("N"), 2.into()]);
        pare_ir::import(&b.build()).unwrap()
    }

    /// Caps of 2 (of 8) for group a and 6 (of 8) for group b, keep orders by index.
    fn filters(groups: &ChannelGroups) -> EffectiveFilters {
        let prunable: Vec<GroupId> = groups
            .groups
            .iter()
            .filter(|g| g.prunable())
            .map(|g| g.id)
            .collect();
        assert_eq!(prunable.len(), 2);
        let group = |id: GroupId, effective: usize| GroupAnalysis {
            group: id,
            name: String::new(),
            channels: 8,
            effective,
            silent: 0,
            keep_order: (0..8).collect(),
        };
        EffectiveFilters {
            settings: AnalysisSettings::default(),
            groups: vec![group(prunable[0], 2), group(prunable[1], 6)],
        }
    }

    fn dropped(plan: &PruningPlan) -> Vec<usize> {
        plan.drop.values().map(Vec::len).collect()
    }

    #[test]
    fn bisection_meets_the_target_with_the_least_lambda_and_no_group_past_its_cap() {
        let g = graph();
        let groups = analyze(&g);
        let f = filters(&groups);
        let meter = Meter::new(&g, None);
        // MACs per sample: a 8·16, b 64·16, c 16·16.
        assert_eq!(meter.original().macs, (8 + 64 + 16) * 16);
        for goal in [0.95, 0.8, 0.6, 0.45] {
            let target = Target::Macs(goal);
            let (plan, clamped) = layer_budgets(&g, &groups, &f, Some(target), None).unwrap();
            assert!(!clamped, "{goal}");
            let mut copy = g.clone();
            plan.apply(&mut copy, &groups).unwrap();
            assert!(meter.is_met(target, &copy), "{goal}: {plan:?}");
            for (analysis, kept) in f.groups.iter().map(|a| (a, plan.kept(a.group, 8).len())) {
                assert!(kept >= analysis.effective, "{goal}: group past its cap");
            }
            // One step of λ less misses the target.
            let lambdas = f.breakpoints();
            let at = dropped(&plan);
            if let Some(i) = lambdas.iter().position(|&l| dropped(&f.plan(l)) == at) {
                if i > 0 {
                    let mut less = g.clone();
                    f.plan(lambdas[i - 1]).apply(&mut less, &groups).unwrap();
                    assert!(!meter.is_met(target, &less), "{goal}");
                }
            }
        }
        let (plan, _) = layer_budgets(&g, &groups, &f, Some(Target::Macs(0.8)), None).unwrap();
        // λ = 1/3 drops 2 of a's 6 and none of b's 2: (6 + 48 + 16)·16 = 1120 ≤ 0.8 · 1408;
        // λ = 1/6 would leave (7 + 56 + 16)·16 = 1264.
        assert_eq!(dropped(&plan), vec![2]);
    }

    #[test]
    fn groups_that_step_at_the_same_lambda_are_taken_one_at_a_time() {
        let g = graph();
        let groups = analyze(&g);
        let f = filters(&groups);
        // At λ = 1/3 a drops 2 (70 MACs a pixel of 88); at λ = 1/2 both step, a to 3 dropped
        // and b to 1, to 54. a's third channel alone leaves 61, b's first alone 62.
        for (goal, expected) in [(62.0, vec![2, 1]), (61.0, vec![3]), (57.0, vec![3, 1])] {
            let target = Target::Macs(goal / 88.0);
            let (plan, clamped) = layer_budgets(&g, &groups, &f, Some(target), None).unwrap();
            assert!(!clamped);
            assert_eq!(dropped(&plan), expected, "{goal}");
            let mut copy = g.clone();
            plan.apply(&mut copy, &groups).unwrap();
            assert!(Meter::new(&g, None).is_met(target, &copy), "{goal}");
        }
    }

    #[test]
    fn a_target_beyond_the_caps_is_clamped_to_them() {
        let g = graph();
        let groups = analyze(&g);
        let f = filters(&groups);
        let (plan, clamped) =
            layer_budgets(&g, &groups, &f, Some(Target::Macs(0.1)), None).unwrap();
        assert!(clamped);
        assert_eq!(plan, f.plan(1.0));
        assert_eq!(dropped(&plan), vec![6, 2]);
        let (plan, clamped) = layer_budgets(&g, &groups, &f, None, None).unwrap();
        assert_eq!((plan, clamped), (f.plan(1.0), false));
        let (plan, clamped) =
            layer_budgets(&g, &groups, &f, Some(Target::Macs(1.0)), None).unwrap();
        assert_eq!((plan, clamped), (PruningPlan::default(), false));
    }
}
