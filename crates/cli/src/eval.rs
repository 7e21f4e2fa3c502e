//! `compress eval`: accuracy and latency of a model file, measured by tract.

use crate::data_args::{self, PreprocessArgs};
use crate::model;
use anyhow::{bail, Context, Result};
use ndarray::s;
use pare_verify::{latency, Source, Subject};
use serde::Serialize;
use std::path::PathBuf;

/// Measure a model with tract: top-1 accuracy on a dataset's test split and latency at batch 1.
///
/// tract loads the file as written, with the input shape fixed and optimised.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to evaluate.
    model: PathBuf,
    /// Dataset: a folder of MNIST IDX files, CIFAR binary batches, .npz arrays or train/ and
    /// test/ image folders, or a single .npz file. Accuracy uses its test split.
    #[arg(long)]
    data: PathBuf,
    /// Images per tract run when measuring accuracy.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Timed runs at batch 1 for latency (after the warm-up).
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Print JSON instead of text, for pipelines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    shape: model::InputShapeArg,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

/// The most timed (or warm-up) runs `eval` makes: beyond this a typo, not a measurement.
pub(crate) const MAX_RUNS: usize = 100_000;

#[derive(Serialize)]
struct Report {
    model: PathBuf,
    preprocess: pare_data::Preprocess,
    accuracy_percent: f64,
    correct: usize,
    total: usize,
    latency: pare_verify::Latency,
}

pub fn run(args: Args) -> Result<()> {
    if args.batch == 0 || args.runs == 0 {
        bail!("--batch and --runs must be at least 1");
    }
    if args.runs > MAX_RUNS || args.warmup > MAX_RUNS {
        bail!("--runs and --warmup must be at most {MAX_RUNS}");
    }
    let graph = model::load(&args.model, &args.shape, &mut Default::default())?;
    let preprocess = args.preprocess.preprocess(&graph, &args.model)?;
    let splits = data_args::load(&args.data, &preprocess)?;
    let test = &splits.test;
    // More images per run than the split has would only pad (and allocate) empty samples.
    let batch = args.batch.min(test.len()).max(1);
    let shape = pare_verify::input_shape_for(&graph, &args.model, &args.data, "test", test, batch)?;
    let subject = Subject::load(Source::File(&args.model), &shape)?;
    let acc = subject.test_accuracy(&args.data, test)?;
    let single = subject.single()?;
    let lat = latency(
        &single,
        test.images.slice(s![..1, .., .., ..]),
        args.warmup,
        args.runs,
    )
    .with_context(|| format!("{}: timing failed", args.model.display()))?;
    let report = Report {
        model: args.model,
        preprocess,
        accuracy_percent: acc.percent(),
        correct: acc.correct,
        total: acc.total,
        latency: lat,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("model     {}", report.model.display());
        println!(
            "accuracy  {:.1}% ({}/{} test images, top-1)",
            report.accuracy_percent, report.correct, report.total
        );
        println!(
            "latency   median {:.3} ms, p90 {:.3} ms (batch 1, {} runs after {} warm-up)",
            lat.median_ms, lat.p90_ms, lat.runs, args.warmup
        );
    }
    Ok(())
}
