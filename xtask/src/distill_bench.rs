//! `cargo xtask bench distill`: the three ways `compress` can learn at 50% of the MACs, as a
//! user runs them (the `compress` binary): labelled training on models/mnist5k, distillation
//! from the original on the same training images without their labels (written as a folder of
//! PNGs), and no data at all. Every written model's test accuracy is measured by tract on the
//! labelled test split, which the unlabeled and no-data runs never see. Prints a Markdown table
//! for docs/BENCHMARKS.md.

use crate::prune_bench::{compress_binary, compress_to, spread};
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
    /// Seeds of the labelled and the unlabeled run (1, 2, …): the table gives their mean and
    /// range.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// The unlabeled run's --test-fraction: 0.1 by default, so it trains on nearly as many of
    /// the images as the labelled run (3,240 of 4,000 after validation, against 3,600).
    #[arg(long, default_value_t = 0.1)]
    test_fraction: f64,
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
        "| model | original | labelled (rls) | unlabeled, distilled | agreement (held out) | no data | MACs kept (labelled / unlabeled / no data) | mean wall s |"
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
        unlabeled.extend(["--test-fraction".into(), settings.test_fraction.to_string()]);
        let runs = [
            ("labelled", trained("models/mnist5k"), settings.seeds),
            ("unlabeled", unlabeled, settings.seeds),
            // Without data only the synthetic inputs depend on the seed.
            ("no-data", base.clone(), 1),
        ];
        let mut cells = Vec::new();
        let mut macs_cells = Vec::new();
        let mut walls = Vec::new();
        let (mut agreement, mut original) = (Vec::new(), 0.0);
        for (name, args, seeds) in runs {
            let (mut accuracy, mut macs) = (Vec::new(), Vec::new());
            for seed in 1..=seeds {
                let out = work.path().join(format!("{name}.onnx"));
                let seed = seed.to_string();
                let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
                args.extend(["--seed", &seed]);
                let (r, wall) = compress_to(&binary, &args, &out)?;
                let tract = TractModel::load(&out, &[n, c, h, w])?;
                accuracy.push(pare_verify::accuracy(&tract, &test)?.percent());
                let figure = |model: &str, key: &str| r[model][key].as_f64().unwrap_or(0.0);
                macs.push(100.0 * figure("compressed", "macs") / figure("original", "macs"));
                walls.push(wall);
                match name {
                    "unlabeled" => agreement.push(figure("compressed", "test_accuracy")),
                    "labelled" => original = figure("original", "test_accuracy"),
                    _ => {}
                }
            }
            cells.push(spread(&accuracy));
            macs_cells.push(spread(&macs));
        }
        println!(
            "| {label} | {original:.1}% | {} | {} | {} | {} | {} | {:.0} |",
            cells[0],
            cells[1],
            spread(&agreement),
            cells[2],
            macs_cells.join(" / "),
            walls.iter().sum::<f64>() / walls.len() as f64,
        );
    }
    eprintln!(
        "unlabeled: the {count} training images of models/mnist5k as PNGs without labels; \
         test accuracy by tract on its {n} test images"
    );
    Ok(())
}
