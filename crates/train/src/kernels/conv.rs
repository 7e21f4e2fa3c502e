//! 2-D convolution (NCHW) with stride, padding, dilation and groups: forward, backward, and the
//! mean input patch RLS needs.
//!
//! Three ways to compute one, chosen by shape: the 3×3 stride-1 shapes where
//! `winograd::pays_off` go to `winograd`, the other stride-1 shapes `implicit::applies` to go to
//! `implicit` (GEMM over shifted views of the padded input), and the rest are lowered to GEMM
//! here through im2col, a chunk of samples per product. Lowered work is split over chunks;
//! reductions over the batch sum the chunks in a fixed order, so results do not depend on the
//! thread count. The mean patch is computed here for all three.

use super::epilogue::{Epilogue, Outputs};
use super::par_zeroed;
use super::window::Window2d;
use super::{implicit, winograd};
use crate::gemm::{gemm, Mat};
use crate::scratch::with_buffer;
use ndarray::{Array1, Array4, ArrayView1, ArrayView4, Axis};
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

/// Everything about one convolution's shapes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub group: usize,
    /// The kernel's window over each input plane.
    pub window: Window2d,
}

impl ConvGeometry {
    /// Input channels per group times the kernel area: the length of one patch.
    pub fn patch_len(&self) -> usize {
        self.c_in / self.group * self.window.kh * self.window.kw
    }

    /// Visits every output row of every patch element of group `g`: the patch element (the row
    /// of `im2col`'s matrix), the input channel, the output row, the input row it reads (None in
    /// the padding), and the output columns that read inside the input with their offset (as
    /// `WindowAxis::inside` gives them).
    fn for_each_patch_row(
        &self,
        g: usize,
        mut visit: impl FnMut(usize, usize, usize, Option<usize>, &Range<usize>, isize),
    ) {
        let cg = self.c_in / self.group;
        let Window2d { kh, kw, out, .. } = self.window;
        let (rows, columns) = self.window.axes();
        for c in 0..cg {
            for i in 0..kh {
                for j in 0..kw {
                    let element = (c * kh + i) * kw + j;
                    let (inside, off) = columns.inside(j);
                    for oy in 0..out.0 {
                        visit(element, g * cg + c, oy, rows.input(oy, i), &inside, off);
                    }
                }
            }
        }
    }

    /// Writes the patches of group `g` of one sample `x` into `cols`, a [patch_len, ld] row-major
    /// matrix: row r gets the sample's ho·wo values of patch element r from `cols[r·ld]` on, so
    /// the patches of several samples can sit side by side.
    fn im2col(&self, x: &[f32], g: usize, cols: &mut [f32], ld: usize) {
        let Window2d { h, w, stride, .. } = self.window;
        let wo = self.window.out.1;
        self.for_each_patch_row(g, |element, channel, oy, y, inside, off| {
            let out = &mut cols[element * ld + oy * wo..][..wo];
            let Some(y) = y else {
                out.fill(0.0);
                return;
            };
            let src = &x[(channel * h + y) * w..][..w];
            out[..inside.start].fill(0.0);
            out[inside.end..].fill(0.0);
            let first = ((inside.start * stride.1) as isize + off) as usize;
            let out = &mut out[inside.clone()];
            if stride.1 == 1 {
                out.copy_from_slice(&src[first..][..out.len()]);
            } else {
                let src = src[first..].iter().step_by(stride.1);
                out.iter_mut().zip(src).for_each(|(o, v)| *o = *v);
            }
        });
    }

    /// Adds the patch gradients of group `g` of one sample, laid out as `im2col` writes them,
    /// back into that sample's input gradient `dx`.
    fn col2im(&self, cols: &[f32], ld: usize, g: usize, dx: &mut [f32]) {
        let Window2d { h, w, stride, .. } = self.window;
        let wo = self.window.out.1;
        self.for_each_patch_row(g, |element, channel, oy, y, inside, off| {
            let Some(y) = y else {
                return;
            };
            let at = element * ld + oy * wo;
            let first = ((inside.start * stride.1) as isize + off) as usize;
            let dst = dx[(channel * h + y) * w..][..w][first..]
                .iter_mut()
                .step_by(stride.1);
            dst.zip(&cols[at + inside.start..at + inside.end])
                .for_each(|(d, v)| *d += v);
        });
    }

    /// The mean patch of the NCHW batch `x` over samples, groups and output positions: the
    /// average of `im2col`'s columns, with the padding's zeros.
    fn mean_patch(&self, x: &[f32]) -> Array1<f32> {
        let Window2d {
            h, w, stride, out, ..
        } = self.window;
        // Patches are linear in the input, so the batch is summed first, in sample order.
        let plane = h * w;
        let sample_len = self.c_in * plane;
        let mut total = vec![0.0f32; sample_len];
        total.par_chunks_mut(plane).enumerate().for_each(|(c, t)| {
            for xb in x.chunks_exact(sample_len) {
                t.iter_mut()
                    .zip(&xb[c * plane..][..plane])
                    .for_each(|(a, v)| *a += v);
            }
        });
        let mut sums = Array1::<f32>::zeros(self.patch_len());
        for g in 0..self.group {
            self.for_each_patch_row(g, |element, channel, _, y, inside, off| {
                let Some(y) = y else {
                    return;
                };
                let first = ((inside.start * stride.1) as isize + off) as usize;
                let row = &total[(channel * h + y) * w..][..w];
                sums[element] += row[first..]
                    .iter()
                    .step_by(stride.1)
                    .take(inside.len())
                    .sum::<f32>();
            });
        }
        sums / (self.batch * self.group * out.0 * out.1) as f32
    }
}

/// Values of lowered patches per product: several samples side by side make a product wide
/// enough to run GEMM at full speed, while the patches (and GEMM's packed copy of them) still
/// fit in a core's L2 cache.
const LOWERED_VALUES: usize = 1 << 18;
/// The most samples lowered into one product, so a batch still splits between threads.
const MAX_CHUNK: usize = 16;

impl ConvGeometry {
    /// Samples lowered into one product. It depends on the shapes only, so batch sums are the
    /// same on any number of threads.
    fn chunk(&self) -> usize {
        let per_sample = self.patch_len() * self.window.out.0 * self.window.out.1;
        (LOWERED_VALUES / per_sample.max(1)).clamp(1, MAX_CHUNK)
    }
}

thread_local! {
    /// Each thread's lowering buffer.
    static LOWERED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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
    if winograd::pays_off(geo) {
        winograd::forward(geo, xs, w, bias.as_deref(), &epilogue, out);
    } else if implicit::applies(geo) {
        implicit::forward(geo, xs, w, bias.as_deref(), &epilogue, out);
    } else {
        lowered_forward(geo, xs, w, bias.as_deref(), &epilogue, out);
    }
    Convolved {
        y,
        argmax,
        mean_patch: mean_patch.then(|| geo.mean_patch(xs)),
        plane_sums,
    }
}

/// The forward pass through im2col and one GEMM per chunk of samples and group.
fn lowered_forward(
    geo: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: &Epilogue,
    out: Outputs,
) {
    let p = geo.window.out.0 * geo.window.out.1;
    let k = geo.patch_len();
    let mg = geo.c_out / geo.group;
    let sample_len = geo.c_in * geo.window.h * geo.window.w;
    let out_len = geo.c_out * p;
    let chunk_len = geo.chunk();
    epilogue.produce_blocks(out, (chunk_len * geo.c_out, p), |chunk, ys| {
        let samples = ys.len() / out_len.max(1);
        let xs = &x[chunk * chunk_len * sample_len..][..samples * sample_len];
        let n = samples * p;
        with_buffer(&LOWERED, k * n + mg * n, |scratch| {
            let (cols, prod) = scratch.split_at_mut(k * n);
            for g in 0..geo.group {
                for (b, xb) in xs.chunks_exact(sample_len).enumerate() {
                    geo.im2col(xb, g, &mut cols[b * p..], n);
                }
                let wg = Mat::new(&w[g * mg * k..][..mg * k], mg, k);
                gemm(1.0, wg, Mat::new(cols, k, n), 0.0, prod);
                for (b, yb) in ys.chunks_exact_mut(out_len).enumerate() {
                    for (m, plane) in yb[g * mg * p..][..mg * p].chunks_exact_mut(p).enumerate() {
                        let shift = bias.map_or(0.0, |bias| bias[g * mg + m]);
                        let src = &prod[m * n + b * p..][..p];
                        plane.iter_mut().zip(src).for_each(|(o, v)| *o = v + shift);
                    }
                }
            }
        });
    });
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
    let k = geo.patch_len();
    let mg = geo.c_out / geo.group;
    let x = x.as_standard_layout();
    let dy = dy.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let dys = dy.as_slice().expect("standard layout");
    let sample_len = geo.c_in * geo.window.h * geo.window.w;
    let out_len = geo.c_out * p;

    // One chunk of samples: its partial weight gradient, and its input gradients written into
    // `dx` (the chunk's rows of the full dx) when that is wanted.
    let chunk_len = geo.chunk();
    let chunk = |chunk: usize, mut dx: Option<&mut [f32]>| -> Vec<f32> {
        let first = chunk * chunk_len;
        let samples = chunk_len.min(geo.batch - first);
        let xs = &xs[first * sample_len..][..samples * sample_len];
        let dys = &dys[first * out_len..][..samples * out_len];
        let n = samples * p;
        let mut dw = vec![0.0f32; geo.c_out * k];
        with_buffer(&LOWERED, k * n + mg * n, |scratch| {
            let (cols, dyg) = scratch.split_at_mut(k * n);
            for g in 0..geo.group {
                for (b, (xb, dyb)) in xs
                    .chunks_exact(sample_len)
                    .zip(dys.chunks_exact(out_len))
                    .enumerate()
                {
                    geo.im2col(xb, g, &mut cols[b * p..], n);
                    for (m, plane) in dyb[g * mg * p..][..mg * p].chunks_exact(p).enumerate() {
                        dyg[m * n + b * p..][..p].copy_from_slice(plane);
                    }
                }
                let dyg = Mat::new(dyg, mg, n);
                let dwg = &mut dw[g * mg * k..][..mg * k];
                gemm(1.0, dyg, Mat::new(cols, k, n).t(), 0.0, dwg);
                if let Some(dx) = dx.as_deref_mut() {
                    let wg = Mat::new(&w[g * mg * k..][..mg * k], mg, k);
                    gemm(1.0, wg.t(), dyg, 0.0, cols);
                    for (b, dxb) in dx.chunks_exact_mut(sample_len).enumerate() {
                        geo.col2im(&cols[b * p..], n, g, dxb);
                    }
                }
            }
        });
        dw
    };

    let mut dx = want_dx.then(|| {
        par_zeroed(
            (geo.batch, geo.c_in, geo.window.h, geo.window.w),
            sample_len,
            |_, _| {},
        )
    });
    if winograd::pays_off(geo) {
        if let Some(dx) = dx.as_mut() {
            winograd::input_gradient(geo, w, dys, dx.as_slice_mut().expect("fresh array"));
        }
        let dw = winograd::weight_gradient(geo, xs, dys);
        return (dx, dw, channel_sums(dys, geo.c_out, p));
    }
    if implicit::applies(geo) {
        if let Some(dx) = dx.as_mut() {
            implicit::input_gradient(geo, w, dys, dx.as_slice_mut().expect("fresh array"));
        }
        let dw = implicit::weight_gradient(geo, xs, dys);
        return (dx, dw, channel_sums(dys, geo.c_out, p));
    }
    let partial: Vec<Vec<f32>> = match dx.as_mut() {
        Some(dx) => dx
            .axis_chunks_iter_mut(Axis(0), chunk_len)
            .into_par_iter()
            .enumerate()
            .map(|(i, mut dxc)| chunk(i, Some(dxc.as_slice_mut().expect("fresh array"))))
            .collect(),
        None => (0..geo.batch.div_ceil(chunk_len))
            .into_par_iter()
            .map(|i| chunk(i, None))
            .collect(),
    };
    // Summed in chunk order, whatever thread computed each part.
    let mut dw = vec![0.0f32; geo.c_out * k];
    for pw in &partial {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
    }
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
    use super::*;
    use crate::kernels::elementwise::Activation;
    use crate::kernels::pool::max_forward;
    use crate::kernels::testing::{conv_reference, wave};
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
        if winograd::pays_off(geo) {
            "winograd"
        } else if implicit::applies(geo) {
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
