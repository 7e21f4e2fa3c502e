//! Winograd F(4×4, 3×3) convolution: each 4×4 block of output from a 6×6 block of input, with 36
//! multiplies per channel pair where the definition needs 144 (Lavin and Gray, "Fast Algorithms
//! for Convolutional Neural Networks", 2016).
//!
//! It serves `conv`'s forward pass, input gradient and weight gradient for the shapes `supports`
//! accepts (3×3, stride 1, undilated, ungrouped), and must not be called for any other; `conv`
//! sends it those where `pays_off` and keeps its im2col path for the rest.
//!
//! The whole batch at once, in three steps that each run on the pool: every tile of every
//! sample is transformed (Bᵀ d B), one product per transformed point multiplies the transformed
//! tiles of the whole batch by the transformed weights (G g Gᵀ), and each sample's products are
//! transformed back (Aᵀ m A) straight into the output. The transforms work on blocks of 16
//! channels, read from a sample's planes interleaved 16 channels per position, so every load and
//! store of a transform is one SIMD register; transformed tiles are stored as [tile][point]
//! [channel] so that each sample's are contiguous. Each value is computed in a fixed order,
//! whatever the number of threads.

mod transforms;

use super::geometry::ConvGeometry;
use crate::epilogue::{Epilogue, Outputs};
use crate::gemm::{gemm, Mat};
use crate::scratch::with_buffer;
use crate::simd::{Block, LANES};
use crate::window::Window2d;
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;
use transforms::{
    block, in_blocks, transform_tile, InputTiles, KernelGradients, Kernels, OutputGradients,
    OutputTiles, Transform, M, POINTS,
};

/// Fewer channels than this on either side make the 36 products too thin to beat the lowered
/// product: on the VGG-style net's layers (`cargo xtask bench kernels`), 32 → 64 channels on
/// 14×14 planes ran slower this way, 64 → 128 and 128 → 128 on 7×7 planes 1.3 to 1.5× faster.
const MIN_CHANNELS: usize = 64;

thread_local! {
    /// The transformed inputs and products of the call this thread runs.
    static PRODUCTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One sample's block of interleaved, padded planes, in a task on the pool.
    static PLANES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether this module can compute the convolution: a 3×3 kernel, stride 1, undilated,
/// ungrouped, leading pads of at most 2 (the input gradient pads by 2 − pad), and something to
/// compute (the lowered path handles empty batches and outputs).
pub(super) fn supports(geo: &ConvGeometry) -> bool {
    let Window2d {
        kh,
        kw,
        stride,
        dilation,
        pad,
        out,
        ..
    } = geo.window;
    geo.batch > 0
        && out.0 > 0
        && out.1 > 0
        && (kh, kw) == (3, 3)
        && stride == (1, 1)
        && dilation == (1, 1)
        && pad.0 <= 2
        && pad.1 <= 2
        && geo.group == 1
}

/// Whether the convolution should take this path rather than the lowered one.
pub(super) fn pays_off(geo: &ConvGeometry) -> bool {
    supports(geo) && geo.c_in >= MIN_CHANNELS && geo.c_out >= MIN_CHANNELS
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
    debug_assert!(supports(geo));
    let u = transform_weights(w, geo.c_out, geo.c_in);
    run(geo, x, &u, bias, epilogue, out);
}

/// dx for the output gradient `dy`: the convolution of `dy` with the kernel flipped in space and
/// transposed in channels, padded by 2 − pad in front. Every value of `dx` is written.
pub(super) fn input_gradient(geo: &ConvGeometry, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    debug_assert!(supports(geo));
    let (k, c) = (geo.c_out, geo.c_in);
    let mut flipped = vec![0.0f32; w.len()];
    for (o, kernel) in w.chunks_exact(9).enumerate() {
        let (ko, ci) = (o / c, o % c);
        let dst = &mut flipped[(ci * k + ko) * 9..][..9];
        dst.iter_mut()
            .zip(kernel.iter().rev())
            .for_each(|(d, v)| *d = *v);
    }
    let Window2d {
        h, w: wd, pad, out, ..
    } = geo.window;
    let mirrored = ConvGeometry {
        batch: geo.batch,
        c_in: k,
        c_out: c,
        group: 1,
        window: Window2d {
            h: out.0,
            w: out.1,
            pad: (2 - pad.0, 2 - pad.1),
            out: (h, wd),
            ..geo.window
        },
    };
    let u = transform_weights(&flipped, c, k);
    let out = Outputs {
        y: dx,
        argmax: None,
        plane_sums: None,
    };
    run(&mirrored, dy, &u, None, &Epilogue::default(), out);
}

/// dw (OIHW) for the input `x` and output gradient `dy`: the chain rule through the forward
/// pass's transforms, dU = Σ over tiles of (A dY Aᵀ) ⊙ (Bᵀ d B), then dw = Gᵀ dU G.
pub(super) fn weight_gradient(geo: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    debug_assert!(supports(geo));
    let (c, k) = (geo.c_in, geo.c_out);
    let (cp, kp) = (in_blocks(c), in_blocks(k));
    let tiling = Tiling::new(geo.batch, geo.window.out);
    let t = tiling.count();
    let point_len = point_spacing(cp * kp);
    with_buffer(&PRODUCTS, POINTS * (t * (cp + kp) + point_len), |buf| {
        let (v, rest) = buf.split_at_mut(POINTS * t * cp);
        let (z, du) = rest.split_at_mut(POINTS * t * kp);
        transform_tiles::<InputTiles>(&geo.window, x, c, tiling, v);
        // dy's planes as a convolution's input with no leading padding, in tiles of M.
        let dy_window = Window2d {
            h: geo.window.out.0,
            w: geo.window.out.1,
            pad: (0, 0),
            ..geo.window
        };
        transform_tiles::<OutputGradients>(&dy_window, dy, k, tiling, z);
        // dUᵀ at each point, cp × kp.
        du.par_chunks_mut(point_len)
            .enumerate()
            .for_each(|(q, duq)| {
                let (vq, zq) = (point_rows(v, q, t, cp), point_rows(z, q, t, kp));
                gemm(1.0, vq.t(), zq, 0.0, &mut duq[..cp * kp]);
            });
        // Blocks of LANES output channels in parallel, each writing its own rows of dw.
        let mut dw = vec![0.0f32; 9 * k * c];
        let du = &*du;
        dw.par_chunks_mut((LANES * c * 9).max(1))
            .enumerate()
            .for_each(|(b, dwb)| {
                let kb = b * LANES;
                for ci in 0..c {
                    transform_tile::<KernelGradients>(
                        |q| block(du, q * point_len + ci * kp + kb),
                        |tap, value| {
                            for (rows, v) in dwb.chunks_exact_mut(c * 9).zip(value) {
                                rows[ci * 9 + tap] = *v;
                            }
                        },
                    );
                }
            });
        dw
    })
}

/// Point `q`'s rows of a transformed buffer laid out as [tile][point][channel], `width` channels
/// each: a `tiles` × `width` matrix.
fn point_rows(buf: &[f32], q: usize, tiles: usize, width: usize) -> Mat<'_, f32> {
    Mat {
        data: &buf[q * width..],
        rows: tiles,
        cols: width,
        row_stride: (POINTS * width) as isize,
        col_stride: 1,
    }
}

/// The transformed weights: Uᵀ at each point q (c × k, padded to whole `LANES` blocks with
/// zeros) = G g Gᵀ at q for every 3×3 kernel g of OIHW weights, laid out [input channel][point]
/// [output channel] so that each input channel's part is written by one task.
struct TransformedWeights {
    u: Vec<f32>,
    /// Input channels, padded.
    cp: usize,
    /// Output channels, padded; a point's row of them is `spacing` values long.
    kp: usize,
    spacing: usize,
}

impl TransformedWeights {
    /// Point q's matrix, cp × kp.
    fn point(&self, q: usize) -> Mat<'_, f32> {
        Mat {
            data: &self.u[q * self.spacing..],
            rows: self.cp,
            cols: self.kp,
            row_stride: (POINTS * self.spacing) as isize,
            col_stride: 1,
        }
    }
}

/// `TransformedWeights` of the OIHW weights `w` (k output and c input channels), input channels
/// in parallel.
fn transform_weights(w: &[f32], k: usize, c: usize) -> TransformedWeights {
    let (cp, kp) = (in_blocks(c), in_blocks(k));
    // Rows of 36 points never a multiple of 512 bytes apart (see `point_spacing`).
    let spacing = point_spacing(kp);
    let mut u = vec![0.0f32; cp * POINTS * spacing];
    u.par_chunks_mut(POINTS * spacing)
        .take(c)
        .enumerate()
        .for_each(|(ci, uc)| {
            // This input channel's taps as [tap][output channel], so that each read is a block.
            let mut taps = vec![0.0f32; 9 * kp];
            for ko in 0..k {
                for (tap, v) in w[(ko * c + ci) * 9..][..9].iter().enumerate() {
                    taps[tap * kp + ko] = *v;
                }
            }
            for kb in (0..kp).step_by(LANES) {
                transform_tile::<Kernels>(
                    |tap| block(&taps, tap * kp + kb),
                    |q, value| uc[q * spacing + kb..][..LANES].copy_from_slice(value),
                );
            }
        });
    TransformedWeights { u, cp, kp, spacing }
}

/// The tiles that cover an output of `out` for each of `batch` samples, numbered sample by
/// sample, then row by row.
#[derive(Clone, Copy)]
struct Tiling {
    batch: usize,
    rows: usize,
    cols: usize,
}

impl Tiling {
    fn new(batch: usize, out: (usize, usize)) -> Self {
        Tiling {
            batch,
            rows: out.0.div_ceil(M),
            cols: out.1.div_ceil(M),
        }
    }

    fn per_sample(&self) -> usize {
        self.rows * self.cols
    }

    fn count(&self) -> usize {
        self.batch * self.per_sample()
    }

    /// The (rows, columns) of a plane padded so that every tile of `side` × `side` values reads
    /// inside it.
    fn padded(&self, side: usize) -> (usize, usize) {
        ((self.rows - 1) * M + side, (self.cols - 1) * M + side)
    }
}

/// How far apart the matrices of `n` values sit in the buffers that hold one per point: never a
/// multiple of 128 values (512 bytes), since a transform reads or writes the 36 of them at once,
/// and at such strides they would all fall in the same few cache sets.
fn point_spacing(n: usize) -> usize {
    if n.is_multiple_of(128) {
        n + LANES
    } else {
        n
    }
}

/// y = conv(x, w) + bias, then the epilogue, from the transformed weights `u`.
fn run(
    geo: &ConvGeometry,
    x: &[f32],
    u: &TransformedWeights,
    bias: Option<&[f32]>,
    epilogue: &Epilogue,
    outputs: Outputs,
) {
    let (c, k) = (geo.c_in, geo.c_out);
    let (cp, kp) = (in_blocks(c), in_blocks(k));
    let out = geo.window.out;
    let tiling = Tiling::new(geo.batch, out);
    let t = tiling.count();
    // The product at each point, t × kp.
    let product_len = point_spacing(t * kp);
    with_buffer(&PRODUCTS, POINTS * (t * cp + product_len), |buf| {
        let (v, m) = buf.split_at_mut(POINTS * t * cp);
        transform_tiles::<InputTiles>(&geo.window, x, c, tiling, v);
        m.par_chunks_mut(product_len)
            .enumerate()
            .for_each(|(q, mq)| {
                gemm(
                    1.0,
                    point_rows(v, q, t, cp),
                    u.point(q),
                    0.0,
                    &mut mq[..t * kp],
                );
            });
        let m = &*m;
        let plane = out.0 * out.1;
        let shifts: Vec<Block> = (0..kp)
            .step_by(LANES)
            .map(|kb| {
                std::array::from_fn(|l| match bias {
                    Some(b) if kb + l < k => b[kb + l],
                    _ => 0.0,
                })
            })
            .collect();
        epilogue.produce_blocks(outputs, (k, plane), |n, yn| {
            // Tile by tile, so that each point's products are read in order.
            for ty in 0..tiling.rows {
                for tx in 0..tiling.cols {
                    let tile = (n * tiling.rows + ty) * tiling.cols + tx;
                    for (kb, shift) in (0..k).step_by(LANES).zip(&shifts) {
                        let lanes = LANES.min(k - kb);
                        transform_tile::<OutputTiles>(
                            |q| block(m, q * product_len + tile * kp + kb),
                            |ab, value| {
                                let (oy, ox) = (ty * M + ab / M, tx * M + ab % M);
                                if oy >= out.0 || ox >= out.1 {
                                    return;
                                }
                                for l in 0..lanes {
                                    yn[((kb + l) * out.0 + oy) * out.1 + ox] = value[l] + shift[l];
                                }
                            },
                        );
                    }
                }
            }
        });
    });
}

/// Writes T d Tᵀ for every `T::IN` × `T::IN` tile d of the NCHW batch `x` (`channels` channels,
/// tiles placed by `window`'s leading padding) into `out`, laid out as [tile][point][channel]
/// with the channels padded by zeros to whole `LANES` blocks.
fn transform_tiles<T: Transform>(
    window: &Window2d,
    x: &[f32],
    channels: usize,
    tiling: Tiling,
    out: &mut [f32],
) {
    let side = T::IN;
    let width = in_blocks(channels);
    let (ph, pw) = tiling.padded(side);
    let sample_len = channels * window.h * window.w;
    out.par_chunks_mut(tiling.per_sample() * POINTS * width)
        .zip(x.par_chunks(sample_len))
        .for_each(|(out, xn)| {
            with_buffer(&PLANES, ph * pw * LANES, |planes| {
                for cb in (0..channels).step_by(LANES) {
                    interleave(xn, cb..channels.min(cb + LANES), window, pw, planes);
                    for ty in 0..tiling.rows {
                        for tx in 0..tiling.cols {
                            let origin = ty * M * pw + tx * M;
                            let tile = ty * tiling.cols + tx;
                            transform_tile::<T>(
                                |e| block(planes, (origin + (e / side) * pw + e % side) * LANES),
                                |q, value| {
                                    out[(tile * POINTS + q) * width + cb..][..LANES]
                                        .copy_from_slice(value);
                                },
                            );
                        }
                    }
                }
            });
        });
}

/// Copies `channels` (at most `LANES`) of the sample `x` (planes of `window`'s size) into
/// `planes`, rows of `pw` positions each holding `LANES` channels, at `window`'s leading
/// padding, with zeros around and in the lanes past the last channel.
fn interleave(x: &[f32], channels: Range<usize>, window: &Window2d, pw: usize, planes: &mut [f32]) {
    let Window2d { h, w, pad, .. } = *window;
    let ph = planes.len() / (pw * LANES);
    let (rows, cols) = (h.min(ph - pad.0), w.min(pw - pad.1));
    planes.fill(0.0);
    for (l, channel) in channels.enumerate() {
        let plane = &x[channel * h * w..][..h * w];
        for (y, src) in plane.chunks_exact(w).take(rows).enumerate() {
            let row = &mut planes[((y + pad.0) * pw + pad.1) * LANES..][..cols * LANES];
            for (dst, v) in row.chunks_exact_mut(LANES).zip(src) {
                dst[l] = *v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::reference::conv_reference;
    use crate::testing::wave;

    fn geometry(
        batch: usize,
        (c_in, c_out): (usize, usize),
        side: (usize, usize),
        pad: (usize, usize),
        out: (usize, usize),
    ) -> ConvGeometry {
        ConvGeometry {
            batch,
            c_in,
            c_out,
            group: 1,
            window: Window2d {
                h: side.0,
                w: side.1,
                kh: 3,
                kw: 3,
                stride: (1, 1),
                dilation: (1, 1),
                pad,
                out,
            },
        }
    }

    /// Sizes that fill whole tiles and sizes that do not, every leading pad, trailing pads from
    /// 0 to 2 (and one that leaves input unread), more output channels than input and fewer,
    /// channel counts off the 16-channel blocks.
    fn geometries() -> Vec<ConvGeometry> {
        vec![
            geometry(3, (16, 16), (8, 8), (1, 1), (8, 8)),
            geometry(2, (16, 24), (6, 9), (0, 2), (4, 11)),
            geometry(5, (17, 16), (5, 8), (2, 0), (7, 6)),
            geometry(4, (16, 16), (7, 6), (1, 0), (6, 3)),
            // One sample, and fewer channels than one block on each side.
            geometry(1, (3, 5), (5, 5), (1, 1), (5, 5)),
        ]
    }

    /// The largest error relative to 1 + |want|. F(4×4, 3×3) rounds more than the definition
    /// (its transforms scale by up to 8 and by 1/24), about 2e-5 here; a wrong tap, sign or
    /// offset errs by order 1.
    pub(super) fn max_error(got: &[f32], want: impl Iterator<Item = f64>) -> f64 {
        got.iter()
            .zip(want)
            .map(|(a, b)| (*a as f64 - b).abs() / (1.0 + b.abs()))
            .fold(0.0, f64::max)
    }

    #[test]
    fn forward_matches_the_definition() {
        for geo in geometries() {
            let Window2d { h, w, out, .. } = geo.window;
            let x = wave(geo.batch * geo.c_in * h * w, 1.0);
            let wt = wave(geo.c_out * geo.c_in * 9, 2.0);
            let b = wave(geo.c_out, 3.0);
            let mut y = vec![f32::NAN; geo.batch * geo.c_out * out.0 * out.1];
            let out = Outputs {
                y: &mut y,
                argmax: None,
                plane_sums: None,
            };
            forward(&geo, &x, &wt, Some(&b), &Epilogue::default(), out);
            let want = conv_reference(&geo, &x, &wt, &b);
            let err = max_error(&y, want.iter().map(|v| *v as f64));
            assert!(err < 1e-4, "{geo:?}: {err}");
        }
    }

    #[test]
    fn gradients_match_the_definition() {
        for geo in geometries() {
            let Window2d { h, w, out, pad, .. } = geo.window;
            let (c, k) = (geo.c_in, geo.c_out);
            let x = wave(geo.batch * c * h * w, 1.0);
            let dy = wave(geo.batch * k * out.0 * out.1, 4.0);
            let wt = wave(k * c * 9, 2.0);
            let mut dx = vec![f32::NAN; x.len()];
            input_gradient(&geo, &wt, &dy, &mut dx);
            let dw = weight_gradient(&geo, &x, &dy);
            // y[n, k, oy, ox] reads x[n, c, oy + i − pad, ox + j − pad] through w[k, c, i, j].
            let mut want_dx = vec![0.0f64; dx.len()];
            let mut want_dw = vec![0.0f64; dw.len()];
            for n in 0..geo.batch {
                for ko in 0..k {
                    for oy in 0..out.0 {
                        for ox in 0..out.1 {
                            let g = dy[((n * k + ko) * out.0 + oy) * out.1 + ox] as f64;
                            for ci in 0..c {
                                for i in 0..3 {
                                    for j in 0..3 {
                                        let yy = (oy + i).checked_sub(pad.0).filter(|&v| v < h);
                                        let xx = (ox + j).checked_sub(pad.1).filter(|&v| v < w);
                                        let (Some(yy), Some(xx)) = (yy, xx) else {
                                            continue;
                                        };
                                        let xi = ((n * c + ci) * h + yy) * w + xx;
                                        let wi = ((ko * c + ci) * 3 + i) * 3 + j;
                                        want_dx[xi] += g * wt[wi] as f64;
                                        want_dw[wi] += g * x[xi] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let err = max_error(&dx, want_dx.into_iter());
            assert!(err < 1e-4, "dx {geo:?}: {err}");
            let err = max_error(&dw, want_dw.into_iter());
            assert!(err < 1e-4, "dw {geo:?}: {err}");
        }
    }
}
