//! `cargo xtask bench epoch`: one training epoch of torchvision's MobileNetV2 on 1,000 224×224
//! images, pare beside PyTorch on the same two threads. scripts/bench_epoch_torch.py builds the
//! network in PyTorch (random weights), writes it as ONNX with its BatchNormalization nodes kept
//! and times PyTorch's epoch; pare then imports that file and trains the same epoch (SGD, lr 0.01,
//! momentum 0.9, cross-entropy, BatchNorm in training mode, the same batch size) on random images.

use crate::bench::THREADS;
use anyhow::{bail, Context, Result};
use ndarray::Array4;
use pare_data::Dataset;
use pare_kernels::rng::SplitMix64;
use pare_train::{Loss, OptimizerConfig, SgdConfig, TrainConfig};
use std::process::Command;
use std::time::Instant;

const IMAGES: usize = 1000;
const BATCH: usize = 32;
const CLASSES: usize = 1000;

/// `count` random 224×224 RGB images in 0..1 with random labels.
fn random_images(count: usize, seed: u64) -> Dataset {
    let mut rng = SplitMix64::new(seed);
    let images = Array4::from_shape_simple_fn((count, 3, 224, 224), || rng.unit_f64() as f32);
    let labels = (0..count)
        .map(|_| (rng.unit_f64() * CLASSES as f64) as usize % CLASSES)
        .collect();
    Dataset::new(images, labels)
}

pub fn mobilenet_v2_epoch() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let onnx = dir.path().join("mobilenet_v2.onnx");
    let root = crate::proto::workspace_root();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(root.join("scripts/bench_epoch_torch.py"))
        .arg("--onnx")
        .arg(&onnx)
        .args(["--images", &IMAGES.to_string()])
        .args(["--batch", &BATCH.to_string()])
        .args(["--threads", &THREADS.to_string()])
        .output()
        .with_context(|| format!("running {python} scripts/bench_epoch_torch.py"))?;
    if !out.status.success() {
        bail!(
            "scripts/bench_epoch_torch.py failed (it needs torch, torchvision and onnx): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let torch_s: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .context("scripts/bench_epoch_torch.py printed no RESULT line")?
        .trim()
        .parse()?;

    let proto = pare_onnx::read_model(&onnx)?;
    let mut graph = pare_ir::import(&proto).context("importing PyTorch's MobileNetV2")?;
    let config = TrainConfig {
        epochs: 1,
        batch_size: BATCH,
        seed: 0,
        loss: Loss::CrossEntropy.into(),
        optimizer: OptimizerConfig::Sgd(SgdConfig {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0,
        }),
        batchnorm_training: true,
        max_grad_norm: None,
    };
    // One untimed batch first, as PyTorch's side warms up.
    pare_train::train(&mut graph, &random_images(BATCH, 1), &config, &mut |_| {})?;
    let data = random_images(IMAGES, 0);
    let start = Instant::now();
    pare_train::train(&mut graph, &data, &config, &mut |_| {})?;
    let pare_s = start.elapsed().as_secs_f64();

    println!(
        "MobileNetV2 (torchvision, 3.5M parameters), one epoch of {IMAGES} 224×224 images, batch \
         {BATCH}, SGD, BatchNorm in training mode, {THREADS} threads"
    );
    println!();
    println!("| | seconds | images/s |");
    println!("|---|---|---|");
    for (who, s) in [("pare", pare_s), ("PyTorch", torch_s)] {
        println!("| {who} | {s:.1} | {:.1} |", IMAGES as f64 / s);
    }
    println!();
    println!("pare / PyTorch time: {:.2}", pare_s / torch_s);
    Ok(())
}
