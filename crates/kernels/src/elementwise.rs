//! Element-wise ops: binary arithmetic with numpy broadcasting, activations, softmax; and the
//! reduction that undoes a broadcast in backward passes. Element-wise maps run on rayon's pool:
//! each output element depends on its inputs only, so the results do not depend on the split.

use crate::rng::SplitMix64;
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Zip};

/// Sums `grad` down to `shape`, undoing a numpy broadcast.
pub fn unbroadcast(grad: ArrayD<f32>, shape: &[usize]) -> ArrayD<f32> {
    let mut g = grad;
    while g.ndim() > shape.len() {
        g = g.sum_axis(Axis(0));
    }
    for (axis, &dim) in shape.iter().enumerate() {
        if dim == 1 && g.shape()[axis] != 1 {
            g = g.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    g.as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(shape))
        .expect("same element count after reduction")
}

/// Binary arithmetic op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// a ∘ b with broadcasting; None if the shapes do not broadcast.
pub fn binary_forward(op: Binary, a: &ArrayViewD<f32>, b: &ArrayViewD<f32>) -> Option<ArrayD<f32>> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let (a, b) = (a.broadcast(IxDyn(&shape))?, b.broadcast(IxDyn(&shape))?);
    Some(Zip::from(&a).and(&b).par_map_collect(|&x, &y| match op {
        Binary::Add => x + y,
        Binary::Sub => x - y,
        Binary::Mul => x * y,
        Binary::Div => x / y,
    }))
}

/// Gradients of a ∘ b for both operands, each reduced to its own shape.
pub fn binary_backward(
    op: Binary,
    a: &ArrayViewD<f32>,
    b: &ArrayViewD<f32>,
    dy: &ArrayViewD<f32>,
) -> (ArrayD<f32>, ArrayD<f32>) {
    let shape = dy.shape();
    let (ab, bb) = (
        a.broadcast(IxDyn(shape)).expect("forward broadcast"),
        b.broadcast(IxDyn(shape)).expect("forward broadcast"),
    );
    let (da, db) = match op {
        Binary::Add => (dy.to_owned(), dy.to_owned()),
        Binary::Sub => (dy.to_owned(), dy.mapv(|v| -v)),
        Binary::Mul => (
            Zip::from(dy).and(&bb).par_map_collect(|&g, &y| g * y),
            Zip::from(dy).and(&ab).par_map_collect(|&g, &x| g * x),
        ),
        Binary::Div => (
            Zip::from(dy).and(&bb).par_map_collect(|&g, &y| g / y),
            Zip::from(dy)
                .and(&ab)
                .and(&bb)
                .par_map_collect(|&g, &x, &y| -g * x / (y * y)),
        ),
    };
    (unbroadcast(da, a.shape()), unbroadcast(db, b.shape()))
}

/// The numpy broadcast of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank {
                a[i + a.len() - rank]
            } else {
                1
            };
            let db = if i + b.len() >= rank {
                b[i + b.len() - rank]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// Element-wise activations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    Clip { min: f32, max: f32 },
    LeakyRelu { alpha: f32 },
    Sigmoid,
    HardSigmoid { alpha: f32, beta: f32 },
    HardSwish,
}

impl Activation {
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Clip { min, max } => x.max(min).min(max),
            Activation::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        }
    }

    /// Whether dy/dx is a function of the output alone: true for every activation but HardSwish
    /// and a LeakyRelu with a negative slope. Such an activation can overwrite its producer's
    /// output in place, since its backward pass never needs its input.
    pub fn output_determines_derivative(self) -> bool {
        match self {
            Activation::LeakyRelu { alpha } => alpha >= 0.0,
            Activation::HardSwish => false,
            _ => true,
        }
    }

    /// dy/dx at output y, where `output_determines_derivative` holds (PyTorch's choices at the
    /// kinks: y = f(x) is strictly inside the linear piece exactly when x is).
    fn derivative_at_output(self, y: f32) -> f32 {
        match self {
            Activation::Relu => (y > 0.0) as u8 as f32,
            Activation::LeakyRelu { alpha } => {
                if y > 0.0 {
                    1.0
                } else {
                    alpha
                }
            }
            Activation::Clip { min, max } => (y > min && y < max) as u8 as f32,
            Activation::Sigmoid => y * (1.0 - y),
            Activation::HardSigmoid { alpha, .. } => {
                if y > 0.0 && y < 1.0 {
                    alpha
                } else {
                    0.0
                }
            }
            Activation::HardSwish => unreachable!("HardSwish's derivative needs its input"),
        }
    }

    /// dy/dx at input x (output y).
    pub fn derivative(self, x: f32, y: f32) -> f32 {
        match self {
            Activation::LeakyRelu { alpha } if alpha < 0.0 => {
                if x > 0.0 {
                    1.0
                } else {
                    alpha
                }
            }
            Activation::HardSwish => {
                if x < -3.0 {
                    0.0
                } else if x > 3.0 {
                    1.0
                } else {
                    x / 3.0 + 0.5
                }
            }
            _ => self.derivative_at_output(y),
        }
    }

    pub fn forward(self, x: &ArrayViewD<f32>) -> ArrayD<f32> {
        Zip::from(x).par_map_collect(|&v| self.apply(v))
    }

    /// Applies the activation to `values` in place; ReLU gets its own loop so it vectorises.
    pub fn apply_in_place(self, values: &mut [f32]) {
        match self {
            Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
            act => values.iter_mut().for_each(|v| *v = act.apply(*v)),
        }
    }

    pub fn backward(
        self,
        x: &ArrayViewD<f32>,
        y: &ArrayViewD<f32>,
        dy: &ArrayViewD<f32>,
    ) -> ArrayD<f32> {
        Zip::from(dy)
            .and(x)
            .and(y)
            .par_map_collect(|&g, &x, &y| g * self.derivative(x, y))
    }

    /// Turns `dy` into dx in place, from the output `y` alone; only for activations whose
    /// output determines their derivative.
    pub fn backward_from_output(self, y: &ArrayViewD<f32>, dy: &mut ArrayD<f32>) {
        debug_assert!(self.output_determines_derivative());
        match self {
            Activation::Relu => Zip::from(dy).and(y).par_for_each(|g, &y| {
                *g *= (y > 0.0) as u8 as f32;
            }),
            act => Zip::from(dy)
                .and(y)
                .par_for_each(|g, &y| *g *= act.derivative_at_output(y)),
        }
    }
}

/// Training-mode dropout's mask over `shape`: each element is 1/(1 − ratio) with probability
/// 1 − ratio and 0 otherwise, drawn from `seed` in element order (`ratio` in [0, 1)). The output
/// is x·mask and the input gradient dy·mask.
pub fn dropout_mask(shape: &[usize], ratio: f32, seed: u64) -> ArrayD<f32> {
    let keep = 1.0 - ratio as f64;
    let scale = (1.0 / keep) as f32;
    let mut rng = SplitMix64::new(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        if rng.unit_f64() < keep {
            scale
        } else {
            0.0
        }
    })
}

/// Softmax along `axis`.
pub fn softmax_forward(x: &ArrayViewD<f32>, axis: usize) -> ArrayD<f32> {
    let mut y = x.to_owned();
    for mut lane in y.lanes_mut(Axis(axis)) {
        let max = lane.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        lane.mapv_inplace(|v| (v - max).exp());
        let sum = lane.sum();
        lane.mapv_inplace(|v| v / sum);
    }
    y
}

/// dx = y · (dy − Σ dy·y) along `axis`.
pub fn softmax_backward(y: &ArrayViewD<f32>, dy: &ArrayViewD<f32>, axis: usize) -> ArrayD<f32> {
    let mut dx = dy.to_owned();
    for (mut d, yl) in dx
        .lanes_mut(Axis(axis))
        .into_iter()
        .zip(y.lanes(Axis(axis)))
    {
        let dot: f32 = d.iter().zip(yl.iter()).map(|(a, b)| a * b).sum();
        Zip::from(&mut d)
            .and(&yl)
            .for_each(|g, &yv| *g = yv * (*g - dot));
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dropout_mask_keeps_the_share_it_should_and_rescales() {
        let mask = dropout_mask(&[100, 100], 0.3, 11);
        let kept = mask.iter().filter(|&&v| v != 0.0).count();
        // 7000 expected; the binomial standard deviation is about 46.
        assert!((6800..7200).contains(&kept), "{kept}");
        assert!(mask
            .iter()
            .all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
        assert_eq!(dropout_mask(&[100, 100], 0.3, 11), mask);
        assert_ne!(dropout_mask(&[100, 100], 0.3, 12), mask);
        assert!(dropout_mask(&[5], 0.0, 1).iter().all(|&v| v == 1.0));
    }
    use ndarray::Array;

    fn arr(shape: &[usize], seed: f32) -> ArrayD<f32> {
        let n: usize = shape.iter().product();
        Array::from_shape_vec(
            IxDyn(shape),
            (0..n)
                .map(|i| ((i as f32 + seed) * 0.913).sin() * 4.0)
                .collect(),
        )
        .unwrap()
    }

    fn fd_check(f: &dyn Fn(&ArrayD<f32>) -> f64, x: &ArrayD<f32>, grad: &ArrayD<f32>, what: &str) {
        crate::testing::check_gradient(f, x, grad, 3, 1e-2, what);
    }

    #[test]
    fn binary_ops_broadcast_and_reduce_gradients() {
        let a = arr(&[2, 3, 4, 4], 0.0);
        let b = arr(&[3, 1, 1], 5.0).mapv(|v| v + 5.0); // away from 0 for Div
        let r = arr(&[2, 3, 4, 4], 9.0);
        for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div] {
            let (da, db) = binary_backward(op, &a.view(), &b.view(), &r.view());
            assert_eq!(db.shape(), &[3, 1, 1]);
            let loss = |a: &ArrayD<f32>, b: &ArrayD<f32>| {
                (binary_forward(op, &a.view(), &b.view()).unwrap() * &r)
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>()
            };
            fd_check(&|x| loss(x, &b), &a, &da, &format!("{op:?} da"));
            fd_check(&|x| loss(&a, x), &b, &db, &format!("{op:?} db"));
        }
        assert!(
            binary_forward(Binary::Add, &arr(&[3], 0.0).view(), &arr(&[4], 0.0).view()).is_none()
        );
    }

    #[test]
    fn activations_match_finite_differences() {
        // Shifted off the kinks, where finite differences are undefined.
        let x = arr(&[5, 7], 0.3).mapv(|v| {
            if (v.abs() - 3.0).abs() < 0.05 || v.abs() < 0.05 {
                v + 0.2
            } else {
                v
            }
        });
        let r = arr(&[5, 7], 2.0);
        for act in [
            Activation::Relu,
            Activation::Clip { min: 0.0, max: 2.0 },
            Activation::LeakyRelu { alpha: 0.1 },
            Activation::LeakyRelu { alpha: -0.2 },
            Activation::Sigmoid,
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Activation::HardSwish,
        ] {
            let y = act.forward(&x.view());
            let dx = act.backward(&x.view(), &y.view(), &r.view());
            let mut in_place = x.clone();
            act.apply_in_place(in_place.as_slice_mut().unwrap());
            assert_eq!(in_place, y, "{act:?} in place");
            if act.output_determines_derivative() {
                let mut from_output = r.clone();
                act.backward_from_output(&y.view(), &mut from_output);
                assert_eq!(from_output, dx, "{act:?} from its output");
            }
            fd_check(
                &|x: &ArrayD<f32>| {
                    (act.forward(&x.view()) * &r)
                        .iter()
                        .map(|&v| v as f64)
                        .sum()
                },
                &x,
                &dx,
                &format!("{act:?}"),
            );
        }
    }

    #[test]
    fn only_hardswish_and_negative_slopes_need_their_input_for_backward() {
        let needs_input = [Activation::HardSwish, Activation::LeakyRelu { alpha: -0.2 }];
        assert!(needs_input
            .iter()
            .all(|a| !a.output_determines_derivative()));
        assert!(Activation::LeakyRelu { alpha: 0.0 }.output_determines_derivative());
    }

    #[test]
    fn softmax_rows_sum_to_one_and_backward_matches() {
        let x = arr(&[3, 5], 1.0);
        let r = arr(&[3, 5], 7.0);
        let y = softmax_forward(&x.view(), 1);
        for row in y.outer_iter() {
            assert!((row.sum() - 1.0).abs() < 1e-6);
        }
        let dx = softmax_backward(&y.view(), &r.view(), 1);
        fd_check(
            &|x: &ArrayD<f32>| {
                (softmax_forward(&x.view(), 1) * &r)
                    .iter()
                    .map(|&v| v as f64)
                    .sum()
            },
            &x,
            &dx,
            "softmax",
        );
    }
}
