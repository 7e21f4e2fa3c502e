//! Top-1 accuracy of a model on a dataset.

use crate::{TractModel, VerifyError};
use ndarray::ArrayView4;
use pare_data::Dataset;

/// Top-1 accuracy of a model on a dataset.
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
    let correct = top1(model, data.images.view())?
        .iter()
        .zip(&data.labels)
        .filter(|(predicted, label)| predicted == label)
        .count();
    Ok(Accuracy {
        correct,
        total: data.len(),
    })
}

/// The class with the highest logit for each of `images` `[N, C, H, W]`.
pub fn top1(model: &TractModel, images: ArrayView4<f32>) -> Result<Vec<usize>, VerifyError> {
    let logits = model.run_all(images)?;
    Ok(logits
        .outer_iter()
        .map(|row| argmax(row.as_slice().expect("contiguous")))
        .collect())
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
