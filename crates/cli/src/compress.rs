//! `compress model.onnx --data DIR -o small.onnx`: the main job. Prune and fine-tune with pare,
//! then let tract verify both files side by side and print one table.
//!
//! The compressed model is verified from its encoded bytes before anything is written, so a
//! model that loses more than `--max-drop` points never reaches disk without `--force`.

mod conclude;
mod report;
mod supervision;
mod with_data;
mod without_data;

use crate::analyze::{render_analysis, EnergyArgs};
use crate::data_args::PreprocessArgs;
use crate::distill_args::DistillArgs;
use crate::es_args::EsArgs;
use crate::eval::MAX_RUNS;
use crate::latency_args::LatencyArgs;
use crate::relief_args::ReliefArgs;
use crate::sparsity::{self, Zeros};
use crate::train_args::{OptimizerKind, TrainArgs};
use crate::{front, model, paths, table, train_args};
use anyhow::{bail, Result};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::ValueEnum;
use pare_prune::analysis::RedundancyReport;
use pare_prune::{
    Caps, CompressConfig, Cost, Criterion, Event, EventSize, HistoryEntry, LayerSparsity,
    LayerWidth, Ranking, RecoveryReference, Strategy, Target,
};
use pare_verify::{Accuracy, Latency};
use serde::Serialize;
use std::path::{Path, PathBuf};
use supervision::Supervision;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum StrategyKind {
    /// RLS prune-and-recover: prune a ratio of every group, retrain until validation is back,
    /// prune again; roll back to the last recovered model when the budget ends.
    Rls,
    /// Prune straight to the target, then fine-tune for the whole budget.
    Oneshot,
    /// Effective-filter analysis, then prune each group toward its cap (one fraction λ for all,
    /// bisected to meet the target) by pivoted Cholesky, then fine-tune. Without a target, or
    /// with one beyond the caps, prunes to the caps.
    Hierarchical,
    /// Search channel sets with an evolution strategy on (error, cost); fine-tune three models of
    /// the front (most accurate, knee, cheapest) and write the knee, or with a target the most
    /// accurate model of the front within it.
    Es,
    /// Neural network relief: per unit, keep the connections carrying --alpha-conv/--alpha-fc of
    /// its signal; remove dead and unread units; retrain; --iterations times.
    Relief,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CapsKind {
    /// Only --min-keep limits how narrow a group gets.
    None,
    /// No group narrower than its effective filters (see `compress analyze`).
    Analysis,
}

impl StrategyKind {
    /// The criterion used when --criterion is not given; None for a strategy that scores no
    /// channel (es searches; hierarchical's channels come from the analysis).
    fn default_criterion(self) -> Option<Criterion> {
        match self {
            StrategyKind::Rls => Some(Criterion::Rls),
            StrategyKind::Oneshot => Some(Criterion::L2),
            StrategyKind::Hierarchical | StrategyKind::Es | StrategyKind::Relief => None,
        }
    }
}

/// `--criterion`'s values: pare-prune's criteria by name, with their help and the strategy each
/// is the default of.
fn criterion_parser() -> impl TypedValueParser<Value = Criterion> {
    let values = Criterion::ALL.map(|criterion| {
        let default_of = StrategyKind::value_variants()
            .iter()
            .filter(|s| s.default_criterion() == Some(criterion))
            .filter_map(|s| s.to_possible_value());
        let help = default_of.fold(criterion.help().to_string(), |help, strategy| {
            format!("{help} (default of --strategy {})", strategy.get_name())
        });
        PossibleValue::new(criterion.name()).help(help)
    });
    PossibleValuesParser::new(values)
        .map(|name| Criterion::from_name(&name).expect("clap accepts only the criteria's names"))
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum EventSizeKind {
    /// round(ratio × width) channels of every group, at least one.
    Channels,
    /// The lowest-scored channels whose scores sum to at most ratio × the group's total.
    ScoreShare,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ReferenceKind {
    /// The level just before the latest prune (the paper's rule).
    Last,
    /// The unpruned model's level: stricter, the tolerance does not add up over prunes.
    Original,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum RankingKind {
    /// Every group loses the same fraction.
    Local,
    /// Channels compete across groups on normalised scores.
    Global,
}

/// Compress a model: prune whole channels and fine-tune on --data, then verify the original
/// and the compressed model with tract on the test split and print them side by side.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to compress.
    #[arg(required = true)]
    model: Option<PathBuf>,
    /// Dataset (as for `finetune`): training uses its train split, the final report its test
    /// split. Recovery is judged on --val, or on a split held out of the train split. Unlabeled
    /// images (a folder of images, an .npz of x alone) work too: training then distils from the
    /// original, and the final check is top-1 agreement with it on held-out images. Without
    /// --data: a one-shot prune by a criterion that needs no data (l2 by default) to
    /// --target-macs (0.5 by default), biases compensated from the BatchNorms, no fine-tuning,
    /// agreement with the original checked on synthetic inputs.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where to write the compressed model. Never the input.
    #[arg(short, long, required = true)]
    output: Option<PathBuf>,
    /// A separate validation dataset for recovery checks (its test split is used).
    #[arg(long)]
    val: Option<PathBuf>,
    /// Fraction of the training split held out for validation when --val is not given.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f32,
    /// How to prune [default: rls; oneshot without --data].
    #[arg(long, value_enum)]
    strategy: Option<StrategyKind>,
    /// How channels are scored. Default: rls for --strategy rls, l2 for oneshot.
    #[arg(long, value_parser = criterion_parser())]
    criterion: Option<Criterion>,
    /// How scores of different groups are compared.
    #[arg(long, value_enum, default_value_t = RankingKind::Local)]
    ranking: RankingKind,
    /// Stop pruning at this fraction of the original MACs (e.g. 0.5).
    #[arg(long, conflicts_with = "target_params")]
    target_macs: Option<f64>,
    /// Stop pruning at this fraction of the original parameters.
    #[arg(long)]
    target_params: Option<f64>,
    #[command(flatten)]
    latency: LatencyArgs,
    /// Total training budget in epochs (passes over the training split).
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// RLS: fraction of each group's channels one pruning event removes.
    #[arg(long, default_value_t = 0.1)]
    ratio: f64,
    /// RLS: how --ratio sizes an event in each group.
    #[arg(long, value_enum, default_value_t = EventSizeKind::Channels)]
    event_size: EventSizeKind,
    /// RLS: each event prunes one group, the groups in forward order in turn, instead of all.
    #[arg(long)]
    one_group_per_event: bool,
    /// Fraction of its original width every group keeps.
    #[arg(long, default_value_t = 0.05)]
    min_keep: f64,
    /// Keep pruned widths a multiple of N (e.g. 8 for SIMD-friendly kernels) [default: 1; under
    /// a latency target, widths snap to the fast widths the latency model measured instead].
    #[arg(long)]
    round_to: Option<usize>,
    /// Recovered when validation accuracy is within this many points of its level before the
    /// prune (or validation loss is back to it) [default: 0.5; 2 for agreement with the original
    /// on unlabeled data, where a model as accurate as the original still disagrees with it on
    /// a point or two].
    #[arg(long)]
    tolerance: Option<f64>,
    /// What a prune must recover to on validation data.
    #[arg(long, value_enum, default_value_t = ReferenceKind::Last)]
    recover_to: ReferenceKind,
    /// Keep every group at or above its effective filters (rls and oneshot; hierarchical always
    /// does).
    #[arg(long, value_enum, default_value_t = CapsKind::None)]
    caps: CapsKind,
    /// Hierarchical: refit the layers that read removed channels by least squares before
    /// fine-tuning, so it starts from a network that still works (for short budgets).
    #[arg(long)]
    refit: bool,
    /// Training batches the effective-filter analysis sums over (hierarchical, --caps analysis).
    #[arg(long, default_value_t = 32)]
    analysis_batches: usize,
    #[command(flatten)]
    energy: EnergyArgs,
    #[command(flatten)]
    es: EsArgs,
    /// Clip the gradient's global L2 norm to this (0 turns clipping off).
    #[arg(long, default_value_t = 5.0)]
    max_grad_norm: f32,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    shape: model::InputShapeArg,
    #[command(flatten)]
    preprocess: PreprocessArgs,
    #[command(flatten)]
    relief: ReliefArgs,
    #[command(flatten)]
    distill: DistillArgs,
    /// Refuse to write the model if test accuracy falls by more than this many points [default:
    /// 1; 3 for agreement with the original on unlabeled data]. Without --data only when given:
    /// agreement on synthetic inputs is a weak guide to accuracy (docs/methods/datafree.md).
    #[arg(long)]
    max_drop: Option<f64>,
    /// Write the model even when accuracy falls by more than --max-drop.
    #[arg(long)]
    force: bool,
    /// Also write the report as JSON here (widths, pruning history, both models' figures).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Latency runs per model (after 10 warm-up runs), at batch 1.
    #[arg(long, default_value_t = 100)]
    latency_runs: usize,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, short)]
    quiet: bool,
}

/// One model's figures, measured by tract.
fn config(args: &Args) -> Result<CompressConfig> {
    train_args::check_epochs(args.epochs)?;
    if args.latency_runs == 0 || args.latency_runs > MAX_RUNS {
        bail!("--latency-runs must be between 1 and {MAX_RUNS}");
    }
    args.latency.check()?;
    // NaN passes no comparison, so each check is written to fail for it.
    let points = |v: f64| v >= 0.0 && v.is_finite();
    if args.tolerance.is_some_and(|t| !points(t)) {
        bail!("--tolerance must be a number of points, 0 or more");
    }
    if args.max_drop.is_some_and(|m| !m.is_finite()) {
        bail!("--max-drop must be a number of points");
    }
    if !points(f64::from(args.max_grad_norm)) {
        bail!("--max-grad-norm must be 0 (no clipping) or a positive number");
    }
    let kind = args.strategy.unwrap_or(if args.data.is_some() {
        StrategyKind::Rls
    } else {
        StrategyKind::Oneshot
    });
    let strategy = match kind {
        StrategyKind::Rls => Strategy::Rls,
        StrategyKind::Oneshot => Strategy::Oneshot,
        StrategyKind::Hierarchical => Strategy::Hierarchical,
        StrategyKind::Es => Strategy::Es,
        StrategyKind::Relief => Strategy::Relief,
    };
    if strategy == Strategy::Relief && args.latency.requested() {
        // Refused before the latency model is measured, not after.
        bail!("--strategy relief prunes by its alphas and stops by --tolerance; leave out --target-latency");
    }
    if strategy == Strategy::Hierarchical && args.criterion.is_some() {
        bail!("--strategy hierarchical chooses channels by the analysis (pivoted Cholesky); --criterion is for rls and oneshot");
    }
    if strategy == Strategy::Es && args.criterion.is_some() {
        bail!("--strategy es scores no channel: its search needs no --criterion");
    }
    if strategy != Strategy::Es && args.es.front_dir.is_some() {
        bail!("--front-dir writes the front of --strategy es");
    }
    if args.analysis_batches == 0 || args.analysis_batches > crate::analyze::MAX_BATCHES {
        bail!(
            "--analysis-batches must be between 1 and {}",
            crate::analyze::MAX_BATCHES
        );
    }
    let criterion = args
        .criterion
        .or(kind.default_criterion())
        .unwrap_or(CompressConfig::default().criterion);
    if strategy == Strategy::Rls
        && args
            .train
            .optimizer
            .is_some_and(|k| k != OptimizerKind::Rls)
    {
        bail!("--strategy rls trains with RLS; --optimizer chooses the fine-tuning of --strategy oneshot");
    }
    Ok(CompressConfig {
        strategy,
        criterion,
        ranking: match args.ranking {
            RankingKind::Local => Ranking::Local,
            RankingKind::Global => Ranking::Global,
        },
        target: match (args.target_macs, args.target_params) {
            (Some(f), _) => Some(Target::Macs(f)),
            (_, Some(f)) => Some(Target::Params(f)),
            // A latency target is set once its latency model is measured (`LatencyArgs::configure`).
            _ if args.data.is_none() && !args.latency.requested() => {
                Some(Target::Macs(without_data::DEFAULT_TARGET_MACS))
            }
            _ => None,
        },
        epochs: args.epochs,
        batch_size: args.train.batch,
        seed: args.train.seed,
        loss: args.train.loss().into(),
        rls: args.train.rls()?,
        finetune: args.train.optimizer()?,
        ratio: args.ratio,
        one_group_per_event: args.one_group_per_event,
        event_size: match args.event_size {
            EventSizeKind::Channels => EventSize::Channels,
            EventSizeKind::ScoreShare => EventSize::ScoreShare,
        },
        min_keep: args.min_keep,
        round_to: args.round_to.unwrap_or(1).max(1),
        snap_widths: args.round_to.is_none(),
        accuracy_tolerance: args
            .tolerance
            .unwrap_or(Supervision::Labels.default_tolerance()),
        recovery_reference: match args.recover_to {
            ReferenceKind::Last => RecoveryReference::LastPrune,
            ReferenceKind::Original => RecoveryReference::Original,
        },
        max_grad_norm: (args.max_grad_norm > 0.0).then_some(args.max_grad_norm),
        batchnorm_training: !args.train.freeze_bn,
        analysis: args.energy.settings(args.analysis_batches),
        refit: args.refit,
        caps: match args.caps {
            CapsKind::None => Caps::None,
            CapsKind::Analysis => Caps::Analysis,
        },
        es: args.es.config(args.latency.requested())?,
        relief: args.relief.settings(),
        ..CompressConfig::default()
    })
}

pub fn run(args: Args) -> Result<()> {
    let (Some(model_path), Some(output)) = (args.model.clone(), args.output.clone()) else {
        bail!("give a model and -o (see `compress --help`)");
    };
    if !(0.0..1.0).contains(&args.val_fraction) {
        bail!("--val-fraction must be in [0, 1)");
    }
    args.distill.check()?;
    let config = config(&args)?;
    match args.data.clone() {
        Some(data) => with_data::run(&args, config, &model_path, &data, &output),
        None => without_data::run(&args, config, &model_path, &output),
    }
}

/// Refuses an `-o`, `--report` or `--front-dir` that would replace one of `inputs`, and a report
/// that is the output.
fn check_outputs(args: &Args, inputs: &paths::Inputs, output: &Path) -> Result<()> {
    inputs.refuse_overwrite("-o", output)?;
    if let Some(dir) = &args.es.front_dir {
        front::check_dir(inputs, dir)?;
    }
    if let Some(report) = &args.report {
        inputs.refuse_overwrite("--report", report)?;
        if paths::same_file(report, output) {
            bail!(
                "--report {} is also the output model; give the report another path",
                report.display()
            );
        }
    }
    Ok(())
}
