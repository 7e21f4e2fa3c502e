//! `compress model.onnx --data DIR -o small.onnx`: the main job. Prune and fine-tune with pare,
//! then let tract verify both files side by side and print one table.
//!
//! The compressed model is verified from its encoded bytes before anything is written, so a
//! model that loses more than `--max-drop` points never reaches disk without `--force`.

mod report;
mod supervision;

use crate::analyze::{render_analysis, EnergyArgs};
use crate::data_args::{self, PreprocessArgs};
use crate::distill_args::DistillArgs;
use crate::es_args::EsArgs;
use crate::eval::MAX_RUNS;
use crate::relief_args::ReliefArgs;
use crate::sparsity::{self, Zeros};
use crate::train_args::{OptimizerKind, TrainArgs};
use crate::{front, model, paths, progress, table, train_args};
use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::ValueEnum;
use indicatif::ProgressBar;
use pare_prune::analysis::RedundancyReport;
use pare_prune::{
    Caps, CompressConfig, Cost, Criterion, Event, EventSize, HistoryEntry, LayerSparsity,
    LayerWidth, Progress, Ranking, RecoveryReference, Strategy, Target,
};
use pare_verify::{Accuracy, Latency, Source, Subject};
use report::{figures, layer_report, render, Report};
use serde::Serialize;
use std::path::PathBuf;
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
    /// original, and the final check is top-1 agreement with it on held-out images.
    #[arg(long, required = true)]
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
    /// How to prune.
    #[arg(long, value_enum, default_value_t = StrategyKind::Rls)]
    strategy: StrategyKind,
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
    /// Keep pruned widths a multiple of N (e.g. 8 for SIMD-friendly kernels).
    #[arg(long, default_value_t = 1)]
    round_to: usize,
    /// Recovered when validation accuracy is within this many points of its level before the
    /// prune (or validation loss is back to it).
    #[arg(long, default_value_t = 0.5)]
    tolerance: f64,
    /// What a prune must recover to on validation data.
    #[arg(long, value_enum, default_value_t = ReferenceKind::Last)]
    recover_to: ReferenceKind,
    /// Keep every group at or above its effective filters (rls and oneshot; hierarchical always
    /// does).
    #[arg(long, value_enum, default_value_t = CapsKind::None)]
    caps: CapsKind,
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
    /// Refuse to write the model if test accuracy (or agreement with the original, on unlabeled
    /// data) falls by more than this many points.
    #[arg(long, default_value_t = 1.0)]
    max_drop: f64,
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
    // NaN passes no comparison, so each check is written to fail for it.
    let points = |v: f64| v >= 0.0 && v.is_finite();
    if !points(args.tolerance) {
        bail!("--tolerance must be a number of points, 0 or more");
    }
    if !args.max_drop.is_finite() {
        bail!("--max-drop must be a number of points");
    }
    if !points(f64::from(args.max_grad_norm)) {
        bail!("--max-grad-norm must be 0 (no clipping) or a positive number");
    }
    let strategy = match args.strategy {
        StrategyKind::Rls => Strategy::Rls,
        StrategyKind::Oneshot => Strategy::Oneshot,
        StrategyKind::Hierarchical => Strategy::Hierarchical,
        StrategyKind::Es => Strategy::Es,
        StrategyKind::Relief => Strategy::Relief,
    };
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
        .or(args.strategy.default_criterion())
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
        round_to: args.round_to.max(1),
        accuracy_tolerance: args.tolerance,
        recovery_reference: match args.recover_to {
            ReferenceKind::Last => RecoveryReference::LastPrune,
            ReferenceKind::Original => RecoveryReference::Original,
        },
        max_grad_norm: (args.max_grad_norm > 0.0).then_some(args.max_grad_norm),
        batchnorm_training: !args.train.freeze_bn,
        analysis: args.energy.settings(args.analysis_batches),
        caps: match args.caps {
            CapsKind::None => Caps::None,
            CapsKind::Analysis => Caps::Analysis,
        },
        es: args.es.config()?,
        relief: args.relief.settings(),
        ..CompressConfig::default()
    })
}

pub fn run(args: Args) -> Result<()> {
    let (Some(model_path), Some(data), Some(output)) =
        (args.model.clone(), args.data.clone(), args.output.clone())
    else {
        bail!("give a model, --data and -o (see `compress --help`)");
    };
    if !(0.0..1.0).contains(&args.val_fraction) {
        bail!("--val-fraction must be in [0, 1)");
    }
    let mut config = config(&args)?;
    args.distill.check()?;

    let mut inputs = paths::Inputs::default();
    let (mut graph, preprocess, contents) = data_args::load_model_and_contents(
        &model_path,
        &args.shape,
        &data,
        &args.preprocess,
        &mut inputs,
    )?;
    let (mut splits, supervision) = supervision::splits(
        &graph,
        &model_path,
        &data,
        contents,
        &args.distill,
        args.train.seed,
    )?;
    let labelled = supervision == Supervision::Labels;
    if !labelled || args.distill.distill {
        config.loss.distillation = Some(args.distill.distillation(labelled));
    }
    inputs.add("the --data dataset", &data);
    if let Some(val) = &args.val {
        inputs.add("the --val dataset", val);
    }
    inputs.refuse_overwrite("-o", &output)?;
    if let Some(dir) = &args.es.front_dir {
        front::check_dir(&inputs, dir)?;
    }
    if let Some(report) = &args.report {
        inputs.refuse_overwrite("--report", report)?;
        if paths::same_file(report, &output) {
            bail!(
                "--report {} is also the output model; give the report another path",
                report.display()
            );
        }
    }
    let before_graph = graph.clone();
    let test_shape =
        pare_verify::input_shape_for(&graph, &model_path, &data, "test", &splits.test, 100)?;
    if splits.test.is_empty() {
        bail!(
            "{}: the test split is empty; the comparison of both models needs test images",
            data.display()
        );
    }
    let original = Subject::load(Source::File(&model_path), &test_shape)?;
    if supervision == Supervision::Teacher {
        // Agreement is counted against tract's own top-1 of the original, so the original
        // agrees with itself exactly.
        splits.test.labels = original.top1(splits.test.images.view())?;
    }
    original.check_labels(&data, "train", &splits.train)?;
    original.check_labels(&data, "test", &splits.test)?;
    let (train, val, validation) = match &args.val {
        Some(dir) => {
            if paths::same_file(dir, &data) {
                eprintln!(
                    "warning: --val is --data, so recovery is judged on the test split the final table reports"
                );
            }
            if !labelled {
                bail!("--val: with unlabeled --data, recovery is judged on images held out of it (--val-fraction)");
            }
            let mut v = data_args::load(dir, &preprocess)?.test;
            pare_verify::input_shape_for(&graph, &model_path, dir, "validation", &v, 1)?;
            original.check_labels(dir, "test", &v)?;
            if config.loss.distillation.is_some() {
                supervision::add_teacher(&before_graph, &model_path, &mut v)?;
            }
            let label = format!("{} ({} images)", dir.display(), v.len());
            (splits.train, v, label)
        }
        None => {
            let (t, v) = splits
                .train
                .split_off_validation(args.val_fraction, args.train.seed);
            let label = format!("{} images held out of the train split", v.len());
            (t, v, label)
        }
    };
    if val.is_empty() {
        bail!(
            "{}: no validation images; give --val DIR or a larger --val-fraction",
            data.display()
        );
    }

    let bar = progress::bar(
        config.epochs * train.len().div_ceil(config.batch_size),
        args.quiet,
        "[{bar:30}] {pos}/{len} steps {msg} ({eta})",
    );
    // The search draws one bar per generation; fine-tuning draws `bar`.
    let mut generation_bar: Option<(usize, ProgressBar)> = None;
    let outcome = pare_prune::compress(&mut graph, &train, &val, &config, &mut |p: &Progress| {
        if let Some(s) = p.search {
            if generation_bar
                .as_ref()
                .is_none_or(|(g, _)| *g != s.generation)
            {
                if let Some((_, done)) = generation_bar.take() {
                    done.finish();
                }
                let template = format!(
                    "generation {}/{} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{eta}})",
                    s.generation, s.generations
                );
                generation_bar = Some((
                    s.generation,
                    progress::bar(s.offspring, args.quiet, &template),
                ));
            }
            if let Some((_, b)) = &generation_bar {
                b.set_position(s.done as u64);
                b.set_message(format!(
                    "best error {:.2}%  best cost {:.1}%",
                    100.0 * s.best_error,
                    100.0 * s.best_cost
                ));
            }
            return;
        }
        if let Some((_, done)) = generation_bar.take() {
            done.finish();
        }
        bar.set_length(p.total_steps as u64);
        bar.set_position(p.step as u64);
        bar.set_message(format!(
            "loss {:.4}  MACs {:.0}%  prunes {}",
            p.loss,
            100.0 * p.macs_fraction,
            p.prunes
        ));
    })
    .with_context(|| format!("{}: compression failed", model_path.display()))?;
    bar.finish_and_clear();

    let bytes = pare_onnx::encode(&pare_ir::export(&graph));
    let compressed = Subject::load(
        Source::Bytes {
            path: &output,
            bytes: &bytes,
        },
        &test_shape,
    )?;
    let comparison = pare_verify::compare(&original, &compressed, &data, &splits.test)?;
    let (lat_before, lat_after) =
        pare_verify::compare_latency(&original, &compressed, &splits.test, 10, args.latency_runs)?;
    let write = comparison.within(args.max_drop) || args.force;
    if write {
        pare_onnx::write_atomic(&output, &bytes)?;
    }
    let picks = match &outcome.front {
        Some(found) => {
            let dir = args.es.front_dir.as_deref();
            let picks = front::verify(
                found,
                comparison.before,
                &test_shape,
                &data,
                &splits.test,
                dir,
                args.max_drop,
                args.force,
            )?;
            if let Some(dir) = dir {
                front::write(dir, found, &picks)?;
            }
            Some(picks)
        }
        None => None,
    };
    let original_bytes = std::fs::metadata(&model_path).map(|m| m.len()).unwrap_or(0);
    let layers = layer_report(
        &pare_prune::layer_widths(&before_graph),
        &pare_prune::layer_widths(&graph),
    );
    let report = Report {
        model: model_path.clone(),
        output: output.clone(),
        written: write,
        config,
        preprocess,
        validation,
        validation_held_out: args.val.is_none(),
        supervision,
        test_images: splits.test.len(),
        original: figures(
            outcome.original,
            original_bytes,
            Zeros::of(
                &before_graph,
                &pare_onnx::encode(&pare_ir::export(&before_graph)),
            ),
            comparison.before,
            lat_before,
        ),
        compressed: figures(
            outcome.compressed,
            bytes.len() as u64,
            Zeros::of(&graph, &bytes),
            comparison.after,
            lat_after,
        ),
        target_met: outcome.target_met,
        target_clamped: outcome.target_clamped,
        analysis: outcome.analysis,
        front: picks,
        layers,
        sparsity: pare_prune::layer_sparsity(&graph),
        history: outcome.history,
    };
    if let Some(path) = &args.report {
        pare_onnx::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    print!("{}", render(&report));
    if !write {
        bail!(
            "{} fell by {:.1} points (more than --max-drop {}); {} was not written (use --force to write it anyway)",
            supervision.measure(),
            comparison.accuracy_drop(),
            args.max_drop,
            output.display()
        );
    }
    Ok(())
}
