//! What a compression run reports: its history of events, its progress after every step, and
//! its outcome. The history and outcome are the `--report` JSON.

use super::front::Front;
use crate::analysis::{RedundancyReport, Refit};
use crate::evolution::SearchProgress;
use crate::plan::PruningPlan;
use crate::selection::Cost;

/// What happened at one point of the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Event {
    /// Validation before the first prune.
    Start,
    /// Channels removed.
    Prune { channels: usize },
    /// One relief pass: connections masked, then `channels` dead or unread units removed,
    /// leaving `nonzero_params` parameters that are not exactly zero.
    Relief {
        pass: usize,
        channels: usize,
        nonzero_params: u64,
    },
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
    /// The effective-filter analysis of the original network, when the run made one: per group
    /// r_g and its cap, R_max, ε.
    pub analysis: Option<RedundancyReport>,
    /// The target asked for more than the caps allow, so the run pruned to the caps instead.
    pub target_clamped: bool,
    /// What the least-squares refit after the prune did, when the run made one.
    pub refit: Option<Refit>,
    /// `--strategy es`: every individual of the search and the models picked from its front.
    pub front: Option<Front>,
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
    /// While `--strategy es` searches: where the search stands (the step fields then count
    /// nothing).
    pub search: Option<SearchProgress>,
}
