//! `cargo xtask bench train` and `cargo xtask bench convergence`: how fast pare-train trains and
//! how well its optimisers learn, on the shipped MNIST subset (models/mnist5k). See
//! docs/BENCHMARKS.md for the commands and the figures measured.
//!
//! Everything runs on a rayon pool of two threads, the size of the machines the project is
//! developed on, so figures from different runs compare. Build with `--release`: the figures of a
//! debug build say nothing.

use anyhow::{Context, Result};
use pare_data::{Dataset, Splits};
use pare_ir::Graph;
use pare_train::executor::{self, Mode};
use pare_train::init::kaiming_init;
use pare_train::{
    scores_value, train_step, AdamConfig, Loss, OptimizerConfig, RlsConfig, SgdConfig, TrainConfig,
    TrainingLoop,
};
use pare_verify::TractModel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub const THREADS: usize = 2;
const BATCH: usize = 64;
const SEED: u64 = 0;
const WARMUP_STEPS: usize = 3;
const TIMED_STEPS: usize = 20;
const EPOCHS: usize = 5;

/// The models `bench train` times: (label, file in models/). The VGG-style net twice, because
/// BatchNorm kept means extra kernels and training-mode statistics.
const SPEED_MODELS: [(&str, &str); 3] = [
    ("LeNet-5", "lenet5_opset17.onnx"),
    ("VGG-style, BN kept", "vggbn_keepbn_opset17.onnx"),
    ("VGG-style, BN folded", "vggbn_opset17.onnx"),
];

/// Runs `bench` on a global rayon pool of `THREADS` threads.
pub fn with_pool(bench: impl FnOnce() -> Result<()>) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for meaningful figures");
    }
    // As the compress binary does, so the figures are the ones a user gets.
    pare_kernels::memory::keep_freed_memory();
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build_global()
        .context("sizing rayon's global pool")?;
    bench()
}

pub fn models_dir() -> PathBuf {
    crate::proto::workspace_root().join("models")
}

pub fn load_graph(file: &str) -> Result<Graph> {
    let path = models_dir().join(file);
    let proto = pare_onnx::read_model(&path).with_context(|| path.display().to_string())?;
    pare_ir::import(&proto).with_context(|| path.display().to_string())
}

fn mnist() -> Result<Splits> {
    let dir = models_dir().join("mnist5k");
    pare_data::load_dir(&dir).with_context(|| dir.display().to_string())
}

fn config(optimizer: OptimizerConfig) -> TrainConfig {
    TrainConfig {
        epochs: EPOCHS,
        batch_size: BATCH,
        seed: SEED,
        loss: Loss::CrossEntropy.into(),
        optimizer,
        // Training mode is what a user's fine-tuning runs; it only matters for the BN-kept model.
        batchnorm_training: true,
        max_grad_norm: None,
    }
}

fn sgd(lr: f32) -> OptimizerConfig {
    OptimizerConfig::Sgd(SgdConfig {
        lr,
        momentum: 0.9,
        weight_decay: 0.0,
    })
}

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Median milliseconds per step, in total and split into forward, loss + backward, optimiser.
struct StepTime {
    total: f64,
    forward: f64,
    backward: f64,
    optimizer: f64,
}

/// Times `TIMED_STEPS` steps after `WARMUP_STEPS` untimed ones, on distinct batches in the
/// training loop's order, and keeps the median of each figure: a step slowed by another process
/// on the machine moves it far less than it moves the mean.
///
/// The total comes from `train_step`, exactly what `train` runs per batch (the batches are
/// gathered beforehand, so copying images is not counted). The split comes from a second run of
/// the same steps through the executor's public forward and backward passes, which is what
/// `train_step` does minus the BatchNorm running-statistics update (a few vector operations).
fn time_steps(file: &str, data: &Dataset, optimizer: OptimizerConfig) -> Result<StepTime> {
    let order = pare_kernels::rng::permutation(data.len(), SEED);
    let batches: Vec<Dataset> = order
        .chunks(BATCH)
        .take(WARMUP_STEPS + TIMED_STEPS)
        .map(|idx| data.select(idx))
        .collect();
    let config = config(optimizer);

    let mut graph = load_graph(file)?;
    let mut opt = config.optimizer.build(&graph);
    let mut total = Vec::new();
    for (i, batch) in batches.iter().cloned().enumerate() {
        let t = Instant::now();
        train_step(&mut graph, opt.as_mut(), batch, &config, i as u64)?;
        if i >= WARMUP_STEPS {
            total.push(ms(t));
        }
    }

    let mut graph = load_graph(file)?;
    let mut opt = config.optimizer.build(&graph);
    let target = scores_value(&graph)?;
    let (mut forward, mut backward, mut optimizer) = (Vec::new(), Vec::new(), Vec::new());
    for (i, batch) in batches.into_iter().enumerate() {
        let (images, labels) = (batch.images.into_dyn(), batch.labels);
        let t = Instant::now();
        // Records the RLS mean inputs whatever the optimiser (train_step does so only for RLS),
        // so SGD's forward figure includes that small cost.
        let tape = executor::forward(&graph, images, Mode::Train, true, Some(i as u64))?;
        let f = ms(t);
        let t = Instant::now();
        let scores = tape
            .value(target)
            .context("the forward pass computed the scores")?;
        let scores = scores.view().into_dimensionality::<ndarray::Ix2>()?;
        let out = config.loss.evaluate(scores, &labels, None)?;
        let grads = executor::backward(&graph, &tape, target, out.grad.into_dyn())?;
        let b = ms(t);
        let t = Instant::now();
        opt.step(&mut graph, &tape, &grads);
        let o = ms(t);
        if i >= WARMUP_STEPS {
            forward.push(f);
            backward.push(b);
            optimizer.push(o);
        }
    }
    Ok(StepTime {
        total: median(total),
        forward: median(forward),
        backward: median(backward),
        optimizer: median(optimizer),
    })
}

/// The median of some timings.
pub fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn images_per_s(step_ms: f64) -> f64 {
    BATCH as f64 / (step_ms / 1e3)
}

/// PyTorch's SGD images/s per model file, from scripts/bench_torch.py; Err says why there are
/// none (torch not importable, or the script failed).
fn torch_speeds() -> Result<HashMap<String, f64>, String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "`{python} -c \"import torch\"` failed, so there is no PyTorch comparison"
        ));
    }
    let root = crate::proto::workspace_root();
    let out = Command::new(&python)
        .arg(root.join("scripts/bench_torch.py"))
        .args(["--models", &models_dir().display().to_string()])
        .args(["--batch", &BATCH.to_string()])
        .args(["--threads", &THREADS.to_string()])
        .args(["--warmup", &WARMUP_STEPS.to_string()])
        .args(["--steps", &TIMED_STEPS.to_string()])
        .output()
        .map_err(|e| format!("cannot run scripts/bench_torch.py: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/bench_torch.py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // The script prints one `RESULT <model file> <images/s>` line per model.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let speeds = stdout
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            ["RESULT", file, speed] => Some((file.to_string(), speed.parse().ok()?)),
            _ => None,
        })
        .collect();
    Ok(speeds)
}

pub fn train_speed() -> Result<()> {
    let data = mnist()?.train;
    println!(
        "training speed: batch {BATCH}, {THREADS} threads, median of {TIMED_STEPS} steps after \
         {WARMUP_STEPS} warm-up steps, MNIST subset (models/mnist5k)"
    );
    let optimizers = [
        ("SGD", sgd(0.01)),
        ("RLS", OptimizerConfig::Rls(RlsConfig::default())),
    ];
    let mut rows = Vec::new();
    for (label, file) in SPEED_MODELS {
        for (name, optimizer) in &optimizers {
            let t = time_steps(file, &data, optimizer.clone())?;
            rows.push((label, file, *name, t));
        }
    }
    let torch = torch_speeds();

    println!();
    println!(
        "| model | optimiser | ms/step | images/s | forward ms | loss+backward ms | optimiser ms | PyTorch SGD images/s | ours/PyTorch |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, file, name, t) in &rows {
        let ours = images_per_s(t.total);
        let (theirs, ratio) = match (&torch, *name) {
            (Ok(speeds), "SGD") => match speeds.get(*file) {
                Some(&p) => (format!("{p:.0}"), format!("{:.2}", ours / p)),
                None => ("missing".into(), "".into()),
            },
            _ => ("".into(), "".into()),
        };
        println!(
            "| {label} | {name} | {:.2} | {ours:.0} | {:.2} | {:.2} | {:.2} | {theirs} | {ratio} |",
            t.total, t.forward, t.backward, t.optimizer
        );
    }
    println!();
    for pair in rows.chunks(2) {
        if let [(label, _, _, sgd), (_, _, _, rls)] = pair {
            println!(
                "{label}: RLS step / SGD step = {:.2} (target ≤ 2)",
                rls.total / sgd.total
            );
        }
    }
    if let Err(why) = torch {
        println!("{why}");
    }
    Ok(())
}

/// Top-1 accuracy (%) of the graph as tract runs it from an exported file.
fn tract_accuracy(graph: &Graph, test: &Dataset, dir: &Path) -> Result<f64> {
    let path = dir.join("model.onnx");
    pare_onnx::write_model(&path, &pare_ir::export(graph))?;
    let [c, h, w] = test.image_shape();
    let model = TractModel::load(&path, &[100, c, h, w])?;
    Ok(pare_verify::accuracy(&model, test)?.percent())
}

pub fn convergence() -> Result<()> {
    let Splits { train, test } = mnist()?;
    let mut start = load_graph("lenet5_opset17.onnx")?;
    kaiming_init(&mut start, SEED);
    println!(
        "convergence from scratch: LeNet-5 (kaiming_init, seed {SEED}), {} training images, \
         batch {BATCH}, cross-entropy, {EPOCHS} epochs, {THREADS} threads; test accuracy by \
         tract on {} images",
        train.len(),
        test.len()
    );
    // docs/methods/rls.md, "Defaults": λ 1, α 1, η 1 from scratch (LeNet-5 has no parameters
    // outside its layers, so the SGD settings RLS keeps for other parameters do not matter here).
    let optimizers = [
        (
            "RLS (α 1, η 1, λ 1)",
            OptimizerConfig::Rls(RlsConfig {
                alpha: 1.0,
                eta: 1.0,
                lambda: 1.0,
                ..RlsConfig::default()
            }),
        ),
        (
            "Adam (lr 1e-3)",
            OptimizerConfig::Adam(AdamConfig::default()),
        ),
        ("SGD (lr 0.05, momentum 0.9)", sgd(0.05)),
    ];
    let dir = tempfile::tempdir()?;
    let mut accuracy = vec![vec![0.0; optimizers.len()]; EPOCHS];
    let mut seconds = vec![0.0; optimizers.len()];
    let mut last_loss = vec![0.0; optimizers.len()];
    for (j, (name, optimizer)) in optimizers.iter().enumerate() {
        let config = config(optimizer.clone());
        let mut graph = start.clone();
        let mut opt = config.optimizer.build(&graph);
        // `train`'s loop, run an epoch at a time: the accuracy is measured between epochs, with
        // the optimiser's state kept.
        let mut steps = TrainingLoop::new(&graph, &train, config.clone())?;
        let per_epoch = steps.steps_per_epoch();
        for (epoch, row) in accuracy.iter_mut().enumerate() {
            let t = Instant::now();
            let mut loss = 0.0;
            steps
                .run(&mut graph, opt.as_mut(), per_epoch, &mut |s| {
                    loss += s.loss as f64 * s.samples as f64
                })
                .with_context(|| format!("{name}, epoch {}", epoch + 1))?;
            seconds[j] += t.elapsed().as_secs_f64();
            last_loss[j] = loss / train.len() as f64;
            row[j] = tract_accuracy(&graph, &test, dir.path())?;
            eprintln!(
                "{name}: epoch {} train loss {:.4}, test accuracy {:.1}%",
                epoch + 1,
                last_loss[j],
                row[j]
            );
        }
    }

    println!();
    let names: Vec<&str> = optimizers.iter().map(|(n, _)| *n).collect();
    println!(
        "| tract test accuracy (%) after epoch | {} |",
        names.join(" | ")
    );
    println!("|---|{}", "---|".repeat(names.len()));
    for (epoch, row) in accuracy.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|a| format!("{a:.1}")).collect();
        println!("| {} | {} |", epoch + 1, cells.join(" | "));
    }
    let cells: Vec<String> = last_loss.iter().map(|l| format!("{l:.4}")).collect();
    println!("| train loss, epoch {EPOCHS} | {} |", cells.join(" | "));
    let cells: Vec<String> = seconds
        .iter()
        .map(|s| format!("{:.2}", s / EPOCHS as f64))
        .collect();
    println!("| s/epoch | {} |", cells.join(" | "));
    Ok(())
}
