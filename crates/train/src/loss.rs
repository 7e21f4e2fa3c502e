//! Losses over a batch of class scores: cross-entropy on logits, and mean squared error against
//! one-hot targets (the RLS paper's formal setting); and distillation toward a teacher's scores,
//! alone (unlabeled data) or added to the label loss.

use crate::TrainError;
use ndarray::{Array2, ArrayView2, Zip};

/// Which loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Loss {
    /// Softmax cross-entropy on logits.
    CrossEntropy,
    /// Mean squared error against one-hot targets, averaged over all elements (PyTorch's MSELoss).
    Mse,
}

/// How the student's scores are pulled toward the teacher's.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistillForm {
    /// KL divergence from the teacher's softmax to the student's, both at `temperature`, scaled
    /// by temperature² so its gradient keeps the size of a label loss's (Hinton et al.).
    Kl { temperature: f32 },
    /// Mean squared error between the logits.
    LogitMse,
}

/// Distillation from the original model.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Distillation {
    pub form: DistillForm,
    /// The teacher term's share of the loss; the label loss gets `1 − weight`. With unlabeled
    /// data it is 1: the labels are the teacher's own top-1 classes.
    pub weight: f32,
}

/// What training minimises and evaluation reports: the label loss, and with `distillation` a
/// teacher term, which needs teacher scores (`Dataset::teacher`) for every batch.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Objective {
    pub loss: Loss,
    pub distillation: Option<Distillation>,
}

impl From<Loss> for Objective {
    fn from(loss: Loss) -> Objective {
        Objective {
            loss,
            distillation: None,
        }
    }
}

impl Objective {
    /// The batch's loss and gradient. `teacher` holds the teacher's scores for the same samples;
    /// it must be there exactly when the objective distils, with one column per class.
    pub fn evaluate(
        &self,
        scores: ArrayView2<f32>,
        labels: &[usize],
        teacher: Option<ArrayView2<f32>>,
    ) -> Result<LossOutput, TrainError> {
        let (distillation, teacher) = match (self.distillation, teacher) {
            (None, None) => return Ok(self.loss.evaluate(scores, labels)),
            (Some(d), Some(t)) => (d, t),
            (None, Some(_)) => return Ok(self.loss.evaluate(scores, labels)),
            (Some(_), None) => {
                return Err(TrainError::Teacher(
                    "it needs the teacher's scores for every sample, and this data has none".into(),
                ))
            }
        };
        if teacher.dim() != scores.dim() {
            return Err(TrainError::Teacher(format!(
                "the teacher gives {} scores per sample but the model being trained gives {}; \
                 both must score the same classes",
                teacher.ncols(),
                scores.ncols()
            )));
        }
        let w = distillation.weight;
        let mut out = distillation.form.evaluate(scores, teacher);
        if w < 1.0 {
            let labelled = self.loss.evaluate(scores, labels);
            out.loss = (1.0 - w) * labelled.loss + w * out.loss;
            Zip::from(&mut out.grad)
                .and(&labelled.grad)
                .for_each(|g, &l| *g = (1.0 - w) * l + w * *g);
        }
        out.correct = count_correct(scores, labels);
        Ok(out)
    }
}

impl DistillForm {
    /// The mean teacher term over the batch and its gradient (`correct` is left 0).
    fn evaluate(self, scores: ArrayView2<f32>, teacher: ArrayView2<f32>) -> LossOutput {
        let (n, k) = scores.dim();
        let mut grad = Array2::<f32>::zeros((n, k));
        let mut total = 0.0f64;
        match self {
            DistillForm::Kl { temperature } => {
                let t = f64::from(temperature);
                for ((s, q), mut g) in scores
                    .outer_iter()
                    .zip(teacher.outer_iter())
                    .zip(grad.outer_iter_mut())
                {
                    let (log_p, log_q) = (log_softmax(s, t), log_softmax(q, t));
                    for ((gv, &lp), &lq) in g.iter_mut().zip(&log_p).zip(&log_q) {
                        let q = lq.exp();
                        total += q * (lq - lp);
                        // d/ds of t²·KL = t·(p − q).
                        *gv = (t * (lp.exp() - q) / n as f64) as f32;
                    }
                }
                total *= t * t;
            }
            DistillForm::LogitMse => {
                let scale = 1.0 / (n * k) as f32;
                Zip::from(&mut grad)
                    .and(scores)
                    .and(teacher)
                    .for_each(|g, &s, &q| {
                        total += f64::from((s - q) * (s - q));
                        *g = 2.0 * (s - q) * scale;
                    });
                total /= k as f64;
            }
        }
        LossOutput {
            loss: (total / n as f64) as f32,
            grad,
            correct: 0,
        }
    }
}

/// `log softmax(row / temperature)` in f64, shifted by the row's maximum so no exp overflows.
fn log_softmax(row: ndarray::ArrayView1<f32>, temperature: f64) -> Vec<f64> {
    let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let shifted: Vec<f64> = row
        .iter()
        .map(|&v| f64::from(v - max) / temperature)
        .collect();
    let log_sum = shifted.iter().map(|v| v.exp()).sum::<f64>().ln();
    shifted.iter().map(|v| v - log_sum).collect()
}

/// How many rows' top-1 class is their label.
fn count_correct(scores: ArrayView2<f32>, labels: &[usize]) -> usize {
    argmax_rows(scores)
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count()
}

/// A batch's loss value, gradient w.r.t. the scores, and how many samples it got right.
#[derive(Debug)]
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
        let correct = count_correct(scores, labels);
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

    fn objective(form: DistillForm, weight: f32) -> Objective {
        Objective {
            loss: Loss::CrossEntropy,
            distillation: Some(Distillation { form, weight }),
        }
    }

    #[test]
    fn distillation_gradients_match_finite_differences() {
        let s = array![[1.0f32, -0.5, 2.0], [0.3, 0.1, -1.0]];
        let teacher = array![[0.5f32, 0.0, 3.0], [2.0, -1.0, 0.0]];
        let labels = [1, 0];
        for form in [
            DistillForm::Kl { temperature: 1.0 },
            DistillForm::Kl { temperature: 4.0 },
            DistillForm::LogitMse,
        ] {
            for weight in [1.0, 0.3] {
                let o = objective(form, weight);
                let loss = |s: &ndarray::Array2<f32>| {
                    o.evaluate(s.view(), &labels, Some(teacher.view()))
                        .unwrap()
                        .loss
                };
                let out = o.evaluate(s.view(), &labels, Some(teacher.view())).unwrap();
                for i in 0..2 {
                    for j in 0..3 {
                        let (mut p, mut m) = (s.clone(), s.clone());
                        p[[i, j]] += 1e-3;
                        m[[i, j]] -= 1e-3;
                        let fd = (loss(&p) - loss(&m)) / 2e-3;
                        assert!(
                            (fd - out.grad[[i, j]]).abs() < 2e-3,
                            "{form:?} w {weight} [{i},{j}]: {fd} vs {}",
                            out.grad[[i, j]]
                        );
                    }
                }
                // Row 0's top-1 (class 2) is not its label 1; row 1's (class 0) is.
                assert_eq!(out.correct, 1);
            }
        }
    }

    #[test]
    fn distillation_is_zero_at_the_teacher_and_kl_matches_its_definition() {
        let t = array![[0.5f32, 0.0, 3.0]];
        for form in [DistillForm::Kl { temperature: 2.0 }, DistillForm::LogitMse] {
            let out = objective(form, 1.0)
                .evaluate(t.view(), &[2], Some(t.view()))
                .unwrap();
            assert!(out.loss.abs() < 1e-7, "{form:?}: {}", out.loss);
            assert!(out.grad.iter().all(|g| g.abs() < 1e-7));
        }
        // KL(q‖p)·T² by hand, at T = 2.
        let s = array![[1.0f32, 1.0, 1.0]];
        let q: Vec<f64> = [0.25f64, 0.0, 1.5].iter().map(|v| v.exp()).collect();
        let z: f64 = q.iter().sum();
        let kl: f64 = q.iter().map(|v| v / z * ((v / z) / (1.0 / 3.0)).ln()).sum();
        let out = objective(DistillForm::Kl { temperature: 2.0 }, 1.0)
            .evaluate(s.view(), &[0], Some(t.view()))
            .unwrap();
        assert!(
            (f64::from(out.loss) - 4.0 * kl).abs() < 1e-6,
            "{}",
            out.loss
        );
    }

    #[test]
    fn a_distilling_objective_refuses_data_without_teacher_scores_or_of_another_width() {
        let s = array![[1.0f32, 0.0]];
        let o = objective(DistillForm::LogitMse, 1.0);
        let e = o.evaluate(s.view(), &[0], None).unwrap_err().to_string();
        assert!(e.contains("teacher's scores for every sample"), "{e}");
        let wide = array![[1.0f32, 0.0, 2.0]];
        let e = o
            .evaluate(s.view(), &[0], Some(wide.view()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("teacher gives 3 scores") && e.contains("gives 2"),
            "{e}"
        );
        // Without distillation, teacher scores are ignored.
        let plain: Objective = Loss::CrossEntropy.into();
        let with = plain.evaluate(s.view(), &[0], Some(wide.view())).unwrap();
        assert_eq!(with.loss, Loss::CrossEntropy.evaluate(s.view(), &[0]).loss);
    }
}
