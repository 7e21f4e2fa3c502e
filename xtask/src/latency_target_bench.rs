//! `cargo xtask bench latency-target`: `compress --target-latency` against `--target-macs` runs
//! of the same latency, as a user runs them (the `compress` binary). For each model: the latency
//! run, the same without snapping widths (`--round-to 1`), then MACs targets from 0.5 down until
//! one is at least as fast as the latency run. Every figure is from the runs' reports: tract's
//! test accuracy, and latency measured against the original in the same sitting (interleaved),
//! so the ratios hold on a noisy machine better than the milliseconds do. `--without-data FILE`
//! runs the same ladder on a model pruned without data.

use crate::prune_bench::{compress_binary, compress_to};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// (label, model, data flags)
const MODELS: [(&str, &str, &[&str]); 3] = [
    (
        "VGG-style",
        "models/vggbn_opset17.onnx",
        &["--data", "models/mnist5k"],
    ),
    (
        "ResNet-20",
        "models/resnet20_opset17.onnx",
        &["--data", "models/mnist5k"],
    ),
    (
        "MobileNet-style (SE)",
        "models/mobile/mobile_se_opset13.onnx",
        &[
            "--data",
            "models/mobile/quadrants.npz",
            "--val",
            "models/mobile/quadrants.npz",
        ],
    ),
];

/// The MACs targets tried, widest first, until one is as fast as the latency run.
const MACS_TARGETS: [&str; 8] = ["0.5", "0.4", "0.35", "0.3", "0.25", "0.2", "0.15", "0.1"];

#[derive(clap::Args)]
pub struct Settings {
    /// Keep only the models whose file contains this (vggbn, resnet20, mobile).
    model: Option<String>,
    /// The latency target, a fraction of the original's.
    #[arg(long, default_value_t = 0.5)]
    target: f64,
    /// The training budget of every run.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// The strategy of every run (rls, oneshot, hierarchical).
    #[arg(long, default_value = "rls")]
    strategy: String,
    /// Use a debug build of compress: checks that the benchmark runs, figures mean nothing.
    #[arg(long)]
    debug: bool,
    /// Also compare on this model pruned without data (no training, so no strategy or epochs),
    /// e.g. MobileNetV2 at 224×224 from scripts/export_mobilenet_v2.py. Its accuracy column is
    /// empty: without data only agreement on synthetic inputs is measured.
    #[arg(long)]
    without_data: Option<PathBuf>,
}

/// One run's figures, from its report.
struct Row {
    macs: f64,
    latency: f64,
    accuracy: f64,
    original_accuracy: f64,
    wall: f64,
}

impl Row {
    fn of(r: &serde_json::Value, wall: f64) -> Row {
        let f = |model: &str, key: &str| r[model][key].as_f64().unwrap_or(f64::NAN);
        let latency = |model: &str| {
            r[model]["latency"]["median_ms"]
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        Row {
            macs: f("compressed", "macs") / f("original", "macs"),
            latency: latency("compressed") / latency("original"),
            accuracy: f("compressed", "test_accuracy"),
            original_accuracy: f("original", "test_accuracy"),
            wall,
        }
    }

    /// One table row; `with_accuracy` false leaves the accuracy column empty.
    fn print(&self, label: &str, run: &str, with_accuracy: bool) {
        let accuracy = if !with_accuracy || self.accuracy.is_nan() {
            "–".to_string()
        } else {
            format!(
                "{:.1}% (orig {:.1}%)",
                self.accuracy, self.original_accuracy
            )
        };
        println!(
            "| {label} | {run} | {:.1}% | {:.2} | {:.2} | {accuracy} | {:.0} |",
            100.0 * self.macs,
            self.latency,
            self.macs / self.latency,
            self.wall
        );
    }
}

pub fn compare(settings: &Settings) -> Result<()> {
    let root = crate::proto::workspace_root();
    let binary = compress_binary(&root, !settings.debug)?;
    if settings.debug {
        eprintln!("warning: a debug build; these figures only show that the benchmark runs");
    }
    let work = tempfile::tempdir()?;
    let (epochs, target) = (settings.epochs.to_string(), settings.target.to_string());
    println!(
        "| model | run | MACs kept | latency (measured) | efficiency | test accuracy | wall s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let out = work.path().join("small.onnx");
    for (label, model, data) in MODELS {
        if settings
            .model
            .as_deref()
            .is_some_and(|f| !model.contains(f))
        {
            continue;
        }
        let mut base = vec![model, "--epochs", &epochs, "--strategy", &settings.strategy];
        base.extend_from_slice(data);
        ladder(&binary, label, &base, &target, &out, true)?;
    }
    if let Some(file) = &settings.without_data {
        let model = file.to_str().context("a UTF-8 model path")?;
        ladder(
            &binary,
            &format!("{} without data", file.display()),
            &[model],
            &target,
            &out,
            // Its report's "accuracy" is top-1 agreement with the original on synthetic inputs,
            // which says nothing of a random-weight model's accuracy.
            false,
        )?;
    }
    Ok(())
}

/// The latency run, the same unsnapped, and MACs targets down to the first as fast, of
/// `compress` with `base` arguments; one table row each.
fn ladder(
    binary: &Path,
    label: &str,
    base: &[&str],
    target: &str,
    out: &Path,
    with_accuracy: bool,
) -> Result<()> {
    let run = |flags: &[&str]| -> Result<Row> {
        let (r, wall) = compress_to(binary, &[base, flags].concat(), out)?;
        Ok(Row::of(&r, wall))
    };
    let latency = run(&["--target-latency", target])?;
    latency.print(label, &format!("--target-latency {target}"), with_accuracy);
    let unsnapped = run(&["--target-latency", target, "--round-to", "1"])?;
    unsnapped.print(
        label,
        &format!("--target-latency {target} --round-to 1"),
        with_accuracy,
    );
    for macs in MACS_TARGETS {
        let row = run(&["--target-macs", macs])?;
        row.print(label, &format!("--target-macs {macs}"), with_accuracy);
        if row.latency <= latency.latency {
            break;
        }
    }
    Ok(())
}
