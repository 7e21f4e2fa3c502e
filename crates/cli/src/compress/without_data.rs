//! `compress` without `--data`: one prune by a criterion that reads only the weights, biases
//! compensated from the BatchNorms, no fine-tuning; tract checks top-1 agreement with the
//! original on synthetic inputs, and the table warns that accuracy was not measured.

use super::conclude::{conclude, Finished};
use super::report::NoData;
use super::supervision::Supervision;
use super::{Args, StrategyKind};
use crate::{model, paths};
use anyhow::{bail, Context, Result};
use pare_data::Dataset;
use pare_prune::{CompressConfig, Outcome, Strategy};
use pare_verify::{Source, Subject};
use std::path::Path;

/// The MACs target without data when none is given.
pub(super) const DEFAULT_TARGET_MACS: f64 = 0.5;

/// At most this many synthetic images are checked...
const SYNTHETIC_IMAGES: usize = 500;
/// ...and together at most this many floats (256 MiB), so large inputs get fewer.
const SYNTHETIC_FLOATS: usize = 1 << 26;
/// But never fewer than this, so agreement moves in steps of at most 2.5 points.
const MIN_SYNTHETIC_IMAGES: usize = 40;

/// Prunes the model at `model_path` without data and hands the result to `conclude`.
pub(super) fn run(
    args: &Args,
    mut config: CompressConfig,
    model_path: &Path,
    output: &Path,
) -> Result<()> {
    refuse_what_needs_data(args, &config)?;
    let mut inputs = paths::Inputs::default();
    let mut graph = model::load(model_path, &args.shape, &mut inputs)?;
    super::check_outputs(args, &inputs, output)?;
    if args.target_macs.is_none() && args.target_params.is_none() && !args.latency.requested() {
        eprintln!(
            "no --data: pruning to {:.0}% of the MACs (--target-macs {DEFAULT_TARGET_MACS}) by {} \
             scores, without fine-tuning",
            100.0 * DEFAULT_TARGET_MACS,
            config.criterion.name()
        );
    }
    let latency = args.latency.configure(&graph, &mut config, args.quiet)?;
    let before = graph.clone();
    let count = (SYNTHETIC_FLOATS / per_image_floats(&before))
        .clamp(MIN_SYNTHETIC_IMAGES, SYNTHETIC_IMAGES);
    let (images, source) = pare_prune::synthetic_inputs(&before, count, config.seed)
        .with_context(|| format!("{}: drawing synthetic inputs", model_path.display()))?;
    let pruned = pare_prune::prune_without_data(&mut graph, &config)
        .with_context(|| format!("{}: compression failed", model_path.display()))?;
    // Labels are the original's top-1 in tract, set once tract has loaded it at this shape.
    let mut test = Dataset::new(images, vec![0; count]);
    let test_shape =
        pare_verify::input_shape_for(&before, model_path, model_path, "synthetic", &test, 100)?;
    let original = Subject::load(Source::File(model_path), &test_shape)?;
    test.labels = original.top1(test.images.view())?;
    let outcome = Outcome {
        original: pruned.original,
        compressed: pruned.compressed,
        target_met: Some(pruned.target_met),
        history: Vec::new(),
        plans: Vec::new(),
        analysis: None,
        target_clamped: false,
        refit: None,
        front: None,
    };
    conclude(
        args,
        Finished {
            model_path,
            output,
            data: model_path,
            preprocess: None,
            before: &before,
            graph: &graph,
            original: &original,
            test: &test,
            test_shape: &test_shape,
            supervision: Supervision::Synthetic,
            validation: "none (no data)".into(),
            validation_held_out: false,
            outcome,
            latency,
            no_data: Some(NoData {
                criterion: config.criterion.name(),
                channels: pruned.channels,
                compensation: pruned.compensation,
                synthetic: source,
            }),
            config,
        },
    )
}

/// Floats in one input image of `graph` (an open dimension counts 1: the draw refuses it).
fn per_image_floats(graph: &pare_ir::Graph) -> usize {
    graph
        .inputs
        .first()
        .and_then(|&v| graph.value(v).shape.as_ref())
        .map_or(1, |shape| {
            shape.0[1..]
                .iter()
                .map(|d| d.known().unwrap_or(1).max(1))
                .product()
        })
}

/// Refuses flags that only mean something with data.
fn refuse_what_needs_data(args: &Args, config: &CompressConfig) -> Result<()> {
    if let Some(kind) = args
        .strategy
        .filter(|&k| !matches!(k, StrategyKind::Oneshot))
    {
        let name = format!("{kind:?}").to_lowercase();
        bail!(
            "--strategy {name} trains or searches on data: give --data, or leave --strategy out \
             (without --data pare prunes once and does not fine-tune)"
        );
    }
    debug_assert_eq!(config.strategy, Strategy::Oneshot);
    if config.criterion.needs_data() {
        bail!(
            "--criterion {} scores channels from data: give --data, or use l2, l1, bn-scale or \
             random",
            config.criterion.name()
        );
    }
    for (given, flag) in [
        (args.val.is_some(), "--val"),
        (args.distill.distill, "--distill"),
        (args.es.front_dir.is_some(), "--front-dir"),
    ] {
        if given {
            bail!("{flag} needs --data");
        }
    }
    Ok(())
}
