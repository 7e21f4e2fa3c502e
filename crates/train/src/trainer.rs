//! The training loop: shuffled minibatches, forward, loss, backward, optimiser step, BatchNorm
//! running statistics; and evaluation of loss and accuracy with our own forward pass.
//!
//! Deterministic: the batch order comes from the seed and every kernel reduces in a fixed order,
//! so the same seed gives the same weights bit for bit.

use crate::executor::{self, Mode, Tape};
use crate::loss::Loss;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::TrainError;
use ndarray::{ArrayD, Ix2};
use pare_data::Dataset;
use pare_ir::{Graph, Op, Tensor, ValueId, ValueSource};

/// Settings of one training run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub loss: Loss,
    pub optimizer: OptimizerConfig,
    /// BatchNorm in training mode (batch statistics, running statistics updated).
    pub batchnorm_training: bool,
}

/// Loss and accuracy over a dataset.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Evaluation {
    pub loss: f32,
    pub correct: usize,
    pub total: usize,
}

impl Evaluation {
    pub fn accuracy_percent(&self) -> f64 {
        100.0 * self.correct as f64 / self.total.max(1) as f64
    }
}

/// Reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchProgress {
    pub epoch: usize,
    pub batch: usize,
    pub batches: usize,
    /// Running means over the epoch so far.
    pub loss: f32,
    pub accuracy_percent: f64,
}

/// What one epoch did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train: Evaluation,
}

/// The value whose gradient training starts from: the logits. A model that ends in Softmax is
/// trained on the Softmax's input, which is the same cross-entropy but numerically stable.
pub fn scores_value(graph: &Graph) -> Result<ValueId, TrainError> {
    let out = *graph
        .outputs
        .first()
        .ok_or(TrainError::OutputShape(vec![]))?;
    if let ValueSource::Node(n) = graph.value(out).source {
        let node = graph.node(n);
        if matches!(node.op, Op::Softmax { .. }) {
            if let Some(Some(input)) = node.inputs.first() {
                return Ok(*input);
            }
        }
    }
    Ok(out)
}

fn scores(tape: &Tape, v: ValueId) -> Result<ndarray::ArrayView2<'_, f32>, TrainError> {
    let s = tape.value(v).expect("forward computed the output");
    s.view()
        .into_dimensionality::<Ix2>()
        .map_err(|_| TrainError::OutputShape(s.shape().to_vec()))
}

fn check_labels(data: &Dataset, classes: usize) -> Result<(), TrainError> {
    match data.labels.iter().find(|&&l| l >= classes) {
        Some(&label) => Err(TrainError::Label { label, classes }),
        None => Ok(()),
    }
}

/// Mean loss and accuracy on `data`, BatchNorm in inference mode.
pub fn evaluate(
    graph: &Graph,
    data: &Dataset,
    batch_size: usize,
    loss: Loss,
) -> Result<Evaluation, TrainError> {
    let target = scores_value(graph)?;
    let (mut total_loss, mut correct) = (0.0f64, 0);
    for (images, labels) in data.batches(batch_size) {
        let tape = executor::forward(graph, images.to_owned().into_dyn(), Mode::Eval, false)?;
        let s = scores(&tape, target)?;
        check_labels(data, s.ncols())?;
        let out = loss.evaluate(s, labels);
        total_loss += out.loss as f64 * labels.len() as f64;
        correct += out.correct;
    }
    Ok(Evaluation {
        loss: (total_loss / data.len().max(1) as f64) as f32,
        correct,
        total: data.len(),
    })
}

/// PyTorch's running-statistics update after a training-mode forward: r ← m·r + (1−m)·batch,
/// with the unbiased batch variance. ONNX's momentum is the weight of the running value.
fn update_running_stats(graph: &mut Graph, tape: &Tape) {
    for id in graph.node_ids().collect::<Vec<_>>() {
        let (Op::BatchNorm { momentum, .. }, Some(stats)) =
            (&graph.node(id).op, tape.batch_stats(id))
        else {
            continue;
        };
        let m = *momentum;
        let inputs = graph.node(id).inputs.clone();
        let correction = stats.count as f32 / (stats.count.max(2) - 1) as f32;
        for (slot, batch) in [(3, &stats.mean), (4, &stats.var)] {
            let Some(Some(v)) = inputs.get(slot) else {
                continue;
            };
            if let ValueSource::Initializer(Tensor::F32(running)) = &mut graph.value_mut(*v).source
            {
                let scale = if slot == 4 { correction } else { 1.0 };
                running
                    .iter_mut()
                    .zip(batch.iter())
                    .for_each(|(r, b)| *r = m * *r + (1.0 - m) * b * scale);
            }
        }
    }
}

/// One optimisation step on one batch; returns the batch's loss output.
pub fn train_step(
    graph: &mut Graph,
    optimizer: &mut dyn Optimizer,
    images: ArrayD<f32>,
    labels: &[usize],
    config: &TrainConfig,
) -> Result<crate::loss::LossOutput, TrainError> {
    let target = scores_value(graph)?;
    let mode = if config.batchnorm_training {
        Mode::Train
    } else {
        Mode::Eval
    };
    let tape = executor::forward(graph, images, mode, true)?;
    let s = scores(&tape, target)?;
    if let Some(&label) = labels.iter().find(|&&l| l >= s.ncols()) {
        return Err(TrainError::Label {
            label,
            classes: s.ncols(),
        });
    }
    let out = config.loss.evaluate(s, labels);
    let grads = executor::backward(graph, &tape, target, out.grad.clone().into_dyn())?;
    optimizer.step(graph, &tape, &grads);
    if mode == Mode::Train {
        update_running_stats(graph, &tape);
    }
    Ok(out)
}

/// Trains for `config.epochs` epochs, reporting every batch and returning each epoch's figures.
pub fn train(
    graph: &mut Graph,
    data: &Dataset,
    config: &TrainConfig,
    on_batch: &mut dyn FnMut(BatchProgress),
) -> Result<Vec<EpochReport>, TrainError> {
    let mut optimizer = config.optimizer.build(graph);
    let batches = data.len().div_ceil(config.batch_size.max(1));
    let mut reports = Vec::new();
    for epoch in 0..config.epochs {
        let order = pare_data::permutation(data.len(), config.seed.wrapping_add(epoch as u64));
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0, 0);
        for (batch, indices) in order.chunks(config.batch_size.max(1)).enumerate() {
            let (images, labels) = data.gather(indices);
            let out = train_step(
                graph,
                optimizer.as_mut(),
                images.into_dyn(),
                &labels,
                config,
            )?;
            if !out.loss.is_finite() {
                return Err(TrainError::Diverged {
                    loss: out.loss,
                    epoch: epoch + 1,
                    batch: batch + 1,
                });
            }
            loss_sum += out.loss as f64 * labels.len() as f64;
            correct += out.correct;
            seen += labels.len();
            on_batch(BatchProgress {
                epoch: epoch + 1,
                batch: batch + 1,
                batches,
                loss: (loss_sum / seen as f64) as f32,
                accuracy_percent: 100.0 * correct as f64 / seen as f64,
            });
        }
        reports.push(EpochReport {
            epoch: epoch + 1,
            train: Evaluation {
                loss: (loss_sum / seen.max(1) as f64) as f32,
                correct,
                total: seen,
            },
        });
    }
    Ok(reports)
}
