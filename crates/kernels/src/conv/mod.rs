//! 2-D convolution (NCHW) with stride, padding, dilation and groups: forward, backward, and the
//! mean input patch RLS needs.
//!
//! Three ways to compute one, each an `Algorithm`, chosen by shape: the 3×3 stride-1 shapes
//! where `winograd::pays_off` go to `winograd`, the other stride-1 shapes `implicit::applies` to
//! go to `implicit` (GEMM over shifted views of the padded input), and the rest to `lowered`
//! (im2col, a chunk of samples per product). Reductions over the batch sum fixed chunks in a
//! fixed order, so results do not depend on the thread count. The mean patch and the bias
//! gradient are computed here for all three.

mod geometry;
mod implicit;
mod lowered;
#[cfg(test)]
mod reference;
mod winograd;

pub use geometry::ConvGeometry;

use crate::epilogue::{Epilogue, Outputs};
use crate::par_zeroed;
use ndarray::{Array1, Array4, ArrayView1, ArrayView4};
use rayon::prelude::*;

/// y = conv(x, w) + bias, then the epilogue, into `Outputs`: (geo, x, w, bias, epilogue, out).
type Forward = fn(&ConvGeometry, &[f32], &[f32], Option<&[f32]>, &Epilogue, Outputs);

/// One way to compute a convolution: the signature all three share, over NCHW slices and OIHW
/// weights.
struct Algorithm {
    forward: Forward,
    /// dx for the output gradient dy, (geo, w, dy, dx) with dx zeroed beforehand.
    input_gradient: fn(&ConvGeometry, &[f32], &[f32], &mut [f32]),
    /// dw (OIHW) for the input x and output gradient dy, (geo, x, dy).
    weight_gradient: fn(&ConvGeometry, &[f32], &[f32]) -> Vec<f32>,
}

static WINOGRAD: Algorithm = Algorithm {
    forward: winograd::forward,
    input_gradient: winograd::input_gradient,
    weight_gradient: winograd::weight_gradient,
};

static IMPLICIT: Algorithm = Algorithm {
    forward: implicit::forward,
    input_gradient: implicit::input_gradient,
    weight_gradient: implicit::weight_gradient,
};

static LOWERED: Algorithm = Algorithm {
    forward: lowered::forward,
    input_gradient: lowered::input_gradient,
    weight_gradient: lowered::weight_gradient,
};

/// The way `geo` is computed.
fn algorithm(geo: &ConvGeometry) -> &'static Algorithm {
    if winograd::pays_off(geo) {
        &WINOGRAD
    } else if implicit::applies(geo) {
        &IMPLICIT
    } else {
        &LOWERED
    }
}

/// The output of a convolution's forward pass.
pub struct Convolved {
    /// y, or what the epilogue made of it (pooled with a max pool).
    pub y: Array4<f32>,
    /// With a max pool epilogue, the flat index in its plane that each pooled value came from.
    pub argmax: Option<Array4<u32>>,
    /// The mean patch over samples, groups and positions (the RLS input average), when asked.
    pub mean_patch: Option<Array1<f32>>,
    /// With the epilogue's `plane_sums`, Σ and Σ² of each output plane (NCHW plane order).
    pub plane_sums: Option<Vec<(f64, f64)>>,
}

/// y = conv(x, w) + b, then the `epilogue`, applied to each sample's output while it is still
/// in cache. Also returns the mean patch when `mean_patch` is set.
pub fn forward(
    geo: &ConvGeometry,
    x: ArrayView4<f32>,
    w: &[f32],
    bias: Option<ArrayView1<f32>>,
    epilogue: Epilogue,
    mean_patch: bool,
) -> Convolved {
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let bias = bias.map(|b| b.to_vec());
    let (ho, wo) = epilogue.max_pool.map_or(geo.window.out, |pool| pool.out);
    let shape = (geo.batch, geo.c_out, ho, wo);
    let mut y = par_zeroed(shape, ho * wo, |_, _| {});
    let mut argmax = epilogue.max_pool.map(|_| Array4::<u32>::zeros(shape));
    let sums_wanted = epilogue.plane_sums && epilogue.max_pool.is_none();
    let mut plane_sums = sums_wanted.then(|| vec![(0.0, 0.0); geo.batch * geo.c_out]);
    let out = Outputs {
        y: y.as_slice_mut().expect("fresh array"),
        argmax: argmax
            .as_mut()
            .map(|a| a.as_slice_mut().expect("fresh array")),
        plane_sums: plane_sums.as_deref_mut(),
    };
    (algorithm(geo).forward)(geo, xs, w, bias.as_deref(), &epilogue, out);
    Convolved {
        y,
        argmax,
        mean_patch: mean_patch.then(|| geo.mean_patch(xs)),
        plane_sums,
    }
}
/// Gradients of a convolution: (dx, dw, db) from the output gradient `dy`.
pub fn backward(
    geo: &ConvGeometry,
    x: ArrayView4<f32>,
    w: &[f32],
    dy: ArrayView4<f32>,
    want_dx: bool,
) -> (Option<Array4<f32>>, Vec<f32>, Vec<f32>) {
    let p = geo.window.out.0 * geo.window.out.1;
    let x = x.as_standard_layout();
    let dy = dy.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let dys = dy.as_slice().expect("standard layout");
    let sample_len = geo.c_in * geo.window.h * geo.window.w;
    let algorithm = algorithm(geo);
    let mut dx = want_dx.then(|| {
        par_zeroed(
            (geo.batch, geo.c_in, geo.window.h, geo.window.w),
            sample_len,
            |_, _| {},
        )
    });
    if let Some(dx) = dx.as_mut() {
        (algorithm.input_gradient)(geo, w, dys, dx.as_slice_mut().expect("fresh array"));
    }
    let dw = (algorithm.weight_gradient)(geo, xs, dys);
    (dx, dw, channel_sums(dys, geo.c_out, p))
}

/// The sum of each channel of the NCHW `y` (planes of `plane` values) over samples and
/// positions, in sample order (each plane's in f64 over several accumulators: a plain f32 sum
/// is one chain of dependent adds, and took most of a first layer's bias gradient).
fn channel_sums(y: &[f32], channels: usize, plane: usize) -> Vec<f32> {
    (0..channels)
        .into_par_iter()
        .map(|k| {
            let total: f64 = y
                .chunks_exact(plane.max(1))
                .skip(k)
                .step_by(channels.max(1))
                .map(crate::sums::sum)
                .sum();
            total as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::lowered::MAX_CHUNK;
    use super::reference::conv_reference;
    use super::*;
    use crate::elementwise::Activation;
    use crate::pool::max_forward;
    use crate::testing::wave;
    use crate::window::Window2d;
    use ndarray::Array;

    /// A 7×6 input with a 3×2 kernel and 4 → 6 channels: stride 1 runs `implicit` (unless the
    /// padding is wider than the kernel), other strides the lowered path.
    fn geometry(group: usize, stride: usize, dilation: usize, pad: usize) -> ConvGeometry {
        sized(group, stride, dilation, pad, (3, 2), (4, 6))
    }

    fn sized(
        group: usize,
        stride: usize,
        dilation: usize,
        pad: usize,
        (kh, kw): (usize, usize),
        (c_in, c_out): (usize, usize),
    ) -> ConvGeometry {
        let (h, w) = (7, 6);
        let out = |n: usize, k: usize| (n + 2 * pad - ((k - 1) * dilation + 1)) / stride + 1;
        ConvGeometry {
            // Two chunks, the second one partial.
            batch: MAX_CHUNK + 3,
            c_in,
            c_out,
            group,
            window: Window2d {
                h,
                w,
                kh,
                kw,
                stride: (stride, stride),
                dilation: (dilation, dilation),
                pad: (pad, pad),
                out: (out(h, kh), out(w, kw)),
            },
        }
    }

    fn input(geo: &ConvGeometry) -> Array4<f32> {
        let shape = (geo.batch, geo.c_in, geo.window.h, geo.window.w);
        Array::from_shape_vec(shape, wave(shape.0 * shape.1 * shape.2 * shape.3, 1.0)).unwrap()
    }

    /// Which of the three ways computes the convolution.
    fn path(geo: &ConvGeometry) -> &'static str {
        let way = algorithm(geo);
        if std::ptr::eq(way, &WINOGRAD) {
            "winograd"
        } else if std::ptr::eq(way, &IMPLICIT) {
            "implicit"
        } else {
            "lowered"
        }
    }

    #[test]
    fn forward_matches_the_definition() {
        for (geo, way) in [
            (geometry(1, 1, 1, 0), "implicit"),
            (geometry(2, 1, 1, 1), "implicit"),
            (geometry(1, 1, 2, 2), "implicit"),
            // Depthwise.
            (sized(4, 1, 1, 1, (3, 3), (4, 4)), "implicit"),
            // Padding wider than the 3×2 kernel.
            (geometry(1, 1, 1, 3), "lowered"),
            (geometry(2, 2, 1, 1), "lowered"),
            (geometry(2, 3, 2, 1), "lowered"),
            (geometry(1, 2, 1, 3), "lowered"),
            (sized(1, 1, 1, 1, (3, 3), (64, 64)), "winograd"),
        ] {
            assert_eq!(path(&geo), way, "{geo:?}");
            let x = input(&geo);
            let w = wave(geo.c_out * geo.patch_len(), 2.0);
            let b = wave(geo.c_out, 3.0);
            let reference = conv_reference(&geo, x.as_slice().unwrap(), &w, &b);
            let (ho, wo) = geo.window.out;
            let shape = (geo.batch, geo.c_out, ho, wo);
            let reference = Array4::from_shape_vec(shape, reference).unwrap();
            // A 2×2 pool with stride 2 and a 3×1 one with stride 1 (the general path), where
            // the output is large enough.
            let pool = |(kh, kw): (usize, usize), stride: usize| {
                (ho >= kh && wo >= kw).then(|| Window2d {
                    h: ho,
                    w: wo,
                    kh,
                    kw,
                    stride: (stride, stride),
                    dilation: (1, 1),
                    pad: (0, 0),
                    out: ((ho - kh) / stride + 1, (wo - kw) / stride + 1),
                })
            };
            let clip = Activation::Clip {
                min: -0.5,
                max: 0.5,
            };
            // Each path runs the epilogue on its own output.
            for (activation, max_pool) in [
                (None, None),
                (Some(Activation::Relu), None),
                (Some(clip), None),
                (Some(Activation::Relu), pool((2, 2), 2)),
                (Some(clip), pool((3, 1), 1)),
            ] {
                let epilogue = Epilogue {
                    activation,
                    max_pool,
                    plane_sums: true,
                };
                let bias = Some(ArrayView1::from(&b));
                let out = forward(&geo, x.view(), &w, bias, epilogue, false);
                // Planes are summed where they are not pooled.
                match &out.plane_sums {
                    Some(sums) => {
                        let planes = out.y.as_slice().unwrap().chunks(ho * wo);
                        assert!(max_pool.is_none() && sums.len() == planes.len());
                        for (s, p) in sums.iter().zip(planes) {
                            assert_eq!(*s, crate::sums::sum_and_squares(p), "{geo:?}");
                        }
                    }
                    None => assert!(max_pool.is_some()),
                }
                let activated = reference.mapv(|v| activation.map_or(v, |act| act.apply(v)));
                let want = match max_pool {
                    Some(pool) => {
                        let (pooled, _) = max_forward(&pool, activated.view());
                        // Each winner is where its value is (ties aside, which these inputs lack).
                        let argmax = out.argmax.as_ref().expect("pooled");
                        let planes = activated.as_slice().unwrap().chunks(ho * wo);
                        for ((&v, &a), plane) in pooled
                            .as_slice()
                            .unwrap()
                            .chunks(pool.out.0 * pool.out.1)
                            .zip(argmax.as_slice().unwrap().chunks(pool.out.0 * pool.out.1))
                            .flat_map(|(p, a)| p.iter().zip(a))
                            .zip(
                                planes
                                    .flat_map(|p| std::iter::repeat_n(p, pool.out.0 * pool.out.1)),
                            )
                        {
                            assert!((plane[a as usize] - v).abs() < 1e-4, "{geo:?} {epilogue:?}");
                        }
                        pooled
                    }
                    None => activated,
                };
                assert_eq!(out.y.dim(), want.dim());
                // Relative to the value: Winograd rounds a little more than the lowered product.
                let diff = out
                    .y
                    .iter()
                    .zip(&want)
                    .fold(0.0f32, |d, (a, b)| d.max((a - b).abs() / (1.0 + b.abs())));
                assert!(diff < 1e-4, "{geo:?} {epilogue:?}: {diff}");
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (geo, way) in [
            (geometry(1, 1, 1, 1), "implicit"),
            (geometry(2, 1, 2, 2), "implicit"),
            (sized(4, 1, 1, 1, (3, 3), (4, 4)), "implicit"),
            (geometry(1, 1, 1, 3), "lowered"),
            (geometry(2, 2, 2, 1), "lowered"),
            (geometry(1, 3, 1, 3), "lowered"),
            (sized(1, 1, 1, 2, (3, 3), (64, 64)), "winograd"),
        ] {
            assert_eq!(path(&geo), way, "{geo:?}");
            let x = input(&geo);
            let w = wave(geo.c_out * geo.patch_len(), 2.0);
            let b = wave(geo.c_out, 3.0);
            let (ho, wo) = geo.window.out;
            let r = Array::from_shape_vec(
                (geo.batch, geo.c_out, ho, wo),
                wave(geo.batch * geo.c_out * ho * wo, 4.0),
            )
            .unwrap();
            // loss = Σ y · r, so dy = r.
            let loss = |x: &Array4<f32>, w: &[f32], b: &[f32]| -> f64 {
                let y = conv_reference(&geo, x.as_slice().unwrap(), w, b);
                y.iter()
                    .zip(r.iter())
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum()
            };
            let (dx, dw, db) = backward(&geo, x.view(), &w, r.view(), true);
            let eps = 1e-2f32;
            for idx in [0, 7, 33, w.len() - 1] {
                let (mut wp, mut wm) = (w.clone(), w.clone());
                wp[idx] += eps;
                wm[idx] -= eps;
                let fd = (loss(&x, &wp, &b) - loss(&x, &wm, &b)) / (2.0 * eps as f64);
                assert!(
                    (fd - dw[idx] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
                    "dw[{idx}]: {fd} vs {}",
                    dw[idx]
                );
            }
            for m in [0, geo.c_out - 1] {
                let (mut bp, mut bm) = (b.clone(), b.clone());
                bp[m] += eps;
                bm[m] -= eps;
                let fd = (loss(&x, &w, &bp) - loss(&x, &w, &bm)) / (2.0 * eps as f64);
                assert!(
                    (fd - db[m] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
                    "db[{m}]"
                );
            }
            let dx = dx.unwrap();
            for idx in [
                [0, 0, 0, 0],
                [1, 3, 2, 5],
                [4, 1, 6, 0],
                [2, 2, 3, 3],
                [MAX_CHUNK + 2, 1, 5, 4],
            ] {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[idx] += eps;
                xm[idx] -= eps;
                let fd = (loss(&xp, &w, &b) - loss(&xm, &w, &b)) / (2.0 * eps as f64);
                assert!(
                    (fd - dx[idx] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
                    "dx{idx:?}: {fd} vs {}",
                    dx[idx]
                );
            }
        }
    }

    #[test]
    fn the_mean_patch_averages_every_patch_with_its_zero_padding() {
        for geo in [geometry(1, 1, 1, 1), sized(1, 1, 1, 1, (3, 3), (64, 64))] {
            let x = Array4::<f32>::ones((geo.batch, geo.c_in, geo.window.h, geo.window.w));
            let w = vec![0.0; geo.c_out * geo.patch_len()];
            let mean = forward(&geo, x.view(), &w, None, Epilogue::default(), true).mean_patch;
            let mean = mean.unwrap();
            // Kernel tap (0, 0) sees the top padding in the first output row and the left
            // padding in the first output column.
            let (ho, wo) = geo.window.out;
            let expected = ((ho - 1) * (wo - 1)) as f32 / (ho * wo) as f32;
            assert!(
                (mean[0] - expected).abs() < 1e-6,
                "{} vs {expected}",
                mean[0]
            );
            assert_eq!(mean.len(), geo.patch_len());
        }
    }

    #[test]
    fn an_empty_batch_gives_empty_outputs_and_zero_gradients() {
        for geo in [geometry(1, 1, 1, 1), sized(1, 1, 1, 1, (3, 3), (64, 64))] {
            let geo = ConvGeometry { batch: 0, ..geo };
            let x = Array4::<f32>::zeros((0, geo.c_in, geo.window.h, geo.window.w));
            let w = wave(geo.c_out * geo.patch_len(), 2.0);
            let y = forward(&geo, x.view(), &w, None, Epilogue::default(), false).y;
            assert_eq!(y.len(), 0);
            let (dx, dw, db) = backward(&geo, x.view(), &w, y.view(), true);
            assert_eq!(dx.unwrap().len(), 0);
            assert!(dw.iter().chain(&db).all(|v| *v == 0.0));
        }
    }

    #[test]
    fn the_mean_patch_is_the_mean_of_the_lowered_columns() {
        let geo = geometry(2, 2, 2, 1);
        let x = input(&geo);
        let mean = forward(
            &geo,
            x.view(),
            &[0.0; 6 * 12],
            None,
            Epilogue::default(),
            true,
        )
        .mean_patch;
        let mean = mean.unwrap();
        let (p, k) = (geo.window.out.0 * geo.window.out.1, geo.patch_len());
        let sample_len = geo.c_in * geo.window.h * geo.window.w;
        let mut cols = vec![0.0f32; k * p];
        let mut want = vec![0.0f64; k];
        for xb in x.as_slice().unwrap().chunks_exact(sample_len) {
            for g in 0..geo.group {
                geo.im2col(xb, g, &mut cols, p);
                for (s, row) in want.iter_mut().zip(cols.chunks_exact(p)) {
                    *s += row.iter().map(|v| *v as f64).sum::<f64>();
                }
            }
        }
        let count = (geo.batch * geo.group * p) as f64;
        for (got, want) in mean.iter().zip(&want) {
            assert!(
                (*got as f64 - want / count).abs() < 1e-5,
                "{got} vs {}",
                want / count
            );
        }
    }
}
