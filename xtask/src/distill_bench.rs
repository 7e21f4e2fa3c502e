//! `cargo xtask bench distill`: the three ways `compress` can learn at 50% of the MACs, as a
//! user runs them (the `compress` binary): labelled training on models/mnist5k, distillation
//! from the original on the same training images without their labels (written as a folder of
//! PNGs), and no data at all. Every written model's test accuracy is measured by tract on the
//! labelled test split, which the unlabeled and no-data runs never see. Prints a Markdown table
//! for docs/BENCHMARKS.md.

use crate::prune_bench::{compress_binary, compress_to};
use anyhow::Result;
use pare_verify::TractModel;
use std::path::Path;

/// The models compared: the benchmark's usual three, and the VGG-style model with its
/// BatchNorms kept, the case where the no-data path can compensate from them.
const MODELS: [(&str, &str); 4] = [
    ("LeNet-5", "lenet5_opset17.onnx"),
    ("VGG-style, BN folded", "vggbn_opset17.onnx"),
    ("VGG-style, BN kept", "vggbn_keepbn_opset17.onnx"),
    ("ResNet-20", "resnet20_opset17.onnx"),
];

#[derive(clap::Args)]
pub struct Settings {
    /// Keep only the models whose file name contains this (lenet5, vggbn, keepbn, resnet20).
    model: Option<String>,
    /// The training budget of the labelled and the unlabeled run.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// The MACs target of every run.
    #[arg(long, default_value_t = 0.5)]
    target_macs: f64,
    /// Extra flags for the unlabeled run (e.g. "--tolerance 2"), split at spaces.
    #[arg(long, default_value = "")]
    unlabeled_flags: String,
    /// Use a debug build of compress: checks that the benchmark runs, figures mean nothing.
    #[arg(long)]
    debug: bool,
}

/// The training split of models/mnist5k as PNG files in `dir`, without labels.
fn unlabeled_pngs(root: &Path, dir: &Path) -> Result<usize> {
    let images = pare_data::load_dir(&root.join("models/mnist5k"))?
        .train
        .images;
    let (n, _, h, w) = images.dim();
    for i in 0..n {
        let png = image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
            image::Luma([(images[[i, 0, y as usize, x as usize]] * 255.0).round() as u8])
        });
        png.save(dir.join(format!("{i:05}.png")))?;
    }
    Ok(n)
}

pub fn distill(settings: &Settings) -> Result<()> {
    let root = crate::proto::workspace_root();
    let binary = compress_binary(&root, !settings.debug)?;
    if settings.debug {
        eprintln!("warning: a debug build; these figures only show that the benchmark runs");
    }
    let work = tempfile::tempdir()?;
    let pool = work.path().join("unlabeled");
    std::fs::create_dir(&pool)?;
    let count = unlabeled_pngs(&root, &pool)?;
    let test = pare_data::load_dir(&root.join("models/mnist5k"))?.test;
    let (n, c, h, w) = test.images.dim();
    let target = settings.target_macs.to_string();
    let epochs = settings.epochs.to_string();
    println!(
        "| model | original | labelled (rls) | unlabeled, distilled | agreement (held out) | no data | MACs kept (labelled / unlabeled / no data) | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (label, file) in MODELS {
        if settings.model.as_deref().is_some_and(|f| !file.contains(f)) {
            continue;
        }
        let model = format!("models/{file}");
        let base: Vec<String> = [model.as_str(), "--target-macs", &target]
            .map(String::from)
            .to_vec();
        let trained = |data: &str| {
            let mut args = base.clone();
            args.extend(["--data", data, "--epochs", &epochs].map(String::from));
            args
        };
        let mut unlabeled = trained(pool.to_str().unwrap_or_default());
        unlabeled.extend(
            settings
                .unlabeled_flags
                .split_whitespace()
                .map(String::from),
        );
        let runs = [
            ("labelled", trained("models/mnist5k")),
            ("unlabeled", unlabeled),
            ("no-data", base.clone()),
        ];
        let mut accuracy = Vec::new();
        let mut macs = Vec::new();
        let mut walls = Vec::new();
        let mut agreement = 0.0;
        let mut original = 0.0;
        for (name, args) in runs {
            let out = work.path().join(format!("{name}.onnx"));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (r, wall) = compress_to(&binary, &args, &out)?;
            let tract = TractModel::load(&out, &[n, c, h, w])?;
            accuracy.push(pare_verify::accuracy(&tract, &test)?.percent());
            macs.push(
                100.0 * r["compressed"]["macs"].as_f64().unwrap_or(0.0)
                    / r["original"]["macs"].as_f64().unwrap_or(1.0),
            );
            walls.push(format!("{wall:.0}"));
            if name == "unlabeled" {
                agreement = r["compressed"]["test_accuracy"].as_f64().unwrap_or(0.0);
            }
            if name == "labelled" {
                original = r["original"]["test_accuracy"].as_f64().unwrap_or(0.0);
            }
        }
        println!(
            "| {label} | {original:.1}% | {:.1}% | {:.1}% | {agreement:.1}% | {:.1}% | {:.1} / {:.1} / {:.1}% | {} |",
            accuracy[0],
            accuracy[1],
            accuracy[2],
            macs[0],
            macs[1],
            macs[2],
            walls.join(" / ")
        );
    }
    eprintln!(
        "unlabeled: the {count} training images of models/mnist5k as PNGs without labels; \
         test accuracy by tract on its {n} test images"
    );
    Ok(())
}
