//! In-memory datasets.

use ndarray::{Array4, ArrayView4, Axis};

/// Images `[N, C, H, W]` (float32) with one class label each.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub images: Array4<f32>,
    pub labels: Vec<usize>,
}

/// The splits of a dataset folder.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[C, H, W]` of one image.
    pub fn image_shape(&self) -> [usize; 3] {
        let (_, c, h, w) = self.images.dim();
        [c, h, w]
    }

    /// One more than the largest label: the fewest classes a model needs to score this data.
    pub fn class_count(&self) -> usize {
        self.labels.iter().max().map_or(0, |m| m + 1)
    }

    /// The first `n` samples (or all, if there are fewer).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images.slice_axis(Axis(0), (0..n).into()).to_owned(),
            labels: self.labels[..n].to_vec(),
        }
    }

    /// Consecutive batches of at most `size` samples, in order.
    pub fn batches(&self, size: usize) -> impl Iterator<Item = (ArrayView4<'_, f32>, &[usize])> {
        let size = size.max(1);
        (0..self.len()).step_by(size).map(move |start| {
            let end = (start + size).min(self.len());
            (
                self.images.slice_axis(Axis(0), (start..end).into()),
                &self.labels[start..end],
            )
        })
    }
}
