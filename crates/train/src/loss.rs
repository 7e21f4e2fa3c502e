//! Losses over a batch of class scores: cross-entropy on logits, and mean squared error against
//! one-hot targets (the RLS paper's formal setting).

use ndarray::{Array2, ArrayView2};

/// Which loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Loss {
    /// Softmax cross-entropy on logits.
    CrossEntropy,
    /// Mean squared error against one-hot targets, averaged over all elements (PyTorch's MSELoss).
    Mse,
}

/// A batch's loss value, gradient w.r.t. the scores, and how many samples it got right.
pub struct LossOutput {
    pub loss: f32,
    pub grad: Array2<f32>,
    pub correct: usize,
}

/// Index of the largest score in each row.
pub fn argmax_rows(scores: ArrayView2<f32>) -> Vec<usize> {
    scores
        .outer_iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0
        })
        .collect()
}

impl Loss {
    /// The mean loss over the batch and its gradient. Labels must be below the class count.
    pub fn evaluate(self, scores: ArrayView2<f32>, labels: &[usize]) -> LossOutput {
        let (n, k) = scores.dim();
        let correct = argmax_rows(scores)
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
        let mut grad = Array2::<f32>::zeros((n, k));
        let mut total = 0.0f64;
        match self {
            Loss::CrossEntropy => {
                for ((row, mut g), &label) in
                    scores.outer_iter().zip(grad.outer_iter_mut()).zip(labels)
                {
                    let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
                    total += sum.ln() - (row[label] - max) as f64;
                    for (j, (gv, &v)) in g.iter_mut().zip(row.iter()).enumerate() {
                        let p = (((v - max) as f64).exp() / sum) as f32;
                        *gv = (p - (j == label) as u8 as f32) / n as f32;
                    }
                }
            }
            Loss::Mse => {
                let scale = 1.0 / (n * k) as f32;
                for ((row, mut g), &label) in
                    scores.outer_iter().zip(grad.outer_iter_mut()).zip(labels)
                {
                    for (j, (gv, &v)) in g.iter_mut().zip(row.iter()).enumerate() {
                        let e = v - (j == label) as u8 as f32;
                        total += (e * e) as f64;
                        *gv = 2.0 * e * scale;
                    }
                }
                total /= k as f64;
            }
        }
        LossOutput {
            loss: (total / n as f64) as f32,
            grad,
            correct,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn gradients_match_finite_differences() {
        let s = array![[1.0f32, -0.5, 2.0], [0.3, 0.1, -1.0]];
        let labels = [2, 0];
        for loss in [Loss::CrossEntropy, Loss::Mse] {
            let out = loss.evaluate(s.view(), &labels);
            for i in 0..2 {
                for j in 0..3 {
                    let (mut p, mut m) = (s.clone(), s.clone());
                    p[[i, j]] += 1e-3;
                    m[[i, j]] -= 1e-3;
                    let fd = (loss.evaluate(p.view(), &labels).loss
                        - loss.evaluate(m.view(), &labels).loss)
                        / 2e-3;
                    assert!(
                        (fd - out.grad[[i, j]]).abs() < 1e-3,
                        "{loss:?} [{i},{j}]: {fd} vs {}",
                        out.grad[[i, j]]
                    );
                }
            }
            assert_eq!(out.correct, 2);
        }
        let ce = Loss::CrossEntropy
            .evaluate(array![[0.0f32, 0.0]].view(), &[1])
            .loss;
        assert!((ce - std::f32::consts::LN_2).abs() < 1e-6);
    }
}
