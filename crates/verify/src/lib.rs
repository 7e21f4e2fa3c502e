//! Verification with tract: load an ONNX file as written on disk (never pare's own IR), with its
//! input shape fixed and optimised, then measure accuracy, latency and output parity.
//!
//! This crate only runs models. It does not change them and does not decide what is acceptable;
//! the caller compares the figures.

// deny rather than forbid: ndarray's `s!` expands to an `allow(unsafe_code)` of its own.
#![deny(unsafe_code)]

use ndarray::{Array2, ArrayView4, Axis};
use pare_data::Dataset;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tract_onnx::prelude::*;

/// What can go wrong loading or running a model in tract.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: tract cannot load the model: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("{path}: tract failed to run the model: {reason}")]
    Run { path: PathBuf, reason: String },
    #[error("{path}: the model outputs shape {shape:?}; expected [batch, classes] logits")]
    OutputShape { path: PathBuf, shape: Vec<usize> },
}

/// A model loaded by tract for one fixed input shape.
pub struct TractModel {
    path: PathBuf,
    input_shape: Vec<usize>,
    plan: Arc<TypedRunnableModel>,
}

impl TractModel {
    /// Loads `path` with its first input fixed to `input_shape` (batch first), then optimises it.
    pub fn load(path: &Path, input_shape: &[usize]) -> Result<TractModel, VerifyError> {
        Self::build(path, input_shape, |onnx| onnx.model_for_path(path))
    }

    /// Loads a model from its encoded bytes (not yet written anywhere); `label` names it in
    /// errors and reports.
    pub fn from_bytes(
        label: &Path,
        bytes: &[u8],
        input_shape: &[usize],
    ) -> Result<TractModel, VerifyError> {
        Self::build(label, input_shape, |onnx| {
            onnx.model_for_read(&mut &bytes[..])
        })
    }

    fn build(
        path: &Path,
        input_shape: &[usize],
        read: impl FnOnce(&tract_onnx::Onnx) -> TractResult<InferenceModel>,
    ) -> Result<TractModel, VerifyError> {
        let load = || -> TractResult<Arc<TypedRunnableModel>> {
            // Exporters declare intermediate and output shapes with a symbolic batch; tract cannot
            // unify those with the fixed input, so it works them out again from the input.
            let onnx = tract_onnx::onnx()
                .with_ignore_value_info(true)
                .with_ignore_output_shapes(true);
            read(&onnx)?
                .with_input_fact(0, f32::fact(input_shape).into())?
                .into_optimized()?
                .into_runnable()
        };
        let plan = load().map_err(|e| VerifyError::Load {
            path: path.into(),
            reason: format!("{e:#}"),
        })?;
        Ok(TractModel {
            path: path.into(),
            input_shape: input_shape.to_vec(),
            plan,
        })
    }

    pub fn batch_size(&self) -> usize {
        self.input_shape[0]
    }

    /// Runs one batch of exactly the loaded batch size and returns the first output as
    /// `[batch, classes]`.
    pub fn run(&self, images: ArrayView4<f32>) -> Result<Array2<f32>, VerifyError> {
        let run_err = |reason: String| VerifyError::Run {
            path: self.path.clone(),
            reason,
        };
        let input = Tensor::from_shape(
            images.shape(),
            images
                .as_standard_layout()
                .as_slice()
                .expect("standard layout"),
        )
        .map_err(|e| run_err(format!("{e:#}")))?;
        let outputs = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| run_err(format!("{e:#}")))?;
        let view = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| run_err(format!("{e:#}")))?;
        let shape = view.shape().to_vec();
        let batch = images.shape()[0];
        let per_sample = shape.iter().skip(1).product::<usize>();
        if shape.first() != Some(&batch) {
            return Err(VerifyError::OutputShape {
                path: self.path.clone(),
                shape,
            });
        }
        let flat: Vec<f32> = view.iter().copied().collect();
        Ok(Array2::from_shape_vec((batch, per_sample), flat).expect("sizes match"))
    }

    /// Runs every image of `images` (any count), padding the last batch, and returns all logits.
    pub fn run_all(&self, images: ArrayView4<f32>) -> Result<Array2<f32>, VerifyError> {
        let b = self.batch_size();
        let mut rows = Vec::new();
        for chunk in images.axis_chunks_iter(Axis(0), b) {
            let n = chunk.shape()[0];
            let logits = if n == b {
                self.run(chunk)?
            } else {
                let mut padded = ndarray::Array4::<f32>::zeros((
                    b,
                    chunk.shape()[1],
                    chunk.shape()[2],
                    chunk.shape()[3],
                ));
                padded
                    .slice_mut(ndarray::s![..n, .., .., ..])
                    .assign(&chunk);
                self.run(padded.view())?
                    .slice(ndarray::s![..n, ..])
                    .to_owned()
            };
            rows.push(logits);
        }
        let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
        Ok(ndarray::concatenate(Axis(0), &views).expect("same width"))
    }

    /// The number of logits per sample the model produces.
    pub fn class_count(&self) -> Result<usize, VerifyError> {
        let zeros = ndarray::Array4::<f32>::zeros(self.sample_dims(self.batch_size()));
        Ok(self.run(zeros.view())?.shape()[1])
    }

    fn sample_dims(&self, batch: usize) -> (usize, usize, usize, usize) {
        let s = &self.input_shape;
        (batch, s[1], s[2], s[3])
    }
}

/// Top-1 accuracy and mean cross-entropy loss of a model on a dataset.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Accuracy {
    pub correct: usize,
    pub total: usize,
}

impl Accuracy {
    /// Percentage of correct predictions.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.correct as f64 / self.total as f64
        }
    }
}

/// Counts the samples whose highest logit is their label.
pub fn accuracy(model: &TractModel, data: &Dataset) -> Result<Accuracy, VerifyError> {
    let logits = model.run_all(data.images.view())?;
    let correct = logits
        .outer_iter()
        .zip(&data.labels)
        .filter(|(row, &label)| argmax(row.as_slice().expect("contiguous")) == label)
        .count();
    Ok(Accuracy {
        correct,
        total: data.len(),
    })
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

/// Latency of single runs, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Latency {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub runs: usize,
}

/// Times `runs` runs of one batch after `warmup` untimed ones.
pub fn latency(
    model: &TractModel,
    images: ArrayView4<f32>,
    warmup: usize,
    runs: usize,
) -> Result<Latency, VerifyError> {
    for _ in 0..warmup {
        model.run(images)?;
    }
    let mut times: Vec<f64> = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        model.run(images)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(summarize(times))
}

/// Latency of two models on the same batch, measured side by side: their runs alternate, so
/// both see the same machine load.
pub fn latency_pair(
    a: &TractModel,
    b: &TractModel,
    images: ArrayView4<f32>,
    warmup: usize,
    runs: usize,
) -> Result<(Latency, Latency), VerifyError> {
    for _ in 0..warmup {
        a.run(images)?;
        b.run(images)?;
    }
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        for (model, times) in [(a, &mut ta), (b, &mut tb)] {
            let start = Instant::now();
            model.run(images)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok((summarize(ta), summarize(tb)))
}

fn summarize(mut times: Vec<f64>) -> Latency {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Latency {
        median_ms: at(0.5),
        p90_ms: at(0.9),
        runs: times.len(),
    }
}

/// The largest absolute difference between two equally shaped outputs.
pub fn max_abs_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape(), "outputs of different shapes");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
