//! A convolution's shapes, and the patch walks every way of computing one shares: im2col and
//! its adjoint, and the mean patch RLS needs.

use crate::window::Window2d;
use ndarray::Array1;
use rayon::prelude::*;
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
    pub(super) fn im2col(&self, x: &[f32], g: usize, cols: &mut [f32], ld: usize) {
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
    pub(super) fn col2im(&self, cols: &[f32], ld: usize, g: usize, dx: &mut [f32]) {
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
    pub(super) fn mean_patch(&self, x: &[f32]) -> Array1<f32> {
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
