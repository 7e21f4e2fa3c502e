//! `compress` with `--data`: labelled splits, or unlabeled images the original labels; train,
//! validation and test splits; the chosen strategy prunes and fine-tunes.

use super::supervision::{self, Supervision};
use super::{conclude, Args};
use crate::{data_args, paths, progress};
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use pare_prune::{CompressConfig, Progress};
use pare_verify::{Source, Subject};
use std::path::Path;

/// Runs the strategy of `config` on the data at `data` and hands the result to `conclude`.
pub(super) fn run(
    args: &Args,
    mut config: CompressConfig,
    model_path: &Path,
    data: &Path,
    output: &Path,
) -> Result<()> {
    let mut inputs = paths::Inputs::default();
    let (mut graph, preprocess, contents) = data_args::load_model_and_contents(
        model_path,
        &args.shape,
        data,
        &args.preprocess,
        &mut inputs,
    )?;
    inputs.add("the --data dataset", data);
    if let Some(val) = &args.val {
        inputs.add("the --val dataset", val);
    }
    // Before the teacher's pass over the data: a refused output should not wait for it.
    super::check_outputs(args, &inputs, output)?;
    let (mut splits, supervision) = supervision::splits(
        &graph,
        model_path,
        data,
        contents,
        &args.distill,
        args.train.seed,
    )?;
    let labelled = supervision == Supervision::Labels;
    config.accuracy_tolerance = args.tolerance.unwrap_or(supervision.default_tolerance());
    if !labelled || args.distill.distill {
        config.loss.distillation = Some(args.distill.distillation(labelled));
    }
    let before_graph = graph.clone();
    let test_shape =
        pare_verify::input_shape_for(&graph, model_path, data, "test", &splits.test, 100)?;
    if splits.test.is_empty() {
        bail!(
            "{}: the test split is empty; the comparison of both models needs test images",
            data.display()
        );
    }
    let original = Subject::load(Source::File(model_path), &test_shape)?;
    if supervision == Supervision::Teacher {
        // Agreement is counted against tract's own top-1 of the original, so the original
        // agrees with itself exactly.
        splits.test.labels = original.top1(splits.test.images.view())?;
    }
    original.check_labels(data, "train", &splits.train)?;
    original.check_labels(data, "test", &splits.test)?;
    let (train, val, validation) = match &args.val {
        Some(dir) => {
            if paths::same_file(dir, data) {
                eprintln!(
                    "warning: --val is --data, so recovery is judged on the test split the final table reports"
                );
            }
            if !labelled {
                bail!("--val: with unlabeled --data, recovery is judged on images held out of it (--val-fraction)");
            }
            let mut v = data_args::load(dir, &preprocess)?.test;
            pare_verify::input_shape_for(&graph, model_path, dir, "validation", &v, 1)?;
            original.check_labels(dir, "test", &v)?;
            if config.loss.distillation.is_some() {
                supervision::add_teacher(&before_graph, model_path, &mut v)?;
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
            "{}: no validation images; give {}a larger --val-fraction",
            data.display(),
            if labelled { "--val DIR or " } else { "" }
        );
    }

    let latency = args
        .latency
        .configure(&before_graph, &mut config, args.quiet)?;
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

    conclude::conclude(
        args,
        conclude::Finished {
            model_path,
            output,
            data,
            config,
            preprocess: Some(preprocess),
            before: &before_graph,
            graph: &graph,
            original: &original,
            test: &splits.test,
            test_shape: &test_shape,
            supervision,
            validation,
            validation_held_out: args.val.is_none(),
            outcome,
            latency,
            no_data: None,
        },
    )
}
