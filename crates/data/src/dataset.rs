//! In-memory datasets and what is done to them once loaded: normalising, shuffling, splitting,
//! batching.
//!
//! Nothing here reads files or knows a format; the loaders build a `Dataset` and hand it over.

use crate::DataError;
use ndarray::{Array2, Array4, ArrayView2, ArrayView4, Axis};
use pare_kernels::rng::permutation;
use std::collections::HashMap;

/// Images `[N, C, H, W]` (float32) with one class label each, and, when training distils from
/// the original model, that model's scores for each image.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub images: Array4<f32>,
    pub labels: Vec<usize>,
    /// The teacher's (the original model's) scores `[N, classes]`, one row per image, when
    /// training distils from it.
    pub teacher: Option<Array2<f32>>,
}

/// One batch as evaluation reads it: images, labels and the teacher's rows for them.
pub type BatchView<'d> = (
    ArrayView4<'d, f32>,
    &'d [usize],
    Option<ArrayView2<'d, f32>>,
);

/// The splits of a dataset folder.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

impl Dataset {
    /// Images and their labels, without teacher scores.
    pub fn new(images: Array4<f32>, labels: Vec<usize>) -> Dataset {
        Dataset {
            images,
            labels,
            teacher: None,
        }
    }

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
        self.select(&(0..n.min(self.len())).collect::<Vec<_>>())
    }

    /// Consecutive batches of at most `size` samples, in order.
    pub fn batches(&self, size: usize) -> impl Iterator<Item = BatchView<'_>> {
        let size = size.max(1);
        (0..self.len()).step_by(size).map(move |start| {
            let end = (start + size).min(self.len());
            (
                self.images.slice_axis(Axis(0), (start..end).into()),
                &self.labels[start..end],
                self.teacher
                    .as_ref()
                    .map(|t| t.slice_axis(Axis(0), (start..end).into())),
            )
        })
    }

    /// Mean and (population) standard deviation of each channel over all images and pixels,
    /// accumulated in f64. Both are 0 for an empty dataset.
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        self.images
            .axis_iter(Axis(1))
            .map(|channel| {
                let n = channel.len();
                if n == 0 {
                    return (0.0, 0.0);
                }
                // Two passes: subtracting the mean first keeps the variance accurate when the
                // values sit far from zero.
                let mean = channel.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
                let var = channel
                    .iter()
                    .map(|&x| (f64::from(x) - mean).powi(2))
                    .sum::<f64>()
                    / n as f64;
                (mean as f32, var.sqrt() as f32)
            })
            .unzip()
    }

    /// Copies the samples at `indices` (in that order, repeats allowed), with their labels and
    /// teacher rows, into a new dataset (a batch, a split, a shuffle).
    ///
    /// # Panics
    /// If an index is not below `len()`: indices come from the caller, not from a file.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        Dataset {
            images: self.images.select(Axis(0), indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            teacher: self.teacher.as_ref().map(|t| t.select(Axis(0), indices)),
        }
    }

    /// All samples in an order fixed by `seed` (see [`permutation`]).
    pub fn shuffled(&self, seed: u64) -> Dataset {
        self.select(&permutation(self.len(), seed))
    }

    /// Splits into `(train, validation)`, stratified by class: each class gives
    /// `round(fraction * count)` of its samples, chosen by `seed`, to validation. A class of
    /// two or more samples gives at least one and keeps at least one (unless `fraction` is 0 or
    /// 1); a class of one sample stays in train (unless `fraction` is 1). Both parts keep the
    /// original order of the samples.
    ///
    /// # Panics
    /// If `fraction` is not within `0..=1`: it comes from the caller, who must check it.
    pub fn split_off_validation(&self, fraction: f32, seed: u64) -> (Dataset, Dataset) {
        assert!(
            (0.0..=1.0).contains(&fraction),
            "split_off_validation: fraction {fraction} is not within 0..=1"
        );
        let mut counts: HashMap<usize, usize> = HashMap::new();
        for &l in &self.labels {
            *counts.entry(l).or_default() += 1;
        }
        let mut wanted: HashMap<usize, usize> = counts
            .into_iter()
            .map(|(label, count)| {
                let take = if fraction == 0.0 {
                    0
                } else if fraction == 1.0 {
                    count
                } else if count < 2 {
                    0
                } else {
                    ((fraction * count as f32).round() as usize).clamp(1, count - 1)
                };
                (label, take)
            })
            .collect();
        // Walking a seeded permutation picks a random subset of each class.
        let mut to_validation = vec![false; self.len()];
        for i in permutation(self.len(), seed) {
            if let Some(left) = wanted.get_mut(&self.labels[i]).filter(|left| **left > 0) {
                *left -= 1;
                to_validation[i] = true;
            }
        }
        let (val, train): (Vec<usize>, Vec<usize>) =
            (0..self.len()).partition(|&i| to_validation[i]);
        (self.select(&train), self.select(&val))
    }
}

/// Maps every pixel of channel `c` to `(x - mean[c]) / std[c]`. Both slices must have one
/// finite value per channel, and every `std` must be above zero.
pub(crate) fn normalize_channels(
    images: &mut Array4<f32>,
    mean: &[f32],
    std: &[f32],
) -> Result<(), DataError> {
    let channels = images.dim().1;
    for (name, values) in [("mean", mean), ("std", std)] {
        if values.len() != channels {
            return Err(DataError::BadArgument(format!(
                "normalize: {name} has {} values but the images have {channels} channels",
                values.len()
            )));
        }
        if let Some(c) = values.iter().position(|v| !v.is_finite()) {
            return Err(DataError::BadArgument(format!(
                "normalize: {name}[{c}] is {}; it must be a finite number",
                values[c]
            )));
        }
    }
    if let Some(c) = std.iter().position(|&s| s <= 0.0) {
        return Err(DataError::BadArgument(format!(
            "normalize: std[{c}] is {}; it must be above zero",
            std[c]
        )));
    }
    for ((mut channel, &m), &s) in images.axis_iter_mut(Axis(1)).zip(mean).zip(std) {
        channel.mapv_inplace(|x| (x - m) / s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    /// `n` 1×1×2 images whose pixels are the sample's index (and index + 0.5), with the labels
    /// given.
    fn numbered(labels: &[usize]) -> Dataset {
        let n = labels.len();
        let images = Array::from_shape_fn((n, 1, 1, 2), |(i, _, _, x)| i as f32 + x as f32 / 2.0);
        Dataset::new(images, labels.to_vec())
    }

    #[test]
    fn channel_stats_and_normalize_make_each_channel_zero_mean_unit_std() {
        let images = Array::from_shape_fn((4, 2, 3, 3), |(n, c, y, x)| {
            (n * 9 + y * 3 + x) as f32 * if c == 0 { 1.0 } else { 0.01 } + c as f32 * 100.0
        });
        let mut d = Dataset::new(images, vec![0; 4]);
        let (mean, std) = d.channel_stats();
        assert!((mean[0] - 17.5).abs() < 1e-4 && (mean[1] - 100.175).abs() < 1e-4);
        normalize_channels(&mut d.images, &mean, &std).unwrap();
        let (mean, std) = d.channel_stats();
        // Channel 1 sits near 100 with a spread of 0.1, so f32 rounding of the pixels shows.
        for c in 0..2 {
            assert!(
                mean[c].abs() < 2e-4 && (std[c] - 1.0).abs() < 2e-4,
                "{mean:?} {std:?}"
            );
        }
    }

    #[test]
    fn channel_stats_of_an_empty_dataset_are_zero() {
        let d = Dataset::new(Array4::zeros((0, 3, 2, 2)), vec![]);
        assert_eq!(d.channel_stats(), (vec![0.0; 3], vec![0.0; 3]));
    }

    #[test]
    fn normalize_refuses_wrong_lengths_and_zero_std() {
        let mut d = numbered(&[0, 1]);
        let e = normalize_channels(&mut d.images, &[0.0, 0.0, 0.0], &[1.0])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mean has 3 values") && e.contains("1 channels"),
            "{e}"
        );
        let e = normalize_channels(&mut d.images, &[0.0], &[0.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("std[0] is 0"), "{e}");
        let e = normalize_channels(&mut d.images, &[f32::NAN], &[1.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("mean[0] is NaN"), "{e}");
        assert_eq!(
            d.images,
            numbered(&[0, 1]).images,
            "a refused call changes nothing"
        );
    }

    #[test]
    fn select_copies_the_chosen_samples_and_their_teacher_rows_in_order() {
        let mut d = numbered(&[5, 6, 7]);
        d.teacher = Some(ndarray::array![[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]);
        let picked = d.select(&[2, 0, 2]);
        assert_eq!(picked.labels, vec![7, 5, 7]);
        assert_eq!(picked.images.dim(), (3, 1, 1, 2));
        assert_eq!(picked.images[[0, 0, 0, 1]], 2.5);
        assert_eq!(picked.images[[1, 0, 0, 0]], 0.0);
        assert_eq!(
            picked.teacher.unwrap(),
            ndarray::array![[4.0, 5.0], [0.0, 1.0], [4.0, 5.0]]
        );
        let (_, val) = d.split_off_validation(0.5, 1);
        let rows = val.teacher.expect("a split keeps the teacher's rows");
        for (i, row) in rows.outer_iter().enumerate() {
            assert_eq!(row[0], 2.0 * val.images[[i, 0, 0, 0]]);
        }
        let batches: Vec<_> = d
            .batches(2)
            .map(|(_, l, t)| (l.len(), t.unwrap().nrows()))
            .collect();
        assert_eq!(batches, [(2, 2), (1, 1)]);
    }

    #[test]
    fn shuffled_keeps_image_and_label_together_and_is_seeded() {
        let d = numbered(&(0..50).collect::<Vec<_>>());
        let s = d.shuffled(9);
        assert_ne!(s.labels, d.labels);
        for (i, &l) in s.labels.iter().enumerate() {
            assert_eq!(s.images[[i, 0, 0, 0]], l as f32);
        }
        assert_eq!(s.labels, d.shuffled(9).labels);
        assert_eq!(s.labels, permutation(50, 9));
    }

    #[test]
    fn validation_split_is_stratified_and_seeded() {
        // Class 0: 10 samples, class 1: 5, class 2: 2, class 3: 1.
        let mut labels = vec![0; 10];
        labels.extend([1; 5]);
        labels.extend([2, 2, 3]);
        let d = numbered(&labels);
        let (train, val) = d.split_off_validation(0.2, 4);
        let count = |d: &Dataset, c| d.labels.iter().filter(|&&l| l == c).count();
        // round(2.0) = 2, round(1.0) = 1, round(0.4) = 0 raised to 1, a lone sample stays.
        assert_eq!([0, 1, 2, 3].map(|c| count(&val, c)), [2, 1, 1, 0]);
        assert_eq!([0, 1, 2, 3].map(|c| count(&train, c)), [8, 4, 1, 1]);
        // Nothing lost or repeated, images still with their labels, original order kept.
        let mut ids: Vec<f32> = train
            .images
            .iter()
            .chain(val.images.iter())
            .step_by(2)
            .copied()
            .collect();
        assert!(ids.windows(2).take(train.len() - 1).all(|w| w[0] < w[1]));
        ids.sort_by(f32::total_cmp);
        assert_eq!(ids, (0..18).map(|i| i as f32).collect::<Vec<_>>());
        for (i, &l) in val.labels.iter().enumerate() {
            assert_eq!(labels[val.images[[i, 0, 0, 0]] as usize], l);
        }
        let (_, again) = d.split_off_validation(0.2, 4);
        assert_eq!(again.images, val.images);
        let picks = |seed| d.split_off_validation(0.2, seed).1.images;
        assert!((5..25).any(|seed| picks(seed) != val.images));
    }

    #[test]
    fn validation_fraction_edges() {
        let d = numbered(&[0, 0, 0, 1]);
        let (train, val) = d.split_off_validation(0.0, 1);
        assert_eq!((train.len(), val.len()), (4, 0));
        let (train, val) = d.split_off_validation(1.0, 1);
        assert_eq!((train.len(), val.len()), (0, 4));
        // 0.9 × 3 rounds to 3, but a class keeps one sample for training.
        let (train, val) = d.split_off_validation(0.9, 1);
        assert_eq!((train.labels, val.labels.len()), (vec![0, 1], 2));
    }

    #[test]
    #[should_panic(expected = "not within 0..=1")]
    fn validation_fraction_outside_0_1_panics() {
        numbered(&[0]).split_off_validation(1.5, 0);
    }
}
