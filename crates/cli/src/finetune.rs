//! `compress finetune`: train a model on a dataset with pare's own forward and backward passes,
//! then verify the written file with tract.

use crate::data_args::{self, PreprocessArgs};
use crate::train_args::TrainArgs;
use crate::{model, paths, progress, table, train_args};
use anyhow::Result;
use pare_data::Preprocess;
use pare_train::TrainConfig;
use pare_verify::{Source, Subject};
use serde::Serialize;
use std::path::PathBuf;

/// Fine-tune a model on a dataset's training split, write it, and compare tract's test accuracy
/// before and after.
///
/// The same --seed gives the same weights, bit for bit.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to fine-tune.
    model: PathBuf,
    /// Dataset: a folder of MNIST IDX files, CIFAR binary batches, .npz arrays or train/ and
    /// test/ image folders, or a single .npz file. Training uses its train split, the report its
    /// test split.
    #[arg(long)]
    data: PathBuf,
    /// Where to write the tuned model (temporary file, then renamed). Never the input.
    #[arg(short, long)]
    output: PathBuf,
    /// Passes over the training split.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    shape: model::InputShapeArg,
    #[command(flatten)]
    preprocess: PreprocessArgs,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, short)]
    quiet: bool,
    /// Print the report as JSON, for pipelines.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    model: PathBuf,
    output: PathBuf,
    config: TrainConfig,
    preprocess: Preprocess,
    epochs: Vec<pare_train::EpochReport>,
    test_accuracy_before: f64,
    test_accuracy_after: f64,
    test_images: usize,
}

pub fn run(args: Args) -> Result<()> {
    train_args::check_epochs(args.epochs)?;
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.train.batch,
        seed: args.train.seed,
        loss: args.train.loss().into(),
        optimizer: args.train.optimizer()?,
        batchnorm_training: !args.train.freeze_bn,
        max_grad_norm: None,
    };
    let mut inputs = paths::Inputs::default();
    let (mut graph, preprocess, splits) = data_args::load_model_and_data(
        &args.model,
        &args.shape,
        &args.data,
        &args.preprocess,
        &mut inputs,
    )?;
    inputs.add("the --data dataset", &args.data);
    inputs.refuse_overwrite("-o", &args.output)?;
    let shape =
        pare_verify::input_shape_for(&graph, &args.model, &args.data, "test", &splits.test, 100)?;
    pare_verify::input_shape_for(&graph, &args.model, &args.data, "train", &splits.train, 1)?;
    let original = Subject::load(Source::File(&args.model), &shape)?;
    original.check_labels(&args.data, "test", &splits.test)?;
    original.check_labels(&args.data, "train", &splits.train)?;

    let bar = progress::bar(
        splits.train.len().div_ceil(args.train.batch) * args.epochs,
        args.quiet,
        "{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})",
    );
    let epochs = pare_train::train(&mut graph, &splits.train, &config, &mut |p| {
        bar.set_prefix(format!("epoch {}/{}", p.epoch, args.epochs));
        bar.set_message(format!("loss {:.4} acc {:.1}%", p.loss, p.accuracy_percent));
        bar.inc(1);
    })
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.model.display()))?;
    bar.finish_and_clear();

    pare_onnx::write_model(&args.output, &pare_ir::export(&graph))?;
    let tuned = Subject::load(Source::File(&args.output), &shape)?;
    let comparison = pare_verify::compare(&original, &tuned, &args.data, &splits.test)?;
    let report = Report {
        model: args.model.clone(),
        output: args.output.clone(),
        config,
        preprocess,
        epochs,
        test_accuracy_before: comparison.before.percent(),
        test_accuracy_after: comparison.after.percent(),
        test_images: comparison.after.total,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = report
        .epochs
        .iter()
        .map(|e| {
            vec![
                e.epoch.to_string(),
                format!("{:.4}", e.train.loss),
                format!("{:.1}%", e.train.accuracy_percent()),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["epoch", "train loss", "train acc"], &rows)
    );
    println!(
        "\ntest accuracy (tract, {} images): {:.1}% before, {:.1}% after\nwrote {}",
        report.test_images,
        report.test_accuracy_before,
        report.test_accuracy_after,
        args.output.display()
    );
    Ok(())
}
