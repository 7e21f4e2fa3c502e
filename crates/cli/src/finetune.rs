//! `compress finetune`: train a model on a dataset with pare's own forward and backward passes,
//! then verify the written file with tract.

use crate::{model, table};
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pare_train::{AdamConfig, Loss, OptimizerConfig, RlsConfig, SgdConfig, TrainConfig};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, clap::ValueEnum, Serialize)]
enum OptimizerKind {
    /// Recursive least squares (W ← W − η·G·P per layer; other parameters by SGD).
    Rls,
    /// SGD with momentum.
    Sgd,
    /// Adam.
    Adam,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LossKind {
    /// Softmax cross-entropy on the logits.
    CrossEntropy,
    /// Mean squared error against one-hot targets.
    Mse,
}

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
    /// The optimiser.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Rls)]
    optimizer: OptimizerKind,
    /// Passes over the training split.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Learning rate of SGD and Adam, and of the parameters RLS hands to SGD (BatchNorm).
    /// Default: 0.01 for SGD, 0.001 for Adam.
    #[arg(long)]
    lr: Option<f32>,
    /// RLS: initial P = α·I. α·η acts as the learning rate; keep it ≤ 0.3 for a pretrained model.
    #[arg(long, default_value_t = 0.1)]
    alpha: f64,
    /// RLS: step scale η.
    #[arg(long, default_value_t = 3.0)]
    eta: f64,
    /// RLS: forgetting factor λ in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    lambda: f64,
    /// The training loss.
    #[arg(long, value_enum, default_value_t = LossKind::CrossEntropy)]
    loss: LossKind,
    /// Keep BatchNorm in inference mode (running statistics) while training.
    #[arg(long)]
    freeze_bn: bool,
    /// Seed of the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
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
    epochs: Vec<pare_train::EpochReport>,
    test_accuracy_before: f64,
    test_accuracy_after: f64,
    test_images: usize,
}

fn optimizer(args: &Args) -> Result<OptimizerConfig> {
    if args.lr.is_some_and(|lr| !(lr > 0.0 && lr.is_finite())) {
        bail!("--lr must be a positive number");
    }
    Ok(match args.optimizer {
        OptimizerKind::Sgd => OptimizerConfig::Sgd(SgdConfig {
            lr: args.lr.unwrap_or(0.01),
            ..SgdConfig::default()
        }),
        OptimizerKind::Adam => OptimizerConfig::Adam(AdamConfig {
            lr: args.lr.unwrap_or(1e-3),
            ..AdamConfig::default()
        }),
        OptimizerKind::Rls => {
            let valid =
                args.lambda > 0.0 && args.lambda <= 1.0 && args.alpha > 0.0 && args.eta > 0.0;
            if !valid {
                bail!("RLS needs 0 < --lambda ≤ 1, --alpha > 0 and --eta > 0");
            }
            let other = SgdConfig {
                lr: args.lr.unwrap_or(0.01),
                ..SgdConfig::default()
            };
            OptimizerConfig::Rls(RlsConfig {
                alpha: args.alpha,
                eta: args.eta,
                lambda: args.lambda,
                other,
            })
        }
    })
}

pub fn run(args: Args) -> Result<()> {
    crate::convert::refuse_overwrite(&args.model, &args.output)?;
    if args.epochs == 0 || args.batch == 0 {
        bail!("--epochs and --batch must be at least 1");
    }
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch,
        seed: args.seed,
        loss: match args.loss {
            LossKind::CrossEntropy => Loss::CrossEntropy,
            LossKind::Mse => Loss::Mse,
        },
        optimizer: optimizer(&args)?,
        batchnorm_training: !args.freeze_bn,
    };
    let mut graph = model::load(&args.model)?;
    let splits = pare_data::load_dir(&args.data)?;
    let shape = model::input_shape_for(&graph, &args.model, &args.data, &splits.test, 100)?;
    model::input_shape_for(&graph, &args.model, &args.data, &splits.train, 1)?;
    let before = model::tract_accuracy(&args.model, &shape, &args.data, "test", &splits.test)?;
    let classes = pare_verify::TractModel::load(&args.model, &shape)?.class_count()?;
    model::check_labels(&args.data, "train", &splits.train, &args.model, classes)?;

    let bar = ProgressBar::new((splits.train.len().div_ceil(args.batch) * args.epochs) as u64);
    if args.quiet || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let epochs = pare_train::train(&mut graph, &splits.train, &config, &mut |p| {
        bar.set_prefix(format!("epoch {}/{}", p.epoch, args.epochs));
        bar.set_message(format!("loss {:.4} acc {:.1}%", p.loss, p.accuracy_percent));
        bar.inc(1);
    })
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.model.display()))?;
    bar.finish_and_clear();

    pare_onnx::write_model(&args.output, &pare_ir::export(&graph))?;
    let after = model::tract_accuracy(&args.output, &shape, &args.data, "test", &splits.test)?;
    let report = Report {
        model: args.model.clone(),
        output: args.output.clone(),
        config,
        epochs,
        test_accuracy_before: before.percent(),
        test_accuracy_after: after.percent(),
        test_images: after.total,
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
