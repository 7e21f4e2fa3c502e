//! Comparing two models on the same test split: the accuracy each scores, their latency side by
//! side, and the regression gate on the accuracy lost.

use crate::{
    accuracy, latency_pair, Accuracy, Clock, Latency, NodeTime, Source, TractModel, VerifyError,
};
use ndarray::{Array2, ArrayView4};
use pare_data::Dataset;
use std::path::Path;

/// A model under test: loaded by tract at the batch accuracy is measured with, its classes
/// counted so labels can be checked against them.
pub struct Subject<'a> {
    source: Source<'a>,
    tract: TractModel,
    classes: usize,
}

impl<'a> Subject<'a> {
    /// Loads `source` with its input fixed to `input_shape` (batch first) and counts its classes.
    pub fn load(source: Source<'a>, input_shape: &[usize]) -> Result<Subject<'a>, VerifyError> {
        let tract = source.load(input_shape)?;
        let classes = tract.class_count()?;
        Ok(Subject {
            source,
            tract,
            classes,
        })
    }

    /// The number of logits per sample the model produces.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Refuses labels of `set` (the split `split` of the dataset `data`) that the model cannot
    /// score, naming the sample.
    pub fn check_labels(&self, data: &Path, split: &str, set: &Dataset) -> Result<(), VerifyError> {
        let classes = self.classes;
        match set.labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            Some((index, &label)) => Err(VerifyError::Label {
                data: data.into(),
                split: split.into(),
                index,
                label,
                model: self.source.path().into(),
                classes,
            }),
            None => Ok(()),
        }
    }

    /// tract's top-1 accuracy on `test`, the test split of the dataset `data`, once its labels
    /// are checked.
    pub fn test_accuracy(&self, data: &Path, test: &Dataset) -> Result<Accuracy, VerifyError> {
        self.check_labels(data, "test", test)?;
        accuracy(&self.tract, test)
    }

    /// The class the model ranks first for each of `images`: the labels its own top-1 agreement
    /// is counted against.
    pub fn top1(&self, images: ArrayView4<f32>) -> Result<Vec<usize>, VerifyError> {
        crate::accuracy::top1(&self.tract, images)
    }

    /// The model loaded again at batch 1, for timing single images.
    pub fn single(&self) -> Result<TractModel, VerifyError> {
        let shape = [&[1], &self.tract.input_shape()[1..]].concat();
        self.source.load(&shape)
    }
}

/// Test accuracy of a model before and after a change (compression, fine-tuning).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub before: Accuracy,
    pub after: Accuracy,
}

impl Comparison {
    /// Points of test accuracy the change lost (negative when it gained).
    pub fn accuracy_drop(&self) -> f64 {
        self.before.percent() - self.after.percent()
    }

    /// The regression gate: whether the change lost at most `max_drop` points.
    pub fn within(&self, max_drop: f64) -> bool {
        self.accuracy_drop() <= max_drop
    }
}

/// Measures both models on `test`, the test split of the dataset `data`, after checking its
/// labels against each.
pub fn compare(
    before: &Subject,
    after: &Subject,
    data: &Path,
    test: &Dataset,
) -> Result<Comparison, VerifyError> {
    Ok(Comparison {
        before: before.test_accuracy(data, test)?,
        after: after.test_accuracy(data, test)?,
    })
}

/// Both models' batch-1 timings on the first image of `test`: whole-model latency, their runs
/// alternating so both see the same machine load, and each node of their plans on thread CPU
/// time (`TractModel::node_times`).
pub struct Timings {
    pub before: Latency,
    pub after: Latency,
    pub nodes_before: Vec<NodeTime>,
    pub nodes_after: Vec<NodeTime>,
}

/// Times both models at batch 1, each loaded once: `warmup` untimed rounds, then `runs` timed
/// ones of the two alternating, then `runs` node-by-node runs of each.
pub fn compare_latency(
    before: &Subject,
    after: &Subject,
    test: &Dataset,
    warmup: usize,
    runs: usize,
) -> Result<Timings, VerifyError> {
    let a = before.single()?;
    let b = after.single()?;
    let image = test.head(1);
    let (lat_before, lat_after) = latency_pair(&a, &b, image.images.view(), warmup, runs)?;
    let nodes = |m: &TractModel| m.node_times(image.images.view(), warmup, runs, Clock::ThreadCpu);
    Ok(Timings {
        before: lat_before,
        after: lat_after,
        nodes_before: nodes(&a)?,
        nodes_after: nodes(&b)?,
    })
}

/// The largest absolute difference between two equally shaped outputs.
pub fn max_abs_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape(), "outputs of different shapes");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
