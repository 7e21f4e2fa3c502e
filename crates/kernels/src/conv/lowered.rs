//! The general convolution: each chunk of samples lowered through im2col into one matrix of
//! patches per group, multiplied by the weights with GEMM. Work is split over chunks fixed by
//! the shapes; the weight gradient sums the chunks in order, so results do not depend on the
//! thread count.

use super::geometry::ConvGeometry;
use crate::epilogue::{Epilogue, Outputs};
use crate::gemm::{gemm, Mat};
use crate::scratch::with_buffer;
use rayon::prelude::*;
use std::cell::RefCell;

/// Values of lowered patches per product: several samples side by side make a product wide
/// enough to run GEMM at full speed, while the patches (and GEMM's packed copy of them) still
/// fit in a core's L2 cache.
const LOWERED_VALUES: usize = 1 << 18;
/// The most samples lowered into one product, so a batch still splits between threads.
pub(super) const MAX_CHUNK: usize = 16;

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

/// The forward pass through im2col and one GEMM per chunk of samples and group.
pub(super) fn forward(
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

/// The samples of chunk `i`: (first, count).
fn chunk_samples(geo: &ConvGeometry, i: usize) -> (usize, usize) {
    let first = i * geo.chunk();
    (first, geo.chunk().min(geo.batch - first))
}

/// Copies group `g`'s planes of the output gradients `dy` of a chunk's samples into `dyg`, an
/// [mg, n] row-major matrix with the samples side by side, as `im2col` lays out their patches.
fn gather_output_gradient(geo: &ConvGeometry, g: usize, dy: &[f32], n: usize, dyg: &mut [f32]) {
    let p = geo.window.out.0 * geo.window.out.1;
    let mg = geo.c_out / geo.group;
    for (b, dyb) in dy.chunks_exact(geo.c_out * p).enumerate() {
        for (m, plane) in dyb[g * mg * p..][..mg * p].chunks_exact(p).enumerate() {
            dyg[m * n + b * p..][..p].copy_from_slice(plane);
        }
    }
}

/// Adds the input gradient for the output gradient `dy` into `dx` (zeroed by the caller): per
/// chunk and group, wᵀ · dy, folded back by `col2im`.
pub(super) fn input_gradient(geo: &ConvGeometry, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    let p = geo.window.out.0 * geo.window.out.1;
    let k = geo.patch_len();
    let mg = geo.c_out / geo.group;
    let sample_len = geo.c_in * geo.window.h * geo.window.w;
    let out_len = geo.c_out * p;
    dx.par_chunks_mut((geo.chunk() * sample_len).max(1))
        .enumerate()
        .for_each(|(i, dx)| {
            let (first, samples) = chunk_samples(geo, i);
            let dys = &dy[first * out_len..][..samples * out_len];
            let n = samples * p;
            with_buffer(&LOWERED, k * n + mg * n, |scratch| {
                let (cols, dyg) = scratch.split_at_mut(k * n);
                for g in 0..geo.group {
                    gather_output_gradient(geo, g, dys, n, dyg);
                    let dyg = Mat::new(dyg, mg, n);
                    let wg = Mat::new(&w[g * mg * k..][..mg * k], mg, k);
                    gemm(1.0, wg.t(), dyg, 0.0, cols);
                    for (b, dxb) in dx.chunks_exact_mut(sample_len).enumerate() {
                        geo.col2im(&cols[b * p..], n, g, dxb);
                    }
                }
            });
        });
}

/// dw (OIHW) for NCHW `x` and `dy`: per chunk and group, dy · patchesᵀ, the chunks' parts
/// summed in chunk order.
pub(super) fn weight_gradient(geo: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let p = geo.window.out.0 * geo.window.out.1;
    let k = geo.patch_len();
    let mg = geo.c_out / geo.group;
    let sample_len = geo.c_in * geo.window.h * geo.window.w;
    let out_len = geo.c_out * p;
    let partial: Vec<Vec<f32>> = (0..geo.batch.div_ceil(geo.chunk()))
        .into_par_iter()
        .map(|i| {
            let (first, samples) = chunk_samples(geo, i);
            let xs = &x[first * sample_len..][..samples * sample_len];
            let dys = &dy[first * out_len..][..samples * out_len];
            let n = samples * p;
            let mut dw = vec![0.0f32; geo.c_out * k];
            with_buffer(&LOWERED, k * n + mg * n, |scratch| {
                let (cols, dyg) = scratch.split_at_mut(k * n);
                for g in 0..geo.group {
                    for (b, xb) in xs.chunks_exact(sample_len).enumerate() {
                        geo.im2col(xb, g, &mut cols[b * p..], n);
                    }
                    gather_output_gradient(geo, g, dys, n, dyg);
                    let dyg = Mat::new(dyg, mg, n);
                    let dwg = &mut dw[g * mg * k..][..mg * k];
                    gemm(1.0, dyg, Mat::new(cols, k, n).t(), 0.0, dwg);
                }
            });
            dw
        })
        .collect();
    // Summed in chunk order, whatever thread computed each part.
    let mut dw = vec![0.0f32; geo.c_out * k];
    for pw in &partial {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
    }
    dw
}
