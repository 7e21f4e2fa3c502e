//! The settings of one compression run, and the common checks on them.

use crate::analysis::AnalysisSettings;
use crate::criteria::Criterion;
use crate::latency::LatencyTable;
use crate::relief::ReliefSettings;
use crate::selection::{Meter, Ranking, Target};
use crate::PruneError;
use pare_train::{Loss, OptimizerConfig, RlsConfig};
use std::collections::BTreeMap;

/// Which strategy a run uses (`compress --strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Train with RLS; prune a ratio of every group; prune again once validation recovers.
    Rls,
    /// Prune straight to the target, then fine-tune for the whole budget.
    Oneshot,
    /// Effective-filter analysis, then per-group budgets under its caps and channels by pivoted
    /// Cholesky (docs/methods/hierarchical.md); then fine-tune for the whole budget.
    Hierarchical,
    /// Search channel sets with an evolution strategy on (error, cost); keep three models of the
    /// front (docs/methods/es.md).
    Es,
    /// Neural network relief: mask connections carrying little of their unit's signal, remove
    /// units left dead or unread, retrain; repeat.
    Relief,
}

/// How far a strategy may narrow each group, besides `min_keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Caps {
    /// No further limit.
    None,
    /// No group below its effective rank r_g (docs/methods/hierarchical.md).
    Analysis,
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
    /// What training minimises: the label loss, and a teacher term when distilling.
    pub loss: pare_train::Objective,
    /// The optimiser of the `rls` strategy.
    pub rls: RlsConfig,
    /// The optimiser that fine-tunes after a one-shot prune.
    pub finetune: OptimizerConfig,
    /// Fraction of each group's channels one RLS pruning event removes (at least one).
    pub ratio: f64,
    /// How `ratio` sizes an event in each group.
    pub event_size: EventSize,
    /// Each RLS event prunes one group, the groups taken in forward order in turn
    /// (docs/methods/rls.md, "Event size"), instead of every group at once.
    pub one_group_per_event: bool,
    /// Fraction of its original width every group keeps (at least one channel).
    pub min_keep: f64,
    /// Widths that shrink stay multiples of this (unless `snap_widths` applies).
    pub round_to: usize,
    /// What a latency target (and `Objective::Latency`) is predicted with: measured in tract by
    /// pare-latency before the run. Reported on its own, not with the settings.
    #[serde(skip)]
    pub latency: Option<LatencyTable>,
    /// Under a latency target, widths snap to the table's fast widths instead of multiples of
    /// `round_to`.
    pub snap_widths: bool,
    /// Per group (by `group_key`), a width it may not go below: under a latency target, RLS's
    /// floors are the widths of the one-shot plan probed in tract (docs/methods/latency.md).
    pub width_floors: BTreeMap<String, usize>,
    /// RLS training before the first prune, in epochs.
    pub warmup_epochs: f64,
    /// How often recovery is checked, in epochs.
    pub check_every_epochs: f64,
    /// Recovered when validation loss is back to its level before the prune, or validation
    /// accuracy is within this many points of it (docs/methods/rls.md, "Recovery": memorised
    /// training splits need this).
    pub accuracy_tolerance: f64,
    /// What a prune must recover to: the level just before it (docs/methods/rls.md, "Recovery"),
    /// or the unpruned network's.
    pub recovery_reference: RecoveryReference,
    /// After a prune the step starts at this fraction and ramps back to 1 over one check.
    pub restart_scale: f64,
    /// Once pruning is over, the step decays to 0 on a cosine over the rest of the budget.
    pub anneal: bool,
    pub max_grad_norm: Option<f32>,
    pub batchnorm_training: bool,
    /// Batches the `taylor` criterion (and `rls` for one-shot) averages over; the batches `es`
    /// re-estimates BatchNorm statistics on.
    pub calibration_batches: usize,
    /// The effective-filter analysis of `hierarchical` and of `caps`.
    pub analysis: AnalysisSettings,
    /// Whether `rls` and `oneshot` keep every group at or above its effective rank
    /// (`hierarchical` always does).
    pub caps: Caps,
    /// Whether `hierarchical` refits the layers that read removed channels by least squares
    /// before fine-tuning (docs/methods/hierarchical.md, "Refit"); off by default, as after a
    /// full fine-tune it gained nothing on the measured models.
    pub refit: bool,
    /// The settings of `--strategy es`.
    pub es: EsConfig,
    /// The `relief` strategy's settings.
    pub relief: ReliefSettings,
}

impl Default for CompressConfig {
    /// The measured defaults (docs/methods/rls.md, "Defaults").
    fn default() -> Self {
        CompressConfig {
            strategy: Strategy::Rls,
            criterion: Criterion::Rls,
            ranking: Ranking::Local,
            target: None,
            epochs: 10,
            batch_size: 64,
            seed: 0,
            loss: Loss::CrossEntropy.into(),
            rls: RlsConfig::default(),
            finetune: OptimizerConfig::Rls(RlsConfig::default()),
            ratio: 0.1,
            event_size: EventSize::Channels,
            one_group_per_event: false,
            min_keep: 0.05,
            round_to: 1,
            latency: None,
            snap_widths: true,
            width_floors: BTreeMap::new(),
            warmup_epochs: 0.5,
            check_every_epochs: 0.25,
            accuracy_tolerance: 0.5,
            recovery_reference: RecoveryReference::LastPrune,
            restart_scale: 0.1,
            anneal: true,
            max_grad_norm: Some(5.0),
            batchnorm_training: true,
            calibration_batches: 8,
            analysis: AnalysisSettings::default(),
            caps: Caps::None,
            refit: false,
            es: EsConfig::default(),
            relief: ReliefSettings::default(),
        }
    }
}

impl CompressConfig {
    /// The fewest channels a group of `width` channels may keep: `min_keep` of it, at least one.
    pub(crate) fn kept_floor(&self, width: usize) -> usize {
        ((self.min_keep * width as f64).ceil() as usize).max(1)
    }

    /// Refuses settings no strategy can run with; each strategy checks its own after this.
    pub(crate) fn check(&self) -> Result<(), PruneError> {
        let fraction = |f: f64| f > 0.0 && f <= 1.0;
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(PruneError::Setting("epochs and batch size", "at least 1"));
        }
        if !fraction(self.ratio) {
            return Err(PruneError::Setting("the pruning ratio", "in (0, 1]"));
        }
        if !(0.0..1.0).contains(&self.min_keep) {
            return Err(PruneError::Setting(
                "the minimum kept fraction",
                "in [0, 1)",
            ));
        }
        if self.caps == Caps::Analysis || self.strategy == Strategy::Hierarchical {
            self.analysis.check()?;
        }
        if let Some(target) = self.target {
            if !fraction(target.goal()) {
                return Err(PruneError::Setting("the target", "a fraction in (0, 1]"));
            }
        }
        let wants_latency = matches!(self.target, Some(Target::Latency(_)))
            || (self.strategy == Strategy::Es && self.es.objective == Objective::Latency);
        if wants_latency && self.latency.is_none() {
            return Err(PruneError::Setting(
                "a latency target",
                "a latency table measured in tract (pare-latency)",
            ));
        }
        Ok(())
    }
}

/// How many channels of a group one RLS event removes (docs/methods/rls.md, "Event size").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventSize {
    /// round(ratio · width), at least one: the preset pruning ratio.
    Channels,
    /// The lowest-scored channels whose scores sum to at most `ratio` of the group's total (at
    /// least one): a count that follows the data.
    ScoreShare,
}

/// The validation level a prune must get back to (docs/methods/rls.md, "Recovery").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryReference {
    /// The level just before the latest prune (the paper's "last unpruned level").
    LastPrune,
    /// The unpruned network's level: stricter, tolerances do not add up over prunes.
    Original,
}

/// The settings of `--strategy es` (docs/methods/es.md, "Defaults").
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EsConfig {
    /// Individuals per generation (the three parents included after the first).
    pub population: usize,
    pub generations: usize,
    /// Probability that mutation flips each channel's bit.
    pub mutation: f64,
    /// The short fine-tune that scores an individual.
    pub evaluation: EvalBudget,
    /// Weights of (error, cost) in the knee's distance.
    pub knee_weights: [f64; 2],
    /// The cost the search minimises.
    pub objective: Objective,
}

impl Default for EsConfig {
    fn default() -> Self {
        EsConfig {
            population: 24,
            generations: 10,
            mutation: 0.2,
            evaluation: EvalBudget::Batches(30),
            knee_weights: [0.5, 0.5],
            objective: Objective::Macs,
        }
    }
}

impl EsConfig {
    pub(crate) fn check(&self) -> Result<(), PruneError> {
        if self.population < 4 || self.population > 10_000 {
            return Err(PruneError::Setting("the population", "between 4 and 10000"));
        }
        if self.generations == 0 || self.generations > 10_000 {
            return Err(PruneError::Setting(
                "the generations",
                "between 1 and 10000",
            ));
        }
        if !(self.mutation > 0.0 && self.mutation <= 1.0) {
            return Err(PruneError::Setting("the mutation rate", "in (0, 1]"));
        }
        let [a, b] = self.knee_weights;
        if !(a.is_finite() && b.is_finite() && a >= 0.0 && b >= 0.0 && a + b > 0.0) {
            return Err(PruneError::Setting(
                "the knee weights",
                "two finite numbers ≥ 0, not both 0",
            ));
        }
        match self.evaluation {
            EvalBudget::Epochs(e) if !(e > 0.0 && e <= 1000.0) => {
                Err(PruneError::Setting("the evaluation epochs", "in (0, 1000]"))
            }
            EvalBudget::Batches(n) if n > 1_000_000 => Err(PruneError::Setting(
                "the evaluation batches",
                "at most 1000000",
            )),
            _ => Ok(()),
        }
    }
}

/// How long the short fine-tune that scores an individual trains.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalBudget {
    /// Passes over the training split.
    Epochs(f64),
    /// Minibatches; 0 scores the network with its BatchNorm statistics re-estimated only.
    Batches(usize),
}

/// The cost `--strategy es` minimises beside the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    Macs,
    Params,
    /// Batch-1 latency predicted from `CompressConfig::latency`.
    Latency,
}

impl Objective {
    /// `graph`'s cost as a fraction of the original's in this measure.
    pub fn fraction(self, meter: &Meter, graph: &pare_ir::Graph) -> f64 {
        let target = match self {
            Objective::Macs => Target::Macs(1.0),
            Objective::Params => Target::Params(1.0),
            Objective::Latency => Target::Latency(1.0),
        };
        meter.fraction(target, graph)
    }
}
