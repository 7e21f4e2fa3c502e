//! The one run every strategy works within: the training budget and its step schedule, the
//! validation checks and their history, the choice and surgery of each prune, and the roll-back to
//! the last recovered network.
//!
//! Recovery is judged on the validation set the caller gives, never on test data.

use super::config::{CompressConfig, EventSize, RecoveryReference};
use super::front::Front;
use super::report::{Event, HistoryEntry, Outcome, Progress};
use crate::analysis::{self, EffectiveFilters, RedundancyReport, Refit};
use crate::criteria::{self, Criterion, Evidence};
use crate::groups::{ChannelGroups, GroupId, SliceKind};
use crate::plan::PruningPlan;
use crate::selection::{Cost, DropOrder, Meter, Ranking};
use crate::PruneError;
use ndarray::ArrayD;
use pare_data::Dataset;
use pare_ir::{Graph, ValueId};
use pare_train::optim::{Optimizer, Rls};
use pare_train::{
    BatchStream, Evaluation, Objective, Schedule, TrainConfig, TrainError, TrainingLoop,
};
use std::collections::{BTreeMap, HashMap};

/// One way to prune within a run's budget; `Strategy` names one. A strategy that prunes step by
/// step hands its pruning event to `Run::prune_and_recover`; one that prunes once trains with
/// `Run::train`; a search over plans scores them with `Run::choose` on copies of the graph; masks
/// that keep connections at zero belong in an `Optimizer` wrapper given to `Run::train`.
pub(crate) trait PruningStrategy {
    /// Refuses settings this strategy cannot run with (after `CompressConfig::check`).
    fn check(&self, _config: &CompressConfig) -> Result<(), PruneError> {
        Ok(())
    }

    /// Prunes and trains `graph` within `run`'s budget, recording into its history; on return
    /// `graph` is the model to write.
    fn run(&self, graph: &mut Graph, run: &mut Run) -> Result<(), PruneError>;
}

/// How many of `scores`' lowest entries sum to at most `share` of their total (at least one).
fn score_share_count(scores: &[f64], share: f64) -> usize {
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let budget = share * sorted.iter().sum::<f64>();
    let mut sum = 0.0;
    let count = sorted
        .iter()
        .take_while(|&&s| {
            sum += s;
            sum <= budget
        })
        .count();
    count.max(1)
}

/// The training settings of `epochs` passes under `config`.
pub(crate) fn train_config(config: &CompressConfig, epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: config.batch_size,
        seed: config.seed,
        loss: config.loss,
        optimizer: config.finetune.clone(),
        batchnorm_training: config.batchnorm_training,
        max_grad_norm: config.max_grad_norm,
    }
}

/// The schedule once pruning is over, from step `from`: a cosine decay to zero over the rest of
/// the budget if `anneal` is set, else the configured step.
pub(crate) fn final_schedule(config: &CompressConfig, from: usize) -> Schedule {
    if config.anneal {
        Schedule::Anneal { from }
    } else {
        Schedule::Constant
    }
}

/// A compression run in progress: where it stands in the budget and what it did so far.
pub(crate) struct Run<'a> {
    pub config: &'a CompressConfig,
    steps: TrainingLoop<'a>,
    calibration: BatchStream<'a>,
    train: &'a Dataset,
    val: &'a Dataset,
    /// The original network's cost, and the latency table when there is one.
    meter: Meter<'a>,
    /// Per group (by `ChannelGroups::key`), its width before the first prune.
    original_widths: BTreeMap<ValueId, usize>,
    history: Vec<HistoryEntry>,
    plans: Vec<PruningPlan>,
    /// The group the last one-group event pruned.
    last_group: Option<GroupId>,
    /// The effective-filter analysis of the original network, once made, and its report.
    filters: Option<(EffectiveFilters, RedundancyReport)>,
    /// Per group (by `ChannelGroups::key`), the width the analysis caps it at: r_g.
    caps: BTreeMap<ValueId, usize>,
    /// Per group (by `ChannelGroups::key`), `config.width_floors`.
    width_floors: BTreeMap<ValueId, usize>,
    target_clamped: bool,
    refit: Option<Refit>,
    /// The models of the accuracy–cost front, when a search found one.
    front: Option<Front>,
    on_progress: &'a mut dyn FnMut(&Progress),
}

impl<'a> Run<'a> {
    /// A run on `graph` (whose groups are `groups`), training on `train`, nothing done yet.
    pub fn new(
        graph: &Graph,
        groups: &ChannelGroups,
        train: &'a Dataset,
        val: &'a Dataset,
        config: &'a CompressConfig,
        on_progress: &'a mut dyn FnMut(&Progress),
    ) -> Result<Self, PruneError> {
        Ok(Run {
            config,
            steps: TrainingLoop::new(graph, train, train_config(config, config.epochs))?,
            calibration: BatchStream::new(train, config.batch_size, !config.seed),
            train,
            val,
            meter: Meter::new(graph, config.latency.as_ref()),
            original_widths: groups
                .groups
                .iter()
                .filter_map(|g| Some((groups.key(g.id)?, g.channels)))
                .collect(),
            history: Vec::new(),
            plans: Vec::new(),
            last_group: None,
            filters: None,
            caps: BTreeMap::new(),
            width_floors: groups
                .groups
                .iter()
                .filter_map(|g| {
                    let floor = config
                        .width_floors
                        .get(&crate::group_key(graph, groups, g.id)?)?;
                    Some((groups.key(g.id)?, *floor))
                })
                .collect(),
            target_clamped: false,
            refit: None,
            front: None,
            on_progress,
        })
    }

    /// What the run did, `graph` being its result.
    pub fn outcome(self, graph: &Graph) -> Outcome {
        Outcome {
            original: self.meter.original(),
            compressed: Cost::of(graph),
            target_met: self.target_met(graph),
            history: self.history,
            plans: self.plans,
            analysis: self.filters.map(|(_, report)| report),
            target_clamped: self.target_clamped,
            refit: self.refit,
            front: self.front,
        }
    }

    /// The training split, for a strategy that trains copies of the network on its own.
    pub fn train_data(&self) -> &'a Dataset {
        self.train
    }

    /// The validation split.
    pub fn val_data(&self) -> &'a Dataset {
        self.val
    }

    /// Passes progress on to the caller, for work outside `train`.
    pub fn report(&mut self, progress: &Progress) {
        (self.on_progress)(progress)
    }

    /// Hands the run's front of models to its outcome.
    pub fn set_front(&mut self, front: Front) {
        self.front = Some(front);
    }

    /// Steps left in the budget.
    pub fn steps_left(&self) -> usize {
        self.steps.total_steps() - self.steps.step()
    }

    /// Lists plans a strategy applied by itself (with `PruningPlan::apply_with_masks`).
    pub fn add_plans(&mut self, plans: impl IntoIterator<Item = PruningPlan>) {
        self.plans.extend(plans);
    }

    /// Steps taken so far.
    pub fn step(&self) -> usize {
        self.steps.step()
    }

    /// Whether the budget is spent.
    pub fn finished(&self) -> bool {
        self.steps.step() >= self.steps.total_steps()
    }

    /// `epochs` of training in steps, at least one.
    pub fn steps_in(&self, epochs: f64) -> usize {
        ((epochs * self.steps.steps_per_epoch() as f64).round() as usize).max(1)
    }

    pub fn record(&mut self, graph: &Graph, event: Event, val: Evaluation) {
        let cost = Cost::of(graph);
        self.history.push(HistoryEntry {
            step: self.step(),
            epoch: self.step() as f64 / self.steps.steps_per_epoch() as f64,
            event,
            params: cost.params,
            macs: cost.macs,
            validation_loss: val.loss,
            validation_accuracy: val.accuracy_percent(),
        });
    }

    /// Validates `graph` and records `event` with the result.
    pub fn validate_and_record(
        &mut self,
        graph: &Graph,
        event: Event,
    ) -> Result<Evaluation, PruneError> {
        let val = self.validate(graph)?;
        self.record(graph, event, val);
        Ok(val)
    }

    pub fn validate(&self, graph: &Graph) -> Result<Evaluation, TrainError> {
        pare_train::evaluate(graph, self.val, self.config.batch_size, &self.config.loss)
    }

    /// The mean parameter gradients over `calibration_batches` batches, updating `rls`'s P from
    /// the same passes when given.
    pub fn calibrate(
        &mut self,
        graph: &Graph,
        rls: Option<&mut Rls>,
    ) -> Result<HashMap<ValueId, ArrayD<f32>>, TrainError> {
        let c = self.config;
        criteria::calibrate(
            graph,
            &mut self.calibration,
            c.calibration_batches,
            &calibration_loss(c),
            rls,
        )
    }

    /// After a prune: the step restarts at `restart_scale` and ramps back to 1 over `len` steps.
    pub fn restart_schedule(&mut self, len: usize) {
        self.steps.set_schedule(Schedule::Restart {
            from: self.step(),
            len,
            start: self.config.restart_scale,
        });
    }

    /// Once pruning is over: the step decays over the rest of the budget, if `anneal` is set.
    pub fn anneal_schedule(&mut self) {
        self.steps
            .set_schedule(final_schedule(self.config, self.step()));
    }

    /// Trains `steps` steps (fewer at the budget's end), reporting progress after each.
    pub fn train(
        &mut self,
        graph: &mut Graph,
        optimizer: &mut dyn Optimizer,
        steps: usize,
    ) -> Result<(), TrainError> {
        let macs_fraction = Cost::of(graph).macs as f64 / self.meter.original().macs.max(1) as f64;
        let prunes = self.plans.len();
        let total_steps = self.steps.total_steps();
        let on_progress = &mut *self.on_progress;
        self.steps.run(graph, optimizer, steps, &mut |s| {
            on_progress(&Progress {
                step: s.step,
                total_steps,
                loss: s.loss,
                macs_fraction,
                prunes,
                search: None,
            })
        })
    }

    /// The fewest channels group `g` of `groups` may keep: `min_keep` of its original width, and
    /// its effective rank once the analysis capped it.
    fn min_kept(&self, groups: &ChannelGroups, g: GroupId) -> usize {
        let group = groups.group(g);
        let key = groups.key(group.id);
        let original = key
            .and_then(|k| self.original_widths.get(&k).copied())
            .unwrap_or(group.channels);
        let bound = |m: &BTreeMap<ValueId, usize>| key.and_then(|k| m.get(&k).copied());
        let cap = bound(&self.caps).unwrap_or(1);
        let floor = bound(&self.width_floors).unwrap_or(1);
        self.config.kept_floor(original).max(cap).max(floor)
    }

    /// The effective-filter analysis of `graph` (whose groups are `groups`) on calibration
    /// batches, made once, before any prune; from then on no group may shrink below its r_g.
    pub fn effective_filters(
        &mut self,
        graph: &Graph,
        groups: &ChannelGroups,
    ) -> Result<EffectiveFilters, PruneError> {
        if let Some((filters, _)) = &self.filters {
            return Ok(filters.clone());
        }
        let c = self.config;
        let filters = analysis::effective_filters(
            graph,
            groups,
            &mut self.calibration,
            c.analysis,
            &calibration_loss(c),
            c.min_keep,
            &mut |_| {},
        )?;
        for g in &filters.groups {
            if let Some(key) = groups.key(g.group) {
                self.caps.insert(key, g.effective);
            }
        }
        let report = filters.report(graph, groups)?;
        self.filters = Some((filters.clone(), report));
        Ok(filters)
    }

    /// Refits the layers that read the channels `plan` is about to remove, by least squares on
    /// the analysis's number of calibration batches (`analysis::refit_consumers`); call it right
    /// before `prune` with the same plan.
    pub fn refit(
        &mut self,
        graph: &mut Graph,
        groups: &mut ChannelGroups,
        plan: &PruningPlan,
    ) -> Result<(), PruneError> {
        let batches = self.config.analysis.batches;
        let refit = analysis::refit_consumers(graph, groups, plan, &mut self.calibration, batches)?;
        self.refit = Some(refit);
        Ok(())
    }

    /// Records that the target asked for more than the caps allow.
    pub fn clamp_target(&mut self) {
        self.target_clamped = true;
    }

    pub fn target_met(&self, graph: &Graph) -> Option<bool> {
        self.config.target.map(|t| self.meter.is_met(t, graph))
    }

    /// Scores, orders and chooses the channels of one prune: at most `ratio` of each group (or,
    /// ranked globally, of all channels), or all that may go when `ratio` is None; never more
    /// than the target needs.
    pub fn choose(
        &mut self,
        graph: &Graph,
        groups: &ChannelGroups,
        rls: Option<&Rls>,
        ratio: Option<f64>,
    ) -> Result<PruningPlan, PruneError> {
        let c = self.config;
        let gradients = if c.criterion == Criterion::Taylor {
            Some(self.calibrate(graph, None)?)
        } else {
            None
        };
        let evidence = Evidence {
            rls,
            gradients: gradients.as_ref(),
            seed: c.seed.wrapping_add(self.plans.len() as u64),
        };
        let mut scores = criteria::score(c.criterion, graph, groups, &evidence)?;
        let floors: BTreeMap<GroupId, usize> = scores
            .keys()
            .map(|&g| (g, self.min_kept(groups, g)))
            .collect();
        let min_kept = |g: GroupId| floors[&g];
        if ratio.is_some() && c.one_group_per_event {
            // The next group in forward order (after the last one pruned) that can still shrink.
            let open: Vec<GroupId> = scores
                .iter()
                .filter(|(&g, s)| s.len() > min_kept(g))
                .map(|(&g, _)| g)
                .collect();
            let next = open
                .iter()
                .find(|&&g| self.last_group.is_none_or(|last| g > last))
                .or(open.first())
                .copied();
            scores.retain(|&g, _| Some(g) == next);
            self.last_group = next;
        }
        let per_group = |g: GroupId, width: usize| match (ratio, c.ranking, c.event_size) {
            (Some(r), Ranking::Local, EventSize::Channels) => {
                ((r * width as f64).round() as usize).max(1)
            }
            (Some(r), Ranking::Local, EventSize::ScoreShare) => score_share_count(&scores[&g], r),
            _ => width,
        };
        let widths = || {
            self.meter
                .width_rule(c.target, graph, groups, c.round_to, c.snap_widths)
        };
        let order = DropOrder::new(&scores, c.ranking, per_group, min_kept, widths());
        let limit = match (ratio, c.ranking) {
            (Some(r), Ranking::Global) => {
                let total: usize = scores.values().map(Vec::len).sum();
                ((r * total as f64).round() as usize).max(1)
            }
            _ => order.len(),
        };
        let event = order.plan(limit);
        let Some(target) = c.target else {
            return Ok(event);
        };
        let meter = self.meter;
        let meets = |pruned: &Graph| meter.is_met(target, pruned);
        let mut copy = graph.clone();
        event.apply(&mut copy, groups)?;
        if !meets(&copy) {
            return Ok(event);
        }
        // The last RLS event trims by layer-normalised score (a one-shot prune by the chosen
        // ranking), from every channel that may go, only until the target is met.
        let ranking = if ratio.is_some() {
            Ranking::Global
        } else {
            c.ranking
        };
        let all = DropOrder::new(&scores, ranking, |_, w| w, min_kept, widths());
        Ok(all.shortest_within(graph, groups, all.len(), meets)?.0)
    }

    /// Applies a plan, shrinking RLS's P along with the weights, and records the prune with the
    /// validation after it.
    pub fn prune(
        &mut self,
        graph: &mut Graph,
        groups: &ChannelGroups,
        plan: PruningPlan,
        rls: Option<&mut Rls>,
    ) -> Result<(), PruneError> {
        if let Some(rls) = rls {
            for slice in groups
                .slices
                .iter()
                .filter(|s| s.kind == SliceKind::Consumer)
            {
                if let Some(kept) = plan.kept_indices(groups, &slice.segments) {
                    let len: usize = slice.segments.iter().map(|s| s.len * s.block).sum();
                    rls.retain_inputs(slice.node, &kept, len);
                }
            }
            plan.apply(graph, groups)?;
            rls.resync(graph);
        } else {
            plan.apply(graph, groups)?;
        }
        let channels = plan.drop.values().map(Vec::len).sum();
        self.plans.push(plan);
        self.validate_and_record(graph, Event::Prune { channels })?;
        Ok(())
    }

    /// After a prune to the target: trains for the rest of the budget on an annealed step,
    /// checking validation against `before` (the level before the prune) every check interval.
    pub fn finetune(&mut self, graph: &mut Graph, before: Evaluation) -> Result<(), PruneError> {
        let check_every = self.steps_in(self.config.check_every_epochs);
        let mut optimizer = self.config.finetune.build(graph);
        self.anneal_schedule();
        while !self.finished() {
            self.train(graph, optimizer.as_mut(), check_every)?;
            let val = self.validate(graph)?;
            self.record(
                graph,
                Event::Check {
                    recovered: val.loss <= before.loss,
                },
                val,
            );
        }
        Ok(())
    }

    /// Prune and recover (docs/methods/rls.md, "Recovery"): validates the trained network, prunes
    /// by `event`, trains `check_every` steps at a time until validation is back to its reference
    /// level, and prunes again, until `event` removes nothing, the target is met or the budget
    /// ends; then anneals. Divergence, or the budget ending before the last prune recovered, rolls
    /// back to the last recovered network.
    pub fn prune_and_recover<O: Optimizer>(
        &mut self,
        graph: &mut Graph,
        optimizer: &mut O,
        check_every: usize,
        event: impl Fn(&mut Graph, &mut Run, &mut O) -> Result<bool, PruneError>,
    ) -> Result<(), PruneError> {
        let mut reference = self.validate_and_record(graph, Event::Start)?;
        let mut checkpoint = graph.clone();
        let mut pending = event(graph, self, optimizer)?;
        let mut pruning = pending;
        if !pruning {
            self.anneal_schedule();
        }
        while !self.finished() {
            // Divergence, or weights gone non-finite: back to the last recovered network.
            let val = match self.train(graph, optimizer, check_every) {
                Err(TrainError::Diverged { .. }) => None,
                trained => {
                    trained?;
                    Some(self.validate(graph)?).filter(|v| v.loss.is_finite())
                }
            };
            let Some(val) = val else {
                *graph = checkpoint;
                self.validate_and_record(graph, Event::RolledBack { diverged: true })?;
                return Ok(());
            };
            if !pending {
                self.record(graph, Event::Check { recovered: true }, val);
                continue;
            }
            let tolerance = self.config.accuracy_tolerance;
            let recovered = val.loss <= reference.loss
                || val.accuracy_percent() >= reference.accuracy_percent() - tolerance;
            self.record(graph, Event::Check { recovered }, val);
            if recovered {
                checkpoint = graph.clone();
                pending = false;
                if pruning && self.target_met(graph) != Some(true) && !self.finished() {
                    if self.config.recovery_reference == RecoveryReference::LastPrune {
                        reference = val;
                    }
                    pending = event(graph, self, optimizer)?;
                    pruning = pending;
                } else {
                    pruning = false;
                }
                if !pruning {
                    self.anneal_schedule();
                }
            }
        }
        if pending {
            *graph = checkpoint;
            self.validate_and_record(graph, Event::RolledBack { diverged: false })?;
        }
        Ok(())
    }
}

/// The loss calibration passes take gradients of: the label loss alone. A teacher term's gradient
/// vanishes on the unpruned network, which is the teacher itself, so scores and Gram matrices made
/// from it would all be zero; on unlabeled data the labels are the teacher's top-1 classes.
fn calibration_loss(c: &CompressConfig) -> Objective {
    c.loss.loss.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_share_counts_the_cheapest_channels_within_the_share() {
        // Total 10: 0 + 1 + 1 = 2 ≤ 2.5 < 2 + 2.
        assert_eq!(score_share_count(&[4.0, 1.0, 0.0, 2.0, 1.0, 2.0], 0.25), 3);
        // Nothing fits: still one, as with the channel ratio.
        assert_eq!(score_share_count(&[5.0, 5.0], 0.1), 1);
    }
}
