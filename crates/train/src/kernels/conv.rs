//! 2-D convolution (NCHW) with stride, padding, dilation and groups: forward, backward, and the
//! mean input patch RLS needs.
//!
//! Lowered to GEMM through im2col, a chunk of samples per product. Work is split over chunks;
//! reductions over the batch sum the chunks in a fixed order, so results do not depend on the
//! thread count.

use super::window::Window2d;
use crate::gemm::{gemm, Mat};
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

    /// Visits every output row of every patch element of group `g`, in `im2col`'s layout: the
    /// input channel, where the row starts in a lowered matrix of leading dimension `ld`, the
    /// input row it reads (None in the padding), and the output columns that read inside the
    /// input with their offset (as `WindowAxis::inside` gives them).
    fn for_each_patch_row(
        &self,
        g: usize,
        ld: usize,
        mut visit: impl FnMut(usize, usize, Option<usize>, &Range<usize>, isize),
    ) {
        let cg = self.c_in / self.group;
        let Window2d { kh, kw, out, .. } = self.window;
        let (rows, columns) = self.window.axes();
        for c in 0..cg {
            for i in 0..kh {
                for j in 0..kw {
                    let start = ((c * kh + i) * kw + j) * ld;
                    let (inside, off) = columns.inside(j);
                    for oy in 0..out.0 {
                        visit(
                            g * cg + c,
                            start + oy * out.1,
                            rows.input(oy, i),
                            &inside,
                            off,
                        );
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
        self.for_each_patch_row(g, ld, |channel, at, y, inside, off| {
            let out = &mut cols[at..][..wo];
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
        self.for_each_patch_row(g, ld, |channel, at, y, inside, off| {
            let Some(y) = y else {
                return;
            };
            let first = ((inside.start * stride.1) as isize + off) as usize;
            let dst = dx[(channel * h + y) * w..][..w][first..]
                .iter_mut()
                .step_by(stride.1);
            dst.zip(&cols[at + inside.start..at + inside.end])
                .for_each(|(d, v)| *d += v);
        });
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
    /// Each thread's lowering buffer, kept between calls: allocating megabytes per call costs
    /// page faults on every training step.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` values of this thread's scratch buffer, whose contents are arbitrary.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Only a kernel running inside another's call could find it taken; it gets its own.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// y = conv(x, w) + b. Also returns the mean patch over samples, groups and positions when
/// `mean_patch` is set (the RLS input average).
pub fn forward(
    geo: &ConvGeometry,
    x: ArrayView4<f32>,
    w: &[f32],
    bias: Option<ArrayView1<f32>>,
    mean_patch: bool,
) -> (Array4<f32>, Option<Array1<f32>>) {
    let (ho, wo) = geo.window.out;
    let p = ho * wo;
    let k = geo.patch_len();
    let mg = geo.c_out / geo.group;
    let x = x.as_standard_layout();
    let mut y = Array4::<f32>::zeros((geo.batch, geo.c_out, ho, wo));
    let sample_len = geo.c_in * geo.window.h * geo.window.w;
    let out_len = geo.c_out * p;
    let xs = x.as_slice().expect("standard layout");
    let chunk_len = geo.chunk();
    let sums: Vec<Vec<f32>> = y
        .axis_chunks_iter_mut(Axis(0), chunk_len)
        .into_par_iter()
        .enumerate()
        .map(|(chunk, mut ys)| {
            let ys = ys.as_slice_mut().expect("fresh array");
            let first = chunk * chunk_len;
            let samples = chunk_len.min(geo.batch - first);
            let xs = &xs[first * sample_len..][..samples * sample_len];
            let n = samples * p;
            let mut sum = vec![0.0f32; if mean_patch { k } else { 0 }];
            with_scratch(k * n + mg * n, |scratch| {
                let (cols, prod) = scratch.split_at_mut(k * n);
                for g in 0..geo.group {
                    for (b, xb) in xs.chunks_exact(sample_len).enumerate() {
                        geo.im2col(xb, g, &mut cols[b * p..], n);
                    }
                    if mean_patch {
                        for (s, row) in sum.iter_mut().zip(cols.chunks_exact(n)) {
                            *s += row.iter().sum::<f32>();
                        }
                    }
                    let wg = Mat::new(&w[g * mg * k..][..mg * k], mg, k);
                    gemm(1.0, wg, Mat::new(cols, k, n), 0.0, prod);
                    for (b, yb) in ys.chunks_exact_mut(out_len).enumerate() {
                        for (m, plane) in yb[g * mg * p..][..mg * p].chunks_exact_mut(p).enumerate()
                        {
                            let shift = bias.as_ref().map_or(0.0, |bias| bias[g * mg + m]);
                            let src = &prod[m * n + b * p..][..p];
                            plane.iter_mut().zip(src).for_each(|(o, v)| *o = v + shift);
                        }
                    }
                }
            });
            sum
        })
        .collect();
    let mean = mean_patch.then(|| {
        let mut total = Array1::<f32>::zeros(k);
        for s in &sums {
            total.iter_mut().zip(s).for_each(|(t, v)| *t += v);
        }
        total / (geo.batch * geo.group * p) as f32
    });
    (y, mean)
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

    // One chunk of samples: its partial weight and bias gradients, and its input gradients
    // written into `dx` (the chunk's rows of the full dx) when that is wanted.
    let chunk_len = geo.chunk();
    let chunk = |chunk: usize, mut dx: Option<&mut [f32]>| -> (Vec<f32>, Vec<f32>) {
        let first = chunk * chunk_len;
        let samples = chunk_len.min(geo.batch - first);
        let xs = &xs[first * sample_len..][..samples * sample_len];
        let dys = &dys[first * out_len..][..samples * out_len];
        let n = samples * p;
        let mut dw = vec![0.0f32; geo.c_out * k];
        let mut db = vec![0.0f32; geo.c_out];
        with_scratch(k * n + mg * n, |scratch| {
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
                        db[g * mg + m] += plane.iter().sum::<f32>();
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
        (dw, db)
    };

    let mut dx =
        want_dx.then(|| Array4::<f32>::zeros((geo.batch, geo.c_in, geo.window.h, geo.window.w)));
    let partial: Vec<(Vec<f32>, Vec<f32>)> = match dx.as_mut() {
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
    let mut db = vec![0.0f32; geo.c_out];
    for (pw, pb) in &partial {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    fn geometry(group: usize, stride: usize, dilation: usize, pad: usize) -> ConvGeometry {
        let (h, w, kh, kw) = (7, 6, 3, 2);
        let out = |n: usize, k: usize| (n + 2 * pad - ((k - 1) * dilation + 1)) / stride + 1;
        ConvGeometry {
            // Two chunks, the second one partial.
            batch: MAX_CHUNK + 3,
            c_in: 4,
            c_out: 6,
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

    fn wave(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.7123).sin()).collect()
    }

    /// The definition, one multiply at a time.
    fn naive(geo: &ConvGeometry, x: &Array4<f32>, w: &[f32], b: &[f32]) -> Array4<f32> {
        let (cg, mg) = (geo.c_in / geo.group, geo.c_out / geo.group);
        Array4::from_shape_fn(
            (geo.batch, geo.c_out, geo.window.out.0, geo.window.out.1),
            |(n, m, oy, ox)| {
                let g = m / mg;
                let mut acc = b[m];
                for c in 0..cg {
                    for i in 0..geo.window.kh {
                        for j in 0..geo.window.kw {
                            let y = (oy * geo.window.stride.0 + i * geo.window.dilation.0) as isize
                                - geo.window.pad.0 as isize;
                            let xx = (ox * geo.window.stride.1 + j * geo.window.dilation.1)
                                as isize
                                - geo.window.pad.1 as isize;
                            if y >= 0
                                && xx >= 0
                                && (y as usize) < geo.window.h
                                && (xx as usize) < geo.window.w
                            {
                                acc += w[((m * cg + c) * geo.window.kh + i) * geo.window.kw + j]
                                    * x[[n, g * cg + c, y as usize, xx as usize]];
                            }
                        }
                    }
                }
                acc
            },
        )
    }

    #[test]
    fn forward_matches_the_definition() {
        for (group, stride, dilation, pad) in [
            (1, 1, 1, 0),
            (2, 2, 1, 1),
            (1, 1, 2, 2),
            (2, 3, 2, 1),
            (1, 2, 1, 3),
        ] {
            let geo = geometry(group, stride, dilation, pad);
            let x = Array::from_shape_vec(
                (geo.batch, geo.c_in, geo.window.h, geo.window.w),
                wave(geo.batch * 4 * 7 * 6, 1.0),
            )
            .unwrap();
            let w = wave(geo.c_out * geo.patch_len(), 2.0);
            let b = wave(geo.c_out, 3.0);
            let (y, _) = forward(&geo, x.view(), &w, Some(ArrayView1::from(&b)), false);
            let want = naive(&geo, &x, &w, &b);
            let diff = (&y - &want).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
            assert!(diff < 1e-5, "{geo:?}: {diff}");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (group, stride, dilation, pad) in [(1, 1, 1, 1), (2, 2, 2, 1), (1, 3, 1, 3)] {
            let geo = geometry(group, stride, dilation, pad);
            let x = Array::from_shape_vec(
                (geo.batch, geo.c_in, geo.window.h, geo.window.w),
                wave(geo.batch * 4 * 7 * 6, 1.0),
            )
            .unwrap();
            let w = wave(geo.c_out * geo.patch_len(), 2.0);
            let b = wave(geo.c_out, 3.0);
            let r = Array::from_shape_vec(
                (geo.batch, geo.c_out, geo.window.out.0, geo.window.out.1),
                wave(
                    geo.batch * geo.c_out * geo.window.out.0 * geo.window.out.1,
                    4.0,
                ),
            )
            .unwrap();
            // loss = Σ y · r, so dy = r.
            let loss = |x: &Array4<f32>, w: &[f32], b: &[f32]| -> f64 {
                let y = naive(&geo, x, w, b);
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
        let geo = geometry(1, 1, 1, 1);
        let x = Array4::<f32>::ones((geo.batch, geo.c_in, geo.window.h, geo.window.w));
        let w = vec![0.0; geo.c_out * geo.patch_len()];
        let (_, mean) = forward(&geo, x.view(), &w, None, true);
        let mean = mean.unwrap();
        // Kernel row 0 sees the top padding in the first output row only: (ho-1)/ho of ones.
        let (ho, wo) = geo.window.out;
        let top_left = mean[0];
        let expected = ((ho - 1) * (wo - 1)) as f32 / (ho * wo) as f32;
        assert!(
            (top_left - expected).abs() < 1e-6,
            "{top_left} vs {expected}"
        );
        assert_eq!(mean.len(), geo.patch_len());
    }
}
