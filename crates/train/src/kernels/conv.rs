//! 2-D convolution (NCHW) with stride, padding, dilation and groups: forward, backward, and the
//! mean input patch RLS needs.
//!
//! Lowered to GEMM through im2col per sample. Work is split over samples; reductions over the
//! batch run in fixed chunks and a fixed order, so results do not depend on the thread count.

use crate::gemm::{gemm, Mat};
use ndarray::{Array1, Array4, ArrayView1, ArrayView4, Axis};
use rayon::prelude::*;

/// Everything about one convolution's shapes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub group: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    /// (top, left) padding; the bottom/right padding only shows in `out`.
    pub pad: (usize, usize),
    pub out: (usize, usize),
}

impl ConvGeometry {
    /// Input channels per group times the kernel area: the length of one patch.
    pub fn patch_len(&self) -> usize {
        self.c_in / self.group * self.kh * self.kw
    }

    /// Fills `cols` ([patch_len, positions], row-major) with the patches of group `g` of one
    /// sample.
    fn im2col(&self, x: &[f32], g: usize, cols: &mut [f32]) {
        let cg = self.c_in / self.group;
        let (ho, wo) = self.out;
        let p = ho * wo;
        for c in 0..cg {
            let plane = &x[(g * cg + c) * self.h * self.w..][..self.h * self.w];
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let row = &mut cols[((c * self.kh + i) * self.kw + j) * p..][..p];
                    for oy in 0..ho {
                        let y = (oy * self.stride.0 + i * self.dilation.0) as isize
                            - self.pad.0 as isize;
                        let out_row = &mut row[oy * wo..][..wo];
                        if y < 0 || y >= self.h as isize {
                            out_row.fill(0.0);
                            continue;
                        }
                        let src = &plane[y as usize * self.w..][..self.w];
                        for (ox, o) in out_row.iter_mut().enumerate() {
                            let xx = (ox * self.stride.1 + j * self.dilation.1) as isize
                                - self.pad.1 as isize;
                            *o = if xx < 0 || xx >= self.w as isize {
                                0.0
                            } else {
                                src[xx as usize]
                            };
                        }
                    }
                }
            }
        }
    }

    /// Adds the patch gradients `cols` of group `g` back into one sample's input gradient.
    fn col2im(&self, cols: &[f32], g: usize, dx: &mut [f32]) {
        let cg = self.c_in / self.group;
        let (ho, wo) = self.out;
        let p = ho * wo;
        for c in 0..cg {
            let plane = &mut dx[(g * cg + c) * self.h * self.w..][..self.h * self.w];
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let row = &cols[((c * self.kh + i) * self.kw + j) * p..][..p];
                    for oy in 0..ho {
                        let y = (oy * self.stride.0 + i * self.dilation.0) as isize
                            - self.pad.0 as isize;
                        if y < 0 || y >= self.h as isize {
                            continue;
                        }
                        let dst = &mut plane[y as usize * self.w..][..self.w];
                        for (ox, v) in row[oy * wo..][..wo].iter().enumerate() {
                            let xx = (ox * self.stride.1 + j * self.dilation.1) as isize
                                - self.pad.1 as isize;
                            if xx >= 0 && xx < self.w as isize {
                                dst[xx as usize] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Samples per chunk in batch reductions: fixed, so sums are the same on any number of threads.
const CHUNK: usize = 4;

/// y = conv(x, w) + b. Also returns the mean patch over samples, groups and positions when
/// `mean_patch` is set (the RLS input average).
pub fn forward(
    geo: &ConvGeometry,
    x: ArrayView4<f32>,
    w: &[f32],
    bias: Option<ArrayView1<f32>>,
    mean_patch: bool,
) -> (Array4<f32>, Option<Array1<f32>>) {
    let (ho, wo) = geo.out;
    let p = ho * wo;
    let k = geo.patch_len();
    let mg = geo.c_out / geo.group;
    let x = x.as_standard_layout();
    let mut y = Array4::<f32>::zeros((geo.batch, geo.c_out, ho, wo));
    let sample_len = geo.c_in * geo.h * geo.w;
    let xs = x.as_slice().expect("standard layout");
    let sums: Vec<Vec<f32>> = y
        .axis_chunks_iter_mut(Axis(0), CHUNK)
        .into_par_iter()
        .enumerate()
        .map(|(chunk, mut ys)| {
            let mut cols = vec![0.0f32; k * p];
            let mut sum = if mean_patch {
                vec![0.0f32; k]
            } else {
                Vec::new()
            };
            for (i, mut yb) in ys.axis_iter_mut(Axis(0)).enumerate() {
                let b = chunk * CHUNK + i;
                let xb = &xs[b * sample_len..][..sample_len];
                let yb = yb.as_slice_mut().expect("fresh array");
                for g in 0..geo.group {
                    geo.im2col(xb, g, &mut cols);
                    if mean_patch {
                        for (s, row) in sum.iter_mut().zip(cols.chunks_exact(p)) {
                            *s += row.iter().sum::<f32>();
                        }
                    }
                    let wg = Mat::new(&w[g * mg * k..][..mg * k], mg, k);
                    gemm(
                        1.0,
                        wg,
                        Mat::new(&cols, k, p),
                        0.0,
                        &mut yb[g * mg * p..][..mg * p],
                    );
                }
                if let Some(bias) = &bias {
                    for (m, plane) in yb.chunks_exact_mut(p).enumerate() {
                        plane.iter_mut().for_each(|v| *v += bias[m]);
                    }
                }
            }
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
    let (ho, wo) = geo.out;
    let p = ho * wo;
    let k = geo.patch_len();
    let mg = geo.c_out / geo.group;
    let x = x.as_standard_layout();
    let dy = dy.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let dys = dy.as_slice().expect("standard layout");
    let sample_len = geo.c_in * geo.h * geo.w;
    let out_len = geo.c_out * p;

    // Weight gradient: per chunk of samples, then summed in chunk order.
    let chunks: Vec<usize> = (0..geo.batch.div_ceil(CHUNK)).collect();
    let partial: Vec<Vec<f32>> = chunks
        .par_iter()
        .map(|&chunk| {
            let mut dw = vec![0.0f32; geo.c_out * k];
            let mut cols = vec![0.0f32; k * p];
            for b in chunk * CHUNK..((chunk + 1) * CHUNK).min(geo.batch) {
                let xb = &xs[b * sample_len..][..sample_len];
                let dyb = &dys[b * out_len..][..out_len];
                for g in 0..geo.group {
                    geo.im2col(xb, g, &mut cols);
                    let dyg = Mat::new(&dyb[g * mg * p..][..mg * p], mg, p);
                    gemm(
                        1.0,
                        dyg,
                        Mat::new(&cols, k, p).t(),
                        1.0,
                        &mut dw[g * mg * k..][..mg * k],
                    );
                }
            }
            dw
        })
        .collect();
    let mut dw = vec![0.0f32; geo.c_out * k];
    for part in &partial {
        dw.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    let mut db = vec![0.0f32; geo.c_out];
    for b in 0..geo.batch {
        for (m, plane) in dys[b * out_len..][..out_len].chunks_exact(p).enumerate() {
            db[m] += plane.iter().sum::<f32>();
        }
    }

    let dx = want_dx.then(|| {
        let mut dx = Array4::<f32>::zeros((geo.batch, geo.c_in, geo.h, geo.w));
        dx.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(b, mut dxb)| {
                let dxb = dxb.as_slice_mut().expect("fresh array");
                let dyb = &dys[b * out_len..][..out_len];
                let mut cols = vec![0.0f32; k * p];
                for g in 0..geo.group {
                    let wg = Mat::new(&w[g * mg * k..][..mg * k], mg, k);
                    let dyg = Mat::new(&dyb[g * mg * p..][..mg * p], mg, p);
                    gemm(1.0, wg.t(), dyg, 0.0, &mut cols);
                    geo.col2im(&cols, g, dxb);
                }
            });
        dx
    });
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
            batch: 5,
            c_in: 4,
            h,
            w,
            c_out: 6,
            group,
            kh,
            kw,
            stride: (stride, stride),
            dilation: (dilation, dilation),
            pad: (pad, pad),
            out: (out(h, kh), out(w, kw)),
        }
    }

    fn wave(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.7123).sin()).collect()
    }

    /// The definition, one multiply at a time.
    fn naive(geo: &ConvGeometry, x: &Array4<f32>, w: &[f32], b: &[f32]) -> Array4<f32> {
        let (cg, mg) = (geo.c_in / geo.group, geo.c_out / geo.group);
        Array4::from_shape_fn(
            (geo.batch, geo.c_out, geo.out.0, geo.out.1),
            |(n, m, oy, ox)| {
                let g = m / mg;
                let mut acc = b[m];
                for c in 0..cg {
                    for i in 0..geo.kh {
                        for j in 0..geo.kw {
                            let y = (oy * geo.stride.0 + i * geo.dilation.0) as isize
                                - geo.pad.0 as isize;
                            let xx = (ox * geo.stride.1 + j * geo.dilation.1) as isize
                                - geo.pad.1 as isize;
                            if y >= 0 && xx >= 0 && (y as usize) < geo.h && (xx as usize) < geo.w {
                                acc += w[((m * cg + c) * geo.kh + i) * geo.kw + j]
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
        for (group, stride, dilation, pad) in
            [(1, 1, 1, 0), (2, 2, 1, 1), (1, 1, 2, 2), (2, 3, 2, 1)]
        {
            let geo = geometry(group, stride, dilation, pad);
            let x = Array::from_shape_vec(
                (geo.batch, geo.c_in, geo.h, geo.w),
                wave(5 * 4 * 7 * 6, 1.0),
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
        for (group, stride, dilation, pad) in [(1, 1, 1, 1), (2, 2, 2, 1)] {
            let geo = geometry(group, stride, dilation, pad);
            let x = Array::from_shape_vec(
                (geo.batch, geo.c_in, geo.h, geo.w),
                wave(5 * 4 * 7 * 6, 1.0),
            )
            .unwrap();
            let w = wave(geo.c_out * geo.patch_len(), 2.0);
            let b = wave(geo.c_out, 3.0);
            let r = Array::from_shape_vec(
                (geo.batch, geo.c_out, geo.out.0, geo.out.1),
                wave(geo.batch * geo.c_out * geo.out.0 * geo.out.1, 4.0),
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
            for idx in [[0, 0, 0, 0], [1, 3, 2, 5], [4, 1, 6, 0], [2, 2, 3, 3]] {
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
        let x = Array4::<f32>::ones((geo.batch, geo.c_in, geo.h, geo.w));
        let w = vec![0.0; geo.c_out * geo.patch_len()];
        let (_, mean) = forward(&geo, x.view(), &w, None, true);
        let mean = mean.unwrap();
        // Kernel row 0 sees the top padding in the first output row only: (ho-1)/ho of ones.
        let (ho, wo) = geo.out;
        let top_left = mean[0];
        let expected = ((ho - 1) * (wo - 1)) as f32 / (ho * wo) as f32;
        assert!(
            (top_left - expected).abs() < 1e-6,
            "{top_left} vs {expected}"
        );
        assert_eq!(mean.len(), geo.patch_len());
    }
}
