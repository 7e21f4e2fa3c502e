//! Stride-1 convolutions as implicit GEMM: each sample is copied once into zero-padded planes,
//! and row (channel, tap) of its patch matrix is those planes shifted by the tap
//! (`ShiftedRows`), so no patch is ever copied out. `conv` sends it the stride-1 shapes that
//! `applies` to and keeps im2col for the rest.
//!
//! Outputs are computed over the padded width: an output row carries the (kw − 1)·dilation
//! columns past its end, which read on into the next row and are dropped. The input gradient is
//! the same product with the kernel flipped and transposed, over the output gradient padded by
//! the rest of the kernel; the weight gradient multiplies the output gradient, laid out over the
//! padded width with zeros in the dropped columns, by the shifted rows.
//!
//! One product per sample and group. The batch splits over the pool by samples; weight gradients
//! are summed per fixed chunk of samples, then over chunks in order, so results do not depend on
//! the thread count.

use super::geometry::ConvGeometry;
use crate::epilogue::{Epilogue, Outputs};
use crate::gemm::{gemm_shifted, gemm_shifted_t, Mat, ShiftedRows};
use crate::scratch::with_buffer;
use crate::window::Window2d;
use rayon::prelude::*;
use std::cell::RefCell;

/// Samples whose weight gradients one task sums before the chunks are summed in order.
const CHUNK: usize = 4;

thread_local! {
    /// Each thread's padded planes.
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Each thread's products over the padded width.
    static PRODUCTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether the convolution runs here: stride 1, and no padding as wide as the kernel, so that
/// the input gradient's padding (the rest of the kernel) is not negative. Empty shapes stay
/// with im2col.
pub(super) fn applies(geo: &ConvGeometry) -> bool {
    let Window2d {
        h,
        w,
        kh,
        kw,
        stride,
        dilation,
        pad,
        out,
    } = geo.window;
    let fits = |len: usize, out: usize, k: usize, d: usize, before: usize| {
        let extent = (k - 1) * d;
        // Padding after the input: out + extent − len − before, which must be in 0..=extent.
        before <= extent && out + extent >= len + before && out <= len + before
    };
    let sizes = [geo.c_in, geo.c_out, h, w, kh, kw, out.0, out.1];
    stride == (1, 1)
        && sizes.iter().all(|n| *n > 0)
        && fits(h, out.0, kh, dilation.0, pad.0)
        && fits(w, out.1, kw, dilation.1, pad.1)
}

/// A convolution over planes padded to (rows, width): `rows × width` values per channel, and
/// the products' `len` positions, (out rows − 1)·width + out columns.
#[derive(Clone, Copy)]
struct Padded {
    rows: usize,
    width: usize,
    /// (top, left) padding.
    offset: (usize, usize),
    out: (usize, usize),
}

impl Padded {
    fn plane(&self) -> usize {
        self.rows * self.width
    }

    fn len(&self) -> usize {
        (self.out.0 - 1) * self.width + self.out.1
    }

    /// The padded geometry of the forward product of `window`.
    fn forward(window: &Window2d) -> Self {
        let (eh, ew) = extents(window);
        let out = window.out;
        Padded {
            rows: out.0 + eh,
            width: out.1 + ew,
            offset: window.pad,
            out,
        }
    }

    /// The padded geometry of the input gradient's product: the output gradient padded by the
    /// rest of the kernel on each side, giving the input's size.
    fn input_gradient(window: &Window2d) -> Self {
        let (eh, ew) = extents(window);
        Padded {
            rows: window.h + eh,
            width: window.w + ew,
            offset: (eh - window.pad.0, ew - window.pad.1),
            out: (window.h, window.w),
        }
    }

    /// Where each patch row (channel, kernel row, kernel column) starts in `channels` padded
    /// planes: the tap's shift.
    fn starts(&self, window: &Window2d, channels: usize) -> Vec<usize> {
        let (kh, kw) = (window.kh, window.kw);
        let (dh, dw) = window.dilation;
        (0..channels * kh * kw)
            .map(|r| {
                let (c, i, j) = (r / (kh * kw), r / kw % kh, r % kw);
                c * self.plane() + i * dh * self.width + j * dw
            })
            .collect()
    }

    /// Copies the (h, w) planes of `src` into `dst`'s padded planes, zero around them.
    fn pad(&self, src: &[f32], (h, w): (usize, usize), dst: &mut [f32]) {
        dst.fill(0.0);
        let (top, left) = self.offset;
        for (plane, padded) in src
            .chunks_exact(h * w)
            .zip(dst.chunks_exact_mut(self.plane()))
        {
            for (row, padded) in plane
                .chunks_exact(w)
                .zip(padded[top * self.width..].chunks_exact_mut(self.width))
            {
                padded[left..][..w].copy_from_slice(row);
            }
        }
    }

    /// Writes the products of `channels` (each `len` values over the padded width) into their
    /// planes of `out`, dropping the columns past each row, plus each channel's `shift`.
    fn unpad(&self, products: &[f32], shift: impl Fn(usize) -> f32, out: &mut [f32]) {
        let (ho, wo) = self.out;
        for (c, plane) in out.chunks_exact_mut(ho * wo).enumerate() {
            let s = shift(c);
            let products = &products[c * self.len()..];
            for (oy, row) in plane.chunks_exact_mut(wo).enumerate() {
                let src = &products[oy * self.width..][..wo];
                row.iter_mut().zip(src).for_each(|(o, v)| *o = v + s);
            }
        }
    }
}

/// The kernel's extent past its first tap, in rows and columns: (k − 1)·dilation.
fn extents(window: &Window2d) -> (usize, usize) {
    (
        (window.kh - 1) * window.dilation.0,
        (window.kw - 1) * window.dilation.1,
    )
}

/// y = conv(x, w) + bias for NCHW `x` and `y` and OIHW `w`. Every value of `y` is written.
pub(super) fn forward(
    geo: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: &Epilogue,
    out: Outputs,
) {
    let window = &geo.window;
    let padded = Padded::forward(window);
    let sample_len = geo.c_in * window.h * window.w;
    let out_len = geo.c_out * window.out.0 * window.out.1;
    let starts = padded.starts(window, geo.c_in);
    let (k, mg) = (geo.patch_len(), geo.c_out / geo.group);
    let plane = window.out.0 * window.out.1;
    epilogue.produce_blocks(out, (geo.c_out, plane), |n, yb| {
        let xb = &x[n * sample_len..][..sample_len];
        with_buffer(&PADDED, geo.c_in * padded.plane(), |xp| {
            padded.pad(xb, (window.h, window.w), xp);
            with_buffer(&PRODUCTS, mg * padded.len(), |products| {
                for g in 0..geo.group {
                    let patches = ShiftedRows::new(xp, &starts[g * k..][..k], padded.len());
                    let wg = Mat::new(&w[g * mg * k..][..mg * k], mg, k);
                    gemm_shifted(1.0, wg, patches, 0.0, products);
                    let shift = |m: usize| bias.map_or(0.0, |b| b[g * mg + m]);
                    let yg = &mut yb[g * mg * plane..];
                    padded.unpad(products, shift, &mut yg[..out_len / geo.group]);
                }
            });
        });
    });
}

/// dx for NCHW `dy`: the convolution of the output gradient, padded by the rest of the kernel,
/// with the kernel flipped and its channels transposed. Every value of `dx` is written.
pub(super) fn input_gradient(geo: &ConvGeometry, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    let window = &geo.window;
    let padded = Padded::input_gradient(window);
    let (ho, wo) = window.out;
    let (cg, mg) = (geo.c_in / geo.group, geo.c_out / geo.group);
    let taps = window.kh * window.kw;
    // flipped[g][c][m][tap] = w[g·mg + m][c][last tap − tap]: one (cg × mg·taps) matrix per group.
    let mut flipped = vec![0.0f32; w.len()];
    for (g, fg) in flipped.chunks_exact_mut(cg * mg * taps).enumerate() {
        for (c, fc) in fg.chunks_exact_mut(mg * taps).enumerate() {
            for (m, fm) in fc.chunks_exact_mut(taps).enumerate() {
                let kernel = &w[((g * mg + m) * cg + c) * taps..][..taps];
                fm.iter_mut()
                    .zip(kernel.iter().rev())
                    .for_each(|(f, v)| *f = *v);
            }
        }
    }
    let starts = padded.starts(window, geo.c_out);
    let k = mg * taps;
    let in_len = geo.c_in * window.h * window.w;
    dx.par_chunks_mut(in_len.max(1))
        .zip(dy.par_chunks((geo.c_out * ho * wo).max(1)))
        .for_each(|(dxb, dyb)| {
            with_buffer(&PADDED, geo.c_out * padded.plane(), |dyp| {
                padded.pad(dyb, (ho, wo), dyp);
                with_buffer(&PRODUCTS, cg * padded.len(), |products| {
                    for g in 0..geo.group {
                        let patches = ShiftedRows::new(dyp, &starts[g * k..][..k], padded.len());
                        let fg = Mat::new(&flipped[g * cg * k..][..cg * k], cg, k);
                        gemm_shifted(1.0, fg, patches, 0.0, products);
                        let dxg = &mut dxb[g * cg * window.h * window.w..][..in_len / geo.group];
                        padded.unpad(products, |_| 0.0, dxg);
                    }
                });
            });
        });
}

/// dw (OIHW) for NCHW `x` and `dy`.
pub(super) fn weight_gradient(geo: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let window = &geo.window;
    let padded = Padded::forward(window);
    let (ho, wo) = window.out;
    let sample_len = geo.c_in * window.h * window.w;
    let out_len = geo.c_out * ho * wo;
    let starts = padded.starts(window, geo.c_in);
    let (k, mg) = (geo.patch_len(), geo.c_out / geo.group);
    // The output gradient over the padded width, zero in the dropped columns.
    let spread = Padded {
        rows: ho,
        width: padded.width,
        offset: (0, 0),
        out: window.out,
    };
    let partial: Vec<Vec<f32>> = (0..geo.batch.div_ceil(CHUNK))
        .into_par_iter()
        .map(|chunk| {
            let mut dw = vec![0.0f32; geo.c_out * k];
            let samples = chunk * CHUNK..(geo.batch).min((chunk + 1) * CHUNK);
            with_buffer(&PADDED, geo.c_in * padded.plane(), |xp| {
                with_buffer(&PRODUCTS, geo.c_out * spread.plane(), |dys| {
                    for b in samples {
                        padded.pad(&x[b * sample_len..][..sample_len], (window.h, window.w), xp);
                        spread.pad(&dy[b * out_len..][..out_len], (ho, wo), dys);
                        for g in 0..geo.group {
                            let patches = ShiftedRows::new(xp, &starts[g * k..][..k], padded.len());
                            let dyg = Mat {
                                data: &dys[g * mg * spread.plane()..],
                                rows: mg,
                                cols: padded.len(),
                                row_stride: spread.plane() as isize,
                                col_stride: 1,
                            };
                            let dwg = &mut dw[g * mg * k..][..mg * k];
                            gemm_shifted_t(1.0, dyg, patches, 1.0, dwg);
                        }
                    }
                });
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
