//! Pruning strategies: RLS prune-and-recover (specs/rls.md §3 and §5) and one-shot pruning with
//! fine-tuning, within one budget of training epochs.
//!
//! Recovery is judged on the validation set the caller gives, never on test data. The graph is
//! changed in place; on return it is the model to write (for RLS, rolled back to the last
//! recovered network when the last prune did not recover).

use crate::criteria::{self, Criterion, Evidence, ScoreError};
use crate::groups::{analyze, ChannelGroups, Group, GroupId, SliceKind};
use crate::plan::{PlanError, PruningPlan};
use crate::selection::{Cost, DropOrder, Ranking, Target};
use pare_data::Dataset;
use pare_ir::{Graph, ValueId};
use pare_train::optim::{Optimizer, Rls};
use pare_train::TrainError;
use pare_train::{BatchStream, Evaluation, Loss, OptimizerConfig, RlsConfig, TrainConfig};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Train with RLS; prune a ratio of every group; prune again once validation recovers.
    Rls,
    /// Prune straight to the target, then fine-tune for the whole budget.
    Oneshot,
}

/// Everything one compression run needs besides the model and the data.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CompressConfig {
    pub strategy: Strategy,
    pub criterion: Criterion,
    pub ranking: Ranking,
    /// None: `rls` prunes for as long as it recovers; `oneshot` needs a target.
    pub target: Option<Target>,
    /// Total training budget, in passes over the training set.
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub loss: Loss,
    /// The optimiser of the `rls` strategy.
    pub rls: RlsConfig,
    /// The optimiser that fine-tunes after a one-shot prune.
    pub finetune: OptimizerConfig,
    /// Fraction of each group's channels one RLS pruning event removes (at least one).
    pub ratio: f64,
    /// How `ratio` sizes an event in each group.
    pub event_size: EventSize,
    /// Each RLS event prunes one group, the groups taken in forward order in turn (§3.4),
    /// instead of every group at once.
    pub one_group_per_event: bool,
    /// Fraction of its original width every group keeps (at least one channel).
    pub min_keep: f64,
    /// Widths that shrink stay multiples of this.
    pub round_to: usize,
    /// RLS training before the first prune, in epochs.
    pub warmup_epochs: f64,
    /// How often recovery is checked, in epochs.
    pub check_every_epochs: f64,
    /// Recovered when validation loss is back to its level before the prune, or validation
    /// accuracy is within this many points of it (§5: memorised training splits need this).
    pub accuracy_tolerance: f64,
    /// What a prune must recover to: the level just before it (§3.6), or the unpruned network's.
    pub recovery_reference: RecoveryReference,
    /// After a prune the step starts at this fraction and ramps back to 1 over one check.
    pub restart_scale: f64,
    /// Once pruning is over, the step decays to 0 on a cosine over the rest of the budget.
    pub anneal: bool,
    pub max_grad_norm: Option<f32>,
    pub batchnorm_training: bool,
    /// Batches the `taylor` criterion (and `rls` for one-shot) averages over.
    pub calibration_batches: usize,
}

impl Default for CompressConfig {
    /// The measured defaults of specs/rls.md §5.
    fn default() -> Self {
        CompressConfig {
            strategy: Strategy::Rls,
            criterion: Criterion::Rls,
            ranking: Ranking::Local,
            target: None,
            epochs: 10,
            batch_size: 64,
            seed: 0,
            loss: Loss::CrossEntropy,
            rls: RlsConfig::default(),
            finetune: OptimizerConfig::Rls(RlsConfig::default()),
            ratio: 0.1,
            event_size: EventSize::Channels,
            one_group_per_event: false,
            min_keep: 0.05,
            round_to: 1,
            warmup_epochs: 0.5,
            check_every_epochs: 0.25,
            accuracy_tolerance: 0.5,
            recovery_reference: RecoveryReference::LastPrune,
            restart_scale: 0.1,
            anneal: true,
            max_grad_norm: Some(5.0),
            batchnorm_training: true,
            calibration_batches: 8,
        }
    }
}

/// How many channels of a group one RLS event removes (specs/rls.md §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventSize {
    /// round(ratio · width), at least one: the preset pruning ratio.
    Channels,
    /// The lowest-scored channels whose scores sum to at most `ratio` of the group's total (at
    /// least one): a count that follows the data.
    ScoreShare,
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

/// The validation level a prune must get back to (specs/rls.md §3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryReference {
    /// The level just before the latest prune (the paper's "last unpruned level").
    LastPrune,
    /// The unpruned network's level: stricter, tolerances do not add up over prunes.
    Original,
}

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("the oneshot strategy needs a target (--target-macs or --target-params)")]
    NoTarget,
    #[error(
        "the model has no prunable channel group (see `compress inspect` for why each is frozen)"
    )]
    NothingToPrune,
    #[error("{0} must be {1}")]
    Setting(&'static str, &'static str),
}

/// What happened at one point of the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Event {
    /// Validation before the first prune.
    Start,
    /// Channels removed.
    Prune { channels: usize },
    /// A validation check: whether the network was back to its level before the last prune.
    Check { recovered: bool },
    /// The budget ended (or training diverged) before the last prune recovered: the last
    /// recovered network was restored.
    RolledBack { diverged: bool },
}

/// One line of the pruning history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryEntry {
    pub step: usize,
    pub epoch: f64,
    #[serde(flatten)]
    pub event: Event,
    pub params: u64,
    pub macs: u64,
    pub validation_loss: f32,
    pub validation_accuracy: f64,
}

/// The result of a run; the graph itself was changed in place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub original: Cost,
    pub compressed: Cost,
    /// None without a target.
    pub target_met: Option<bool>,
    pub history: Vec<HistoryEntry>,
    /// Every plan applied, in order, each on the groups of the graph it was applied to (the same
    /// seed gives the same plans). A rolled-back plan stays listed.
    pub plans: Vec<PruningPlan>,
}

/// Reported after every training step.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub step: usize,
    pub total_steps: usize,
    pub loss: f32,
    /// Current MACs over the original's.
    pub macs_fraction: f64,
    pub prunes: usize,
}

/// How the step scale moves over the run.
#[derive(Debug, Clone, Copy)]
enum Schedule {
    Constant,
    /// Linear from `restart_scale` up to 1 over `len` steps from step `from`: after a prune.
    Restart {
        from: usize,
        len: usize,
    },
    /// Cosine from 1 down to 0 between step `from` and the end of the budget.
    Anneal {
        from: usize,
    },
}

/// What identifies a group from one analysis to the next: its first activation, or the first
/// tensor it slices. Group ids are not stable: a depthwise group cut to one channel stops being
/// depthwise, and the groups after it are numbered anew.
fn group_key(groups: &ChannelGroups, g: &Group) -> Option<ValueId> {
    g.values
        .first()
        .copied()
        .or_else(|| g.slices.first().map(|&i| groups.slices[i].tensor))
}

struct Run<'a> {
    schedule: Schedule,
    config: &'a CompressConfig,
    train: TrainConfig,
    stream: BatchStream<'a>,
    calibration: BatchStream<'a>,
    val: &'a Dataset,
    step: usize,
    total_steps: usize,
    steps_per_epoch: usize,
    original: Cost,
    /// Per group (by `group_key`), its width before the first prune.
    original_widths: BTreeMap<ValueId, usize>,
    history: Vec<HistoryEntry>,
    plans: Vec<PruningPlan>,
    /// The group the last one-group event pruned.
    last_group: Option<GroupId>,
    on_progress: &'a mut dyn FnMut(&Progress),
}

impl<'a> Run<'a> {
    fn record(&mut self, graph: &Graph, event: Event, val: Evaluation) {
        let cost = Cost::of(graph);
        self.history.push(HistoryEntry {
            step: self.step,
            epoch: self.step as f64 / self.steps_per_epoch as f64,
            event,
            params: cost.params,
            macs: cost.macs,
            validation_loss: val.loss,
            validation_accuracy: val.accuracy_percent(),
        });
    }

    fn validate(&self, graph: &Graph) -> Result<Evaluation, TrainError> {
        pare_train::evaluate(graph, self.val, self.config.batch_size, self.config.loss)
    }

    fn step_scale(&self) -> f64 {
        match self.schedule {
            Schedule::Constant => 1.0,
            Schedule::Restart { from, len } => {
                let s = self.config.restart_scale;
                let t = (self.step - from) as f64 / len.max(1) as f64;
                (s + (1.0 - s) * t).min(1.0)
            }
            Schedule::Anneal { from } if self.config.anneal => {
                let t = (self.step - from) as f64 / (self.total_steps - from).max(1) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
            Schedule::Anneal { .. } => 1.0,
        }
    }

    /// Trains `steps` steps (fewer at the budget's end), scaling each by the schedule.
    fn train(
        &mut self,
        graph: &mut Graph,
        optimizer: &mut dyn Optimizer,
        steps: usize,
    ) -> Result<(), TrainError> {
        let steps = steps.min(self.total_steps - self.step);
        let macs_fraction = Cost::of(graph).macs as f64 / self.original.macs.max(1) as f64;
        let prunes = self.plans.len();
        for _ in 0..steps {
            optimizer.set_step_scale(self.step_scale());
            let (images, labels) = self.stream.next_batch();
            let step = self.step as u64;
            let out = pare_train::train_step(graph, optimizer, images, &labels, &self.train, step)?;
            self.step += 1;
            if !out.loss.is_finite() {
                return Err(TrainError::Diverged {
                    loss: out.loss,
                    epoch: self.step / self.steps_per_epoch + 1,
                    batch: self.step % self.steps_per_epoch + 1,
                });
            }
            (self.on_progress)(&Progress {
                step: self.step,
                total_steps: self.total_steps,
                loss: out.loss,
                macs_fraction,
                prunes,
            });
        }
        Ok(())
    }

    /// The fewest channels group `g` of `groups` may keep: `min_keep` of its original width.
    fn min_kept(&self, groups: &ChannelGroups, g: GroupId) -> usize {
        let group = groups.group(g);
        let original = group_key(groups, group)
            .and_then(|k| self.original_widths.get(&k).copied())
            .unwrap_or(group.channels);
        ((self.config.min_keep * original as f64).ceil() as usize).max(1)
    }

    fn target_met(&self, graph: &Graph) -> Option<bool> {
        self.config
            .target
            .map(|t| t.is_met(Cost::of(graph), self.original))
    }

    /// Scores, orders and chooses the channels of one prune: at most `ratio` of each group (or,
    /// ranked globally, of all channels), or all that may go when `ratio` is None; never more
    /// than the target needs.
    fn choose(
        &mut self,
        graph: &Graph,
        groups: &ChannelGroups,
        rls: Option<&Rls>,
        ratio: Option<f64>,
    ) -> Result<PruningPlan, CompressError> {
        let c = self.config;
        let gradients = if c.criterion == Criterion::Taylor {
            Some(criteria::calibrate(
                graph,
                &mut self.calibration,
                c.calibration_batches,
                c.loss,
                None,
            )?)
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
        let order = DropOrder::new(&scores, c.ranking, per_group, min_kept, c.round_to);
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
        let original = self.original;
        let meets = |cost| target.is_met(cost, original);
        let mut copy = graph.clone();
        event.apply(&mut copy, groups)?;
        if !meets(Cost::of(&copy)) {
            return Ok(event);
        }
        // The last RLS event trims by layer-normalised score (a one-shot prune by the chosen
        // ranking), from every channel that may go, only until the target is met.
        let ranking = if ratio.is_some() {
            Ranking::Global
        } else {
            c.ranking
        };
        let all = DropOrder::new(&scores, ranking, |_, w| w, min_kept, c.round_to);
        Ok(all.shortest_within(graph, groups, all.len(), meets)?.0)
    }

    /// Applies a plan, shrinking RLS's P along with the weights; returns the channels removed.
    fn apply(
        &mut self,
        graph: &mut Graph,
        groups: &ChannelGroups,
        plan: PruningPlan,
        rls: Option<&mut Rls>,
    ) -> Result<usize, CompressError> {
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
        let removed = plan.drop.values().map(Vec::len).sum();
        self.plans.push(plan);
        Ok(removed)
    }
}

/// Runs the configured strategy on `graph` with `train` for training and `val` for recovery
/// checks, calling `on_progress` after every step.
pub fn compress(
    graph: &mut Graph,
    train: &Dataset,
    val: &Dataset,
    config: &CompressConfig,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Outcome, CompressError> {
    check(config)?;
    let groups = analyze(graph);
    if !groups.groups.iter().any(|g| g.prunable()) {
        return Err(CompressError::NothingToPrune);
    }
    let stream = BatchStream::new(train, config.batch_size, config.seed);
    let steps_per_epoch = stream.batches_per_epoch().max(1);
    let mut run = Run {
        schedule: Schedule::Constant,
        config,
        train: TrainConfig {
            epochs: config.epochs,
            batch_size: config.batch_size,
            seed: config.seed,
            loss: config.loss,
            optimizer: config.finetune.clone(),
            batchnorm_training: config.batchnorm_training,
            max_grad_norm: config.max_grad_norm,
        },
        stream,
        calibration: BatchStream::new(train, config.batch_size, !config.seed),
        val,
        step: 0,
        total_steps: config.epochs * steps_per_epoch,
        steps_per_epoch,
        original: Cost::of(graph),
        original_widths: groups
            .groups
            .iter()
            .filter_map(|g| Some((group_key(&groups, g)?, g.channels)))
            .collect(),
        history: Vec::new(),
        plans: Vec::new(),
        last_group: None,
        on_progress,
    };
    let epochs = |e: f64| ((e * steps_per_epoch as f64).round() as usize).max(1);
    match config.strategy {
        Strategy::Rls => prune_and_recover(
            graph,
            &mut run,
            epochs(config.warmup_epochs),
            epochs(config.check_every_epochs),
        )?,
        Strategy::Oneshot => oneshot(graph, &mut run, epochs(config.check_every_epochs))?,
    }
    Ok(Outcome {
        original: run.original,
        compressed: Cost::of(graph),
        target_met: run.target_met(graph),
        history: run.history,
        plans: run.plans,
    })
}

fn check(c: &CompressConfig) -> Result<(), CompressError> {
    let fraction = |f: f64| f > 0.0 && f <= 1.0;
    if c.epochs == 0 || c.batch_size == 0 {
        return Err(CompressError::Setting(
            "epochs and batch size",
            "at least 1",
        ));
    }
    if !fraction(c.ratio) {
        return Err(CompressError::Setting("the pruning ratio", "in (0, 1]"));
    }
    if !(0.0..1.0).contains(&c.min_keep) {
        return Err(CompressError::Setting(
            "the minimum kept fraction",
            "in [0, 1)",
        ));
    }
    if let Some(Target::Macs(f) | Target::Params(f)) = c.target {
        if !fraction(f) {
            return Err(CompressError::Setting("the target", "a fraction in (0, 1]"));
        }
    }
    if c.strategy == Strategy::Oneshot && c.target.is_none() {
        return Err(CompressError::NoTarget);
    }
    Ok(())
}

/// specs/rls.md §3.7 with the recovery rule of §5.
fn prune_and_recover(
    graph: &mut Graph,
    run: &mut Run,
    warmup: usize,
    check_every: usize,
) -> Result<(), CompressError> {
    let mut rls = Rls::new(run.config.rls.clone(), graph);
    run.train(graph, &mut rls, warmup)?;
    let mut reference = run.validate(graph)?;
    run.record(graph, Event::Start, reference);
    let mut checkpoint = (graph.clone(), rls.clone());
    let mut pending = prune_event(graph, run, &mut rls, check_every)?;
    let mut pruning = pending;
    if !pruning {
        run.schedule = Schedule::Anneal { from: run.step };
    }
    while run.step < run.total_steps {
        // Divergence, or weights gone non-finite: back to the last recovered network.
        let val = match run.train(graph, &mut rls, check_every) {
            Err(TrainError::Diverged { .. }) => None,
            trained => {
                trained?;
                Some(run.validate(graph)?).filter(|v| v.loss.is_finite())
            }
        };
        let Some(val) = val else {
            (*graph, _) = checkpoint;
            let val = run.validate(graph)?;
            run.record(graph, Event::RolledBack { diverged: true }, val);
            return Ok(());
        };
        if !pending {
            run.record(graph, Event::Check { recovered: true }, val);
            continue;
        }
        let tolerance = run.config.accuracy_tolerance;
        let recovered = val.loss <= reference.loss
            || val.accuracy_percent() >= reference.accuracy_percent() - tolerance;
        run.record(graph, Event::Check { recovered }, val);
        if recovered {
            checkpoint = (graph.clone(), rls.clone());
            pending = false;
            if pruning && run.target_met(graph) != Some(true) && run.step < run.total_steps {
                if run.config.recovery_reference == RecoveryReference::LastPrune {
                    reference = val;
                }
                pending = prune_event(graph, run, &mut rls, check_every)?;
                pruning = pending;
            } else {
                pruning = false;
            }
            if !pruning {
                run.schedule = Schedule::Anneal { from: run.step };
            }
        }
    }
    if pending {
        (*graph, _) = checkpoint;
        let val = run.validate(graph)?;
        run.record(graph, Event::RolledBack { diverged: false }, val);
    }
    Ok(())
}

/// One RLS pruning event, after which the step restarts small; false when nothing could be
/// removed.
fn prune_event(
    graph: &mut Graph,
    run: &mut Run,
    rls: &mut Rls,
    restart: usize,
) -> Result<bool, CompressError> {
    let groups = analyze(graph);
    let plan = run.choose(graph, &groups, Some(rls), Some(run.config.ratio))?;
    if plan.drop.values().all(Vec::is_empty) {
        return Ok(false);
    }
    let channels = run.apply(graph, &groups, plan, Some(rls))?;
    let val = run.validate(graph)?;
    run.record(graph, Event::Prune { channels }, val);
    run.schedule = Schedule::Restart {
        from: run.step,
        len: restart,
    };
    Ok(true)
}

/// Prune to the target with the chosen criterion, then fine-tune for the whole budget.
fn oneshot(graph: &mut Graph, run: &mut Run, check_every: usize) -> Result<(), CompressError> {
    let mut rls =
        (run.config.criterion == Criterion::Rls).then(|| Rls::new(run.config.rls.clone(), graph));
    if let Some(rls) = rls.as_mut() {
        let c = run.config;
        criteria::calibrate(
            graph,
            &mut run.calibration,
            c.calibration_batches,
            c.loss,
            Some(rls),
        )?;
    }
    let before = run.validate(graph)?;
    run.record(graph, Event::Start, before);
    let groups = analyze(graph);
    let plan = run.choose(graph, &groups, rls.as_ref(), None)?;
    let channels = run.apply(graph, &groups, plan, None)?;
    let val = run.validate(graph)?;
    run.record(graph, Event::Prune { channels }, val);
    let mut optimizer = run.config.finetune.build(graph);
    run.schedule = Schedule::Anneal { from: run.step };
    while run.step < run.total_steps {
        run.train(graph, optimizer.as_mut(), check_every)?;
        let val = run.validate(graph)?;
        run.record(
            graph,
            Event::Check {
                recovered: val.loss <= before.loss,
            },
            val,
        );
    }
    Ok(())
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
