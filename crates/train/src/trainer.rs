//! The training loop: shuffled minibatches, forward, loss, backward, optimiser step, BatchNorm
//! running statistics, the step-size schedule and the divergence check; and evaluation of loss and
//! accuracy with our own forward pass.
//!
//! Deterministic: the batch order comes from the seed and every kernel reduces in a fixed order,
//! so the same seed gives the same weights bit for bit.

use crate::error::graph_name;
use crate::executor::{self, Mode, Tape};
use crate::loss::Objective;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::schedule::Schedule;
use crate::TrainError;
use ndarray::Ix2;
use pare_data::Dataset;
use pare_ir::{Graph, Op, Tensor, ValueId, ValueSource};
use pare_kernels::rng::SplitMix64;

/// Settings of one training run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// What training minimises: the label loss, and a teacher term when distilling.
    pub loss: Objective,
    pub optimizer: OptimizerConfig,
    /// BatchNorm in training mode (batch statistics, running statistics updated).
    pub batchnorm_training: bool,
    /// Scales the gradients down when their global L2 norm exceeds this (PyTorch's
    /// clip_grad_norm_), so one bad batch cannot throw the weights far.
    pub max_grad_norm: Option<f32>,
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
    let out = *graph.outputs.first().ok_or_else(|| TrainError::NoOutput {
        graph: graph_name(graph),
    })?;
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
    objective: &Objective,
) -> Result<Evaluation, TrainError> {
    let target = scores_value(graph)?;
    let (mut total_loss, mut correct) = (0.0f64, 0);
    for (images, labels, teacher) in data.batches(batch_size) {
        let tape = executor::forward(graph, images.to_owned().into_dyn(), Mode::Eval, false, None)?;
        let s = scores(&tape, target)?;
        check_labels(data, s.ncols())?;
        let out = objective.evaluate(s, labels, teacher)?;
        total_loss += out.loss as f64 * labels.len() as f64;
        correct += out.correct;
    }
    Ok(Evaluation {
        loss: (total_loss / data.len().max(1) as f64) as f32,
        correct,
        total: data.len(),
    })
}

/// The scores `[N, classes]` of `graph` for every image of `images` `[N, C, H, W]`, BatchNorm in
/// inference mode: what a teacher gives the data it distils on.
pub fn predict(
    graph: &Graph,
    images: ndarray::ArrayView4<f32>,
    batch_size: usize,
) -> Result<ndarray::Array2<f32>, TrainError> {
    let target = scores_value(graph)?;
    let mut rows = Vec::new();
    let mut classes = 0;
    for chunk in images.axis_chunks_iter(ndarray::Axis(0), batch_size.max(1)) {
        let tape = executor::forward(graph, chunk.to_owned().into_dyn(), Mode::Eval, false, None)?;
        let s = scores(&tape, target)?;
        classes = s.ncols();
        rows.extend(s.iter().copied());
    }
    Ok(
        ndarray::Array2::from_shape_vec((images.dim().0, classes), rows)
            .expect("one row of scores per image"),
    )
}

/// PyTorch's running-statistics update after a training-mode forward: r ← m·r + (1−m)·batch,
/// with the unbiased batch variance. ONNX's momentum is the weight of the running value; `keep`
/// overrides it for every node.
fn update_running_stats(graph: &mut Graph, tape: &Tape, keep: Option<f32>) {
    for id in graph.node_ids().collect::<Vec<_>>() {
        let (Op::BatchNorm { momentum, .. }, Some(stats)) =
            (&graph.node(id).op, tape.batch_stats(id))
        else {
            continue;
        };
        let m = keep.unwrap_or(*momentum);
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

/// Scales all parameter gradients by max/‖g‖ when their global norm ‖g‖ exceeds `max`.
fn clip_grad_norm(graph: &Graph, grads: &mut executor::Gradients, max: f32) {
    let params = crate::optim::parameters(graph, grads);
    let norm = params
        .iter()
        .filter_map(|&v| grads.of(v))
        .map(|g| g.iter().map(|&x| x as f64 * x as f64).sum::<f64>())
        .sum::<f64>()
        .sqrt();
    if norm > max as f64 {
        let scale = (max as f64 / norm) as f32;
        for v in params {
            if let Some(g) = grads.of_mut(v) {
                g.mapv_inplace(|x| x * scale);
            }
        }
    }
}

/// One optimisation step on one batch (its images, labels and teacher scores); returns the batch's
/// loss output. `step` numbers the steps of a run: with the config's seed it draws the step's
/// Dropout masks, so a seed gives the same weights every time.
pub fn train_step(
    graph: &mut Graph,
    optimizer: &mut dyn Optimizer,
    batch: Dataset,
    config: &TrainConfig,
    step: u64,
) -> Result<crate::loss::LossOutput, TrainError> {
    let Dataset {
        images,
        labels,
        teacher,
    } = batch;
    let target = scores_value(graph)?;
    let mode = if config.batchnorm_training {
        Mode::Train
    } else {
        Mode::Eval
    };
    let dropout_seed =
        SplitMix64::new(config.seed ^ step.wrapping_mul(0xd1b5_4a32_d192_ed03)).next_u64();
    let tape = executor::forward(
        graph,
        images.into_dyn(),
        mode,
        optimizer.needs_mean_inputs(),
        Some(dropout_seed),
    )?;
    let s = scores(&tape, target)?;
    if let Some(&label) = labels.iter().find(|&&l| l >= s.ncols()) {
        return Err(TrainError::Label {
            label,
            classes: s.ncols(),
        });
    }
    let out = config
        .loss
        .evaluate(s, &labels, teacher.as_ref().map(|t| t.view()))?;
    let mut grads = executor::backward(graph, &tape, target, out.grad.clone().into_dyn())?;
    optimizer.mask_gradients(&mut grads);
    if let Some(max) = config.max_grad_norm {
        clip_grad_norm(graph, &mut grads, max);
    }
    optimizer.step(graph, &tape, &grads);
    if mode == Mode::Train {
        update_running_stats(graph, &tape, None);
    }
    Ok(out)
}

/// Re-estimates every BatchNorm's running statistics from `batches` batches of `stream`: the
/// plain mean of their batch statistics (PyTorch's cumulative average), replacing what the
/// running values held. After channels were removed, the statistics the network was trained with
/// no longer describe its activations. Weights do not change; a graph without BatchNorm is left
/// as it is.
pub fn reestimate_batchnorm(
    graph: &mut Graph,
    stream: &mut BatchStream,
    batches: usize,
) -> Result<(), TrainError> {
    if !graph
        .node_ids()
        .any(|id| matches!(graph.node(id).op, Op::BatchNorm { .. }))
    {
        return Ok(());
    }
    for seen in 0..batches {
        let batch = stream.next_batch();
        let tape = executor::forward(graph, batch.images.into_dyn(), Mode::Train, false, None)?;
        // The k-th batch enters with weight 1/k: after n batches each has weight 1/n.
        update_running_stats(graph, &tape, Some(seen as f32 / (seen + 1) as f32));
    }
    Ok(())
}

/// The batch order of one epoch: a permutation drawn from the seed and the epoch number.
fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    pare_kernels::rng::permutation(len, seed.wrapping_add(epoch as u64))
}

/// Minibatches epoch after epoch, without end, each epoch in an order drawn from the seed and the
/// epoch number: what `TrainingLoop` steps over, and what calibration passes read.
pub struct BatchStream<'d> {
    data: &'d Dataset,
    batch_size: usize,
    seed: u64,
    epoch: usize,
    order: Vec<usize>,
    position: usize,
}

impl<'d> BatchStream<'d> {
    pub fn new(data: &'d Dataset, batch_size: usize, seed: u64) -> Self {
        BatchStream {
            data,
            batch_size: batch_size.max(1),
            seed,
            epoch: 0,
            order: epoch_order(data.len(), seed, 0),
            position: 0,
        }
    }

    /// Steps in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.data.len().div_ceil(self.batch_size)
    }

    /// The next batch (images, labels, teacher rows); the order is drawn again at each epoch's
    /// start.
    pub fn next_batch(&mut self) -> Dataset {
        if self.position >= self.order.len() {
            self.epoch += 1;
            self.order = epoch_order(self.data.len(), self.seed, self.epoch);
            self.position = 0;
        }
        let end = (self.position + self.batch_size).min(self.order.len());
        let batch = self.data.select(&self.order[self.position..end]);
        self.position = end;
        batch
    }
}

/// What one step of a `TrainingLoop` did.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// Steps taken so far, this one included.
    pub step: usize,
    pub loss: f32,
    pub correct: usize,
    /// Samples in the step's batch.
    pub samples: usize,
}

/// The one training loop: steps over the batches of `BatchStream`, numbered across the whole run
/// (which draws their Dropout masks), each scaled by the schedule and checked for divergence.
/// `train` runs it epoch by epoch; pruning runs it a few steps at a time between validation
/// checks, changing the network and the schedule in between.
pub struct TrainingLoop<'d> {
    config: TrainConfig,
    stream: BatchStream<'d>,
    schedule: Schedule,
    step: usize,
    steps_per_epoch: usize,
    total_steps: usize,
}

impl<'d> TrainingLoop<'d> {
    /// A loop over `config.epochs` epochs of `data`, in the batch order of `config.seed`, training
    /// `graph`. Refuses data with no sample, and weights that already hold a NaN or infinity
    /// (activations such as ReLU would hide them from the loss while the written model is broken).
    pub fn new(graph: &Graph, data: &'d Dataset, config: TrainConfig) -> Result<Self, TrainError> {
        if data.is_empty() {
            return Err(TrainError::NoSamples);
        }
        check_finite_weights(graph)?;
        let stream = BatchStream::new(data, config.batch_size, config.seed);
        let steps_per_epoch = stream.batches_per_epoch().max(1);
        Ok(TrainingLoop {
            total_steps: config.epochs * steps_per_epoch,
            config,
            stream,
            schedule: Schedule::Constant,
            step: 0,
            steps_per_epoch,
        })
    }

    /// Steps taken so far.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The budget: steps in all epochs.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// Steps in one epoch (at least one).
    pub fn steps_per_epoch(&self) -> usize {
        self.steps_per_epoch
    }

    /// The schedule of the steps from now on.
    pub fn set_schedule(&mut self, schedule: Schedule) {
        self.schedule = schedule;
    }

    /// Trains `steps` steps (fewer at the budget's end), calling `on_step` after each. A loss that
    /// is not finite stops the loop with `TrainError::Diverged`; that step still counts.
    pub fn run(
        &mut self,
        graph: &mut Graph,
        optimizer: &mut dyn Optimizer,
        steps: usize,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<(), TrainError> {
        let steps = steps.min(self.total_steps - self.step);
        for _ in 0..steps {
            optimizer.set_step_scale(self.schedule.scale(self.step, self.total_steps));
            let batch = self.stream.next_batch();
            let samples = batch.len();
            let step = self.step;
            let out = train_step(graph, optimizer, batch, &self.config, step as u64)?;
            self.step += 1;
            if !out.loss.is_finite() {
                return Err(TrainError::Diverged {
                    loss: out.loss,
                    epoch: step / self.steps_per_epoch + 1,
                    batch: step % self.steps_per_epoch + 1,
                });
            }
            on_step(&StepReport {
                step: self.step,
                loss: out.loss,
                correct: out.correct,
                samples,
            });
        }
        Ok(())
    }
}

/// Trains for `config.epochs` epochs, reporting every batch and returning each epoch's figures.
pub fn train(
    graph: &mut Graph,
    data: &Dataset,
    config: &TrainConfig,
    on_batch: &mut dyn FnMut(BatchProgress),
) -> Result<Vec<EpochReport>, TrainError> {
    let mut optimizer = config.optimizer.build(graph);
    let mut steps = TrainingLoop::new(graph, data, config.clone())?;
    let batches = data.len().div_ceil(config.batch_size.max(1));
    let mut reports = Vec::new();
    for epoch in 0..config.epochs {
        let (mut loss_sum, mut correct, mut seen, mut batch) = (0.0f64, 0, 0, 0);
        steps.run(graph, optimizer.as_mut(), batches, &mut |s| {
            loss_sum += s.loss as f64 * s.samples as f64;
            correct += s.correct;
            seen += s.samples;
            batch += 1;
            on_batch(BatchProgress {
                epoch: epoch + 1,
                batch,
                batches,
                loss: (loss_sum / seen as f64) as f32,
                accuracy_percent: 100.0 * correct as f64 / seen as f64,
            });
        })?;
        check_finite_weights(graph)?;
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

/// The first float weight (initializer) of `graph` holding a NaN or an infinity, as an error.
fn check_finite_weights(graph: &Graph) -> Result<(), TrainError> {
    for id in graph.value_ids() {
        let value = graph.value(id);
        let Some(weights) = value.initializer().and_then(Tensor::as_f32) else {
            continue;
        };
        if let Some((index, &v)) = weights.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(TrainError::NonFiniteWeight {
                tensor: value.name.clone(),
                index,
                value: v,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Loss;

    #[test]
    fn a_graph_without_output_is_refused_by_name() {
        let mut graph = Graph::default();
        graph.meta.graph_name = Some("main_graph".into());
        let err = scores_value(&graph).expect_err("no logits to train on");
        assert!(matches!(&err, TrainError::NoOutput { graph } if graph == "main_graph"));
        assert!(err.to_string().contains("has no output"), "{err}");
    }

    #[test]
    fn no_samples_and_non_finite_weights_are_refused_before_a_step() {
        let empty = Dataset::new(ndarray::Array4::zeros((0, 1, 2, 2)), vec![]);
        let config = TrainConfig {
            epochs: 1,
            batch_size: 4,
            seed: 0,
            loss: Loss::CrossEntropy.into(),
            optimizer: OptimizerConfig::Sgd(crate::SgdConfig::default()),
            batchnorm_training: true,
            max_grad_norm: None,
        };
        let mut graph = Graph::default();
        let err = TrainingLoop::new(&graph, &empty, config.clone()).err();
        assert!(matches!(err, Some(TrainError::NoSamples)), "{err:?}");

        let one = Dataset::new(ndarray::Array4::zeros((1, 1, 2, 2)), vec![0]);
        let weights = ndarray::arr1(&[0.5f32, f32::INFINITY]).into_dyn();
        graph.add_value("w", ValueSource::Initializer(Tensor::F32(weights)));
        let err = TrainingLoop::new(&graph, &one, config).err().unwrap();
        assert!(
            matches!(&err, TrainError::NonFiniteWeight { tensor, index: 1, .. } if tensor == "w"),
            "{err:?}"
        );
    }
}
