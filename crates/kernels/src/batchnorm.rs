//! Batch normalisation over the channel axis (axis 1) of any-rank input: training mode with batch
//! statistics, inference mode with running statistics, and both backward passes.
//!
//! Channels run in parallel; each channel's sums run over the batch in order, so results do not
//! depend on the thread count.

use crate::epilogue::Epilogue;
use crate::scratch::with_buffer;
use crate::sums::{slice_sums, sum_and_squares};
use crate::{into_standard, par_zeroed};
use ndarray::{Array4, ArrayD, ArrayViewD};
use rayon::prelude::*;
use std::cell::RefCell;

/// Per channel, the sums `sums(channel, plane)` gives over each sample's plane of that channel
/// (plane = sample · c + channel), added in sample order.
fn channel_sums(
    n: usize,
    c: usize,
    sums: impl Fn(usize, usize) -> (f64, f64) + Sync,
) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n).fold((0.0f64, 0.0f64), |acc, b| {
                let (p, q) = sums(ch, b * c + ch);
                (acc.0 + p, acc.1 + q)
            })
        })
        .collect()
}

/// What the backward pass needs from a training-mode forward.
#[derive(Debug, Clone)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// Biased variance of the batch (used to normalise).
    pub var: Vec<f32>,
    /// Elements per channel that the statistics were taken over.
    pub count: usize,
}

fn channel_iter(x: &ArrayViewD<f32>) -> (usize, usize, usize) {
    let shape = x.shape();
    let (n, c) = (shape[0], shape[1]);
    let inner: usize = shape[2..].iter().product();
    (n, c, inner)
}

/// The output of a BatchNorm forward pass.
pub struct Normalised {
    /// y, or what the epilogue made of it: the activation applied, and pooled with a max pool
    /// (then NCHW with the pool's output planes).
    pub y: ArrayD<f32>,
    /// With a max pool epilogue, the flat index in its plane that each pooled value came from.
    pub argmax: Option<Array4<u32>>,
    /// The batch statistics, in training mode.
    pub stats: Option<BatchStats>,
}

thread_local! {
    /// Each thread's normalised plane, when a max pool takes it before it reaches memory.
    static PLANE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// y = γ (x − μ) / √(σ² + ε) + β, then the `epilogue`, applied while each plane is in cache (a
/// max pool needs a 4-d x). In training mode μ, σ² are the batch's and are returned; they come
/// from `plane_sums` (Σ and Σ² of each plane of x, `sum_and_squares`) when x's producer
/// computed them, which saves reading x once more.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: ArrayViewD<f32>,
    scale: &[f32],
    bias: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    epsilon: f32,
    training: bool,
    epilogue: Epilogue,
    plane_sums: Option<&[(f64, f64)]>,
) -> Normalised {
    let x = x.as_standard_layout();
    let (n, c, inner) = channel_iter(&x.view());
    let xs = x.as_slice().expect("standard layout");
    let stats = training.then(|| {
        let count = n * inner;
        let sums = match plane_sums {
            Some(planes) => {
                assert_eq!(planes.len(), n * c, "one sum per plane of x");
                channel_sums(n, c, |_, p| planes[p])
            }
            None => channel_sums(n, c, |_, p| sum_and_squares(&xs[p * inner..][..inner])),
        };
        let mean: Vec<f64> = sums.iter().map(|s| s.0 / count as f64).collect();
        let var = sums
            .iter()
            .zip(&mean)
            .map(|(s, m)| (s.1 / count as f64 - m * m).max(0.0) as f32)
            .collect();
        BatchStats {
            mean: mean.iter().map(|&m| m as f32).collect(),
            var,
            count,
        }
    });
    let (mean, var) = match &stats {
        Some(s) => (&s.mean[..], &s.var[..]),
        None => (running_mean, running_var),
    };
    // y = k·x + shift for the channel of plane `block`.
    let affine = |block: usize| {
        let ch = block % c;
        let k = scale[ch] / (var[ch] + epsilon).sqrt();
        (k, bias[ch] - mean[ch] * k)
    };
    let planes = xs.par_chunks(inner.max(1));
    if let Some(pool) = epilogue.max_pool {
        let out = epilogue.plane_len(inner);
        let shape = (n, c, pool.out.0, pool.out.1);
        let (mut y, mut argmax) = (Array4::zeros(shape), Array4::zeros(shape));
        y.as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(out.max(1))
            .zip(
                argmax
                    .as_slice_mut()
                    .expect("fresh")
                    .par_chunks_mut(out.max(1)),
            )
            .zip(planes)
            .enumerate()
            .for_each(|(block, ((yp, ap), xb))| {
                let (k, shift) = affine(block);
                with_buffer(&PLANE, inner, |plane| {
                    for (o, &v) in plane.iter_mut().zip(xb) {
                        *o = v * k + shift;
                    }
                    epilogue.pool(plane, yp, ap);
                });
            });
        let y = y.into_dyn();
        return Normalised {
            y,
            argmax: Some(argmax),
            stats,
        };
    }
    // Written once from x, plane by plane, rather than copied and then updated.
    let y = par_zeroed(x.raw_dim(), inner, |block, out| {
        let (k, shift) = affine(block);
        for (o, &v) in out.iter_mut().zip(&xs[block * inner..][..inner]) {
            *o = v * k + shift;
        }
        epilogue.activate(out);
    });
    Normalised {
        y,
        argmax: None,
        stats,
    }
}

/// The gradient BatchNorm's backward pass starts from.
pub enum OutputGradient<'a> {
    /// dy, shaped like x; dx is written over it.
    Full(ArrayD<f32>),
    /// The gradient of a max pool fused after BatchNorm (see `Epilogue`), with the derivative
    /// of any activation between them applied: dy over the pooled planes, and the flat index in
    /// its plane that each pooled value came from, both row-major NCHW. The full-size gradient
    /// is never formed.
    Pooled { dy: &'a [f32], argmax: &'a [u32] },
}

/// Gradients (dx, dscale, dbias). With `stats` (training mode) the batch statistics depend on
/// x; without, the running statistics are constants.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: ArrayViewD<f32>,
    dy: OutputGradient,
    scale: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    epsilon: f32,
    stats: Option<&BatchStats>,
) -> (ArrayD<f32>, Vec<f32>, Vec<f32>) {
    let x = x.as_standard_layout();
    let (n, c, inner) = channel_iter(&x.view());
    let xs = x.as_slice().expect("standard");
    let (mean, var) = match stats {
        Some(s) => (&s.mean[..], &s.var[..]),
        None => (running_mean, running_var),
    };
    let inv: Vec<f64> = var
        .iter()
        .map(|&v| 1.0 / (v as f64 + epsilon as f64).sqrt())
        .collect();
    let dy = match dy {
        OutputGradient::Full(dy) => OutputGradient::Full(into_standard(dy)),
        pooled => pooled,
    };
    // Per channel Σ dy and Σ dy·(x − μ).
    let sums = match &dy {
        OutputGradient::Full(dy) => {
            let dys = dy.as_slice().expect("standard");
            channel_sums(n, c, |ch, p| {
                let (m, r) = (mean[ch] as f64, p * inner..(p + 1) * inner);
                slice_sums(&dys[r.clone()], &xs[r], |g, x| (g, g * (x - m)))
            })
        }
        OutputGradient::Pooled {
            dy: dys,
            argmax: args,
        } => {
            let out = dys.len() / (n * c).max(1);
            channel_sums(n, c, |ch, p| {
                let (m, plane) = (mean[ch] as f64, &xs[p * inner..][..inner]);
                let (dp, ap) = (&dys[p * out..][..out], &args[p * out..][..out]);
                dp.iter().zip(ap).fold((0.0, 0.0), |(s, t), (&g, &a)| {
                    let g = g as f64;
                    (s + g, t + g * (plane[a as usize] as f64 - m))
                })
            })
        }
    };
    let dbias: Vec<f64> = sums.iter().map(|s| s.0).collect();
    let dscale: Vec<f64> = sums.iter().zip(&inv).map(|(s, i)| s.1 * i).collect();
    // dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy · x̂)) in training mode, γ/σ · dy otherwise: per
    // channel an affine map dx = a·dy + b·x + shift, its coefficients worked out in f64.
    let coefficients: Vec<(f32, f32, f32)> = (0..c)
        .map(|ch| {
            let k = scale[ch] as f64 * inv[ch];
            match stats {
                Some(s) => {
                    let m = s.count as f64;
                    let b = -k * inv[ch] * dscale[ch] / m;
                    let shift = -k * dbias[ch] / m - b * mean[ch] as f64;
                    (k as f32, b as f32, shift as f32)
                }
                None => (k as f32, 0.0, 0.0),
            }
        })
        .collect();
    let dx = match dy {
        OutputGradient::Full(mut dy) => {
            dy.as_slice_mut()
                .expect("standard")
                .par_chunks_mut(inner.max(1))
                .zip(xs.par_chunks(inner.max(1)))
                .enumerate()
                .for_each(|(block, (g, xb))| {
                    let (a, b, shift) = coefficients[block % c];
                    for (g, &xv) in g.iter_mut().zip(xb) {
                        *g = a * *g + b * xv + shift;
                    }
                });
            dy
        }
        // dy is zero but at the winners: b·x + shift everywhere, then a·dy added at each winner
        // (a value that won several overlapping windows gets each of their gradients).
        OutputGradient::Pooled {
            dy: dys,
            argmax: args,
        } => {
            let out = dys.len() / (n * c).max(1);
            par_zeroed(x.raw_dim(), inner, |p, d| {
                let (a, b, shift) = coefficients[p % c];
                for (v, &xv) in d.iter_mut().zip(&xs[p * inner..][..inner]) {
                    *v = b * xv + shift;
                }
                for (&g, &at) in dys[p * out..][..out].iter().zip(&args[p * out..][..out]) {
                    d[at as usize] += a * g;
                }
            })
        }
    };
    (
        dx,
        dscale.iter().map(|&v| v as f32).collect(),
        dbias.iter().map(|&v| v as f32).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elementwise::Activation;
    use crate::pool::max_forward;
    use crate::window::Window2d;
    use ndarray::{Array, Axis, IxDyn};

    /// `forward` with ε = 1e-5 and no sums from a producer.
    fn normalise(
        x: ArrayViewD<f32>,
        (scale, bias): (&[f32], &[f32]),
        (mean, var): (&[f32], &[f32]),
        training: bool,
        epilogue: Epilogue,
    ) -> Normalised {
        forward(x, scale, bias, mean, var, 1e-5, training, epilogue, None)
    }

    fn x() -> ArrayD<f32> {
        Array::from_shape_fn(IxDyn(&[4, 3, 2, 5]), |d| {
            ((d[0] * 31 + d[1] * 7 + d[2] * 3 + d[3]) as f32 * 0.71).sin() * 2.0 + d[1] as f32
        })
    }

    #[test]
    fn training_mode_normalises_each_channel() {
        let out = normalise(
            x().view(),
            (&[1.0; 3], &[0.0; 3]),
            (&[0.0; 3], &[1.0; 3]),
            true,
            Epilogue::default(),
        );
        let (y, stats) = (out.y, out.stats.unwrap());
        assert_eq!(stats.count, 40);
        for ch in 0..3 {
            let vals: Vec<f32> = y.index_axis(Axis(1), ch).iter().copied().collect();
            let mean = vals.iter().sum::<f32>() / 40.0;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 40.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                "{mean} {var}"
            );
        }
    }

    #[test]
    fn the_epilogue_activates_and_pools_the_output() {
        let run = |epilogue| {
            normalise(
                x().view(),
                (&[0.5, -1.0, 2.0], &[0.1; 3]),
                (&[0.0; 3], &[1.0; 3]),
                true,
                epilogue,
            )
        };
        let mut want = run(Epilogue::default()).y;
        let activation = Some(Activation::Relu);
        Activation::Relu.apply_in_place(want.as_slice_mut().unwrap());
        let activated = run(Epilogue {
            activation,
            ..Epilogue::default()
        });
        assert_eq!(activated.y, want);
        assert!(activated.argmax.is_none());
        // A 2×2 pool with stride 2 over the 2×5 planes, and a 1×3 one with stride 1 (the general
        // path), each against the standalone pool of the activated output.
        let window = |(kh, kw), stride, out| Window2d {
            h: 2,
            w: 5,
            kh,
            kw,
            stride,
            dilation: (1, 1),
            pad: (0, 0),
            out,
        };
        for max_pool in [
            window((2, 2), (2, 2), (1, 2)),
            window((1, 3), (1, 1), (2, 3)),
        ] {
            let want4 = want.view().into_dimensionality().unwrap();
            let (pooled, arg) = max_forward(&max_pool, want4);
            let epilogue = Epilogue {
                activation,
                max_pool: Some(max_pool),
                ..Epilogue::default()
            };
            let out = run(epilogue);
            assert_eq!(out.y, pooled.into_dyn(), "{max_pool:?}");
            assert_eq!(out.argmax, Some(arg), "{max_pool:?}");
        }
    }

    #[test]
    fn a_pooled_gradient_gives_what_the_full_gradient_it_stands_for_gives() {
        let (scale, bias, rm, rv) = ([0.5, -1.5, 2.0], [0.1, 0.2, -0.3], [0.3; 3], [1.5; 3]);
        // Plain 2×2 windows, and overlapping 1×3 ones whose winners can repeat.
        let window = |kw, stride, out| Window2d {
            h: 2,
            w: 5,
            kh: 2 / kw,
            kw,
            stride: (stride, stride),
            dilation: (1, 1),
            pad: (0, 0),
            out,
        };
        for (max_pool, training) in [
            (window(2, 2, (1, 2)), true),
            (window(3, 1, (1, 3)), true),
            (window(3, 1, (1, 3)), false),
        ] {
            let epilogue = Epilogue {
                max_pool: Some(max_pool),
                ..Epilogue::default()
            };
            let out = normalise(x().view(), (&scale, &bias), (&rm, &rv), training, epilogue);
            let argmax = out.argmax.unwrap();
            let g = Array::from_shape_fn(argmax.raw_dim(), |(a, b, c, d)| {
                ((a * 7 + b * 5 + c * 3 + d) as f32 * 0.61).sin()
            });
            let full = crate::pool::max_backward(&max_pool, &argmax, g.view());
            let stats = out.stats.as_ref();
            let run = |dy| backward(x().view(), dy, &scale, &rm, &rv, 1e-5, stats);
            let want = run(OutputGradient::Full(full.into_dyn()));
            let pooled = OutputGradient::Pooled {
                dy: g.as_slice().unwrap(),
                argmax: argmax.as_slice().unwrap(),
            };
            let got = run(pooled);
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-5);
            assert!(close(got.0.as_slice().unwrap(), want.0.as_slice().unwrap()));
            assert!(
                close(&got.1, &want.1) && close(&got.2, &want.2),
                "{max_pool:?}"
            );
        }
    }

    #[test]
    fn backward_matches_finite_differences_in_both_modes() {
        let scale = [0.5, -1.5, 2.0];
        let bias = [0.1, 0.2, -0.3];
        let (rm, rv) = ([0.3, 1.0, -0.5], [1.5, 0.7, 2.0]);
        let r = Array::from_shape_fn(IxDyn(&[4, 3, 2, 5]), |d| {
            ((d[0] + 2 * d[1] + 3 * d[2] + 5 * d[3]) as f32 * 0.37).cos()
        });
        for training in [true, false] {
            let x = x();
            let loss = |x: &ArrayD<f32>, s: &[f32], b: &[f32]| {
                let y = normalise(x.view(), (s, b), (&rm, &rv), training, Epilogue::default()).y;
                (y * &r).iter().map(|&v| v as f64).sum::<f64>()
            };
            let out = normalise(
                x.view(),
                (&scale, &bias),
                (&rm, &rv),
                training,
                Epilogue::default(),
            );
            let stats = out.stats;
            let (dx, ds, db) = backward(
                x.view(),
                OutputGradient::Full(r.clone()),
                &scale,
                &rm,
                &rv,
                1e-5,
                stats.as_ref(),
            );
            let eps = 1e-2f32;
            for idx in [[0usize, 0, 0, 0], [3, 2, 1, 4], [1, 1, 0, 2]] {
                let (mut p, mut m) = (x.clone(), x.clone());
                p[IxDyn(&idx)] += eps;
                m[IxDyn(&idx)] -= eps;
                let fd = (loss(&p, &scale, &bias) - loss(&m, &scale, &bias)) / (2.0 * eps as f64);
                let got = dx[IxDyn(&idx)] as f64;
                assert!(
                    (fd - got).abs() < 2e-3 * (1.0 + fd.abs()),
                    "training {training} dx{idx:?}: {fd} vs {got}"
                );
            }
            for ch in 0..3 {
                let (mut p, mut m) = (scale, scale);
                p[ch] += eps;
                m[ch] -= eps;
                let fd = (loss(&x, &p, &bias) - loss(&x, &m, &bias)) / (2.0 * eps as f64);
                assert!(
                    (fd - ds[ch] as f64).abs() < 2e-3 * (1.0 + fd.abs()),
                    "dscale[{ch}]"
                );
                let (mut p, mut m) = (bias, bias);
                p[ch] += eps;
                m[ch] -= eps;
                let fd = (loss(&x, &scale, &p) - loss(&x, &scale, &m)) / (2.0 * eps as f64);
                assert!(
                    (fd - db[ch] as f64).abs() < 2e-3 * (1.0 + fd.abs()),
                    "dbias[{ch}]"
                );
            }
        }
    }
}
