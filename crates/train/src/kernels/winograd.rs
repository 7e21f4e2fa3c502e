//! Winograd F(4×4, 3×3) convolution: each 4×4 block of output from a 6×6 block of input, with 36
//! multiplies per channel pair where the definition needs 144 (Lavin and Gray, "Fast Algorithms
//! for Convolutional Neural Networks", 2016).
//!
//! It serves `conv`'s forward pass, input gradient and weight gradient for the shapes `supports`
//! accepts (3×3, stride 1, undilated, ungrouped), and must not be called for any other; `conv`
//! sends it those where `pays_off` and keeps its im2col path for the rest.
//!
//! The whole batch at once, in three steps that each run on the pool: the tiles of every channel
//! are transformed into vectors over all the batch's tiles (Bᵀ d B), one product per transformed
//! point multiplies them by the transformed weights (G g Gᵀ), and every output channel's products
//! are transformed back (Aᵀ m A). Every transform is a pair of small matrices applied to whole
//! vectors of tiles, so it runs at SIMD width; each value is computed in a fixed order, whatever
//! the number of threads.

use super::conv::ConvGeometry;
use super::scratch::with_buffer;
use super::window::Window2d;
use crate::gemm::{gemm, Mat};
use rayon::prelude::*;
use std::cell::RefCell;

/// Output values per tile side.
const M: usize = 4;
/// Input values per tile side: M + 3 − 1.
const A: usize = 6;
/// Points of a transformed tile.
const POINTS: usize = A * A;
/// Fewer channels than this on either side make the 36 products too thin to beat the lowered
/// product: on the VGG-style net's layers (`cargo xtask bench kernels`), 32 → 64 channels on
/// 14×14 planes ran slower this way, 64 → 128 and 128 → 128 on 7×7 planes 1.3 to 1.5× faster.
const MIN_CHANNELS: usize = 64;

/// A tile transform: y = T x Tᵀ for the matrix T (`OUT` × `IN`), applied to tiles of vectors.
/// The matrix is a constant so that each transform compiles to straight-line code with its zero
/// coefficients gone.
trait Transform {
    const OUT: usize;
    const IN: usize;
    /// T, row-major, in the top-left corner of a 6 × 6 frame.
    const MATRIX: [[f32; A]; A];
}

/// The transpose of a matrix held in a 6 × 6 frame.
const fn transposed(m: [[f32; A]; A]) -> [[f32; A]; A] {
    let mut t = [[0.0; A]; A];
    let mut i = 0;
    while i < A {
        let mut j = 0;
        while j < A {
            t[j][i] = m[i][j];
            j += 1;
        }
        i += 1;
    }
    t
}

/// Bᵀ: an input tile to its transform.
struct InputTiles;
impl Transform for InputTiles {
    const OUT: usize = A;
    const IN: usize = A;
    #[rustfmt::skip]
    const MATRIX: [[f32; A]; A] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
}

/// G: a 3×3 kernel to its transform.
struct Kernels;
impl Transform for Kernels {
    const OUT: usize = A;
    const IN: usize = 3;
    #[rustfmt::skip]
    const MATRIX: [[f32; A]; A] = [
        [1.0 / 4.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, 0.0, 0.0, 0.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 0.0, 0.0, 0.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0, 0.0, 0.0, 0.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    ];
}

/// Gᵀ: the gradient of a transformed kernel back to the kernel's.
struct KernelGradients;
impl Transform for KernelGradients {
    const OUT: usize = 3;
    const IN: usize = A;
    const MATRIX: [[f32; A]; A] = transposed(Kernels::MATRIX);
}

/// Aᵀ: a transformed product back to its output tile.
struct OutputTiles;
impl Transform for OutputTiles {
    const OUT: usize = M;
    const IN: usize = A;
    #[rustfmt::skip]
    const MATRIX: [[f32; A]; A] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
        [0.0; A],
        [0.0; A],
    ];
}

/// A: an output tile's gradient to the gradient of its transformed product.
struct OutputGradients;
impl Transform for OutputGradients {
    const OUT: usize = A;
    const IN: usize = M;
    const MATRIX: [[f32; A]; A] = transposed(OutputTiles::MATRIX);
}

thread_local! {
    /// The transformed inputs, products and outputs of the call this thread runs.
    static PRODUCTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Gathered tiles and half-transformed vectors of one channel, in a task on the pool.
    static TILES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether this module can compute the convolution: a 3×3 kernel, stride 1, undilated,
/// ungrouped, leading pads of at most 2 (the input gradient pads by 2 − pad), and something to
/// compute (the lowered path handles empty batches and outputs).
pub(crate) fn supports(geo: &ConvGeometry) -> bool {
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
pub(crate) fn pays_off(geo: &ConvGeometry) -> bool {
    supports(geo) && geo.c_in >= MIN_CHANNELS && geo.c_out >= MIN_CHANNELS
}

/// y = conv(x, w) + bias for NCHW `x` and `y` and OIHW `w`. Every value of `y` is written.
pub(crate) fn forward(
    geo: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    debug_assert!(supports(geo));
    let u = transform_weights(w, geo.c_out, geo.c_in);
    run(geo, x, &u, bias, y);
}

/// dx for the output gradient `dy`: the convolution of `dy` with the kernel flipped in space and
/// transposed in channels, padded by 2 − pad in front. Every value of `dx` is written.
pub(crate) fn input_gradient(geo: &ConvGeometry, w: &[f32], dy: &[f32], dx: &mut [f32]) {
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
    run(&mirrored, dy, &u, None, dx);
}

/// dw (OIHW) for the input `x` and output gradient `dy`: the chain rule through the forward
/// pass's transforms, dU = Σ over tiles of (A dY Aᵀ) ⊙ (Bᵀ d B), then dw = Gᵀ dU G.
pub(crate) fn weight_gradient(geo: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    debug_assert!(supports(geo));
    let (c, k) = (geo.c_in, geo.c_out);
    let tiling = Tiling::new(geo.batch, geo.window.out);
    let t = tiling.stride();
    let kc = k * c;
    let len = vector_len(kc);
    with_buffer(&PRODUCTS, POINTS * ((c + k) * t + len), |buf| {
        let (v, rest) = buf.split_at_mut(POINTS * c * t);
        let (z, du) = rest.split_at_mut(POINTS * k * t);
        transform_tiles::<InputTiles>(&geo.window, x, c, tiling, v);
        // dy's planes as a convolution's input with no leading padding, in tiles of M.
        let dy_window = Window2d {
            h: geo.window.out.0,
            w: geo.window.out.1,
            pad: (0, 0),
            ..geo.window
        };
        transform_tiles::<OutputGradients>(&dy_window, dy, k, tiling, z);
        du.par_chunks_mut(len).enumerate().for_each(|(q, duq)| {
            gemm(
                1.0,
                point_rows(z, q, k, t),
                point_rows(v, q, c, t).t(),
                0.0,
                duq,
            );
        });
        let mut taps = vec![0.0f32; 9 * len];
        transform2d::<KernelGradients>(
            Vectors {
                data: du,
                step: len,
            },
            len,
            &mut taps,
        );
        let mut dw = vec![0.0f32; 9 * kc];
        for (o, kernel) in dw.chunks_exact_mut(9).enumerate() {
            for (tap, v) in kernel.iter_mut().enumerate() {
                *v = taps[tap * len + o];
            }
        }
        dw
    })
}

/// Point `q`'s rows of a transformed buffer laid out as [row][point][tile]: a `rows` × `t`
/// matrix.
fn point_rows(buf: &[f32], q: usize, rows: usize, t: usize) -> Mat<'_, f32> {
    Mat {
        data: &buf[q * t..],
        rows,
        cols: t,
        row_stride: (POINTS * t) as isize,
        col_stride: 1,
    }
}

/// U[q] (k × c) = G g Gᵀ at point q for every 3×3 kernel g of the OIHW weights `w`: 36
/// row-major matrices, `vector_len(k·c)` values apart.
fn transform_weights(w: &[f32], k: usize, c: usize) -> Vec<f32> {
    let len = vector_len(k * c);
    // The nine taps, each a vector over (k, c), so the transform runs over whole vectors.
    let mut taps = vec![0.0f32; 9 * len];
    for (o, kernel) in w.chunks_exact(9).enumerate() {
        for (tap, v) in kernel.iter().enumerate() {
            taps[tap * len + o] = *v;
        }
    }
    let mut u = vec![0.0f32; POINTS * len];
    transform2d::<Kernels>(
        Vectors {
            data: &taps,
            step: len,
        },
        len,
        &mut u,
    );
    u
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

    fn count(&self) -> usize {
        self.batch * self.rows * self.cols
    }

    /// The length of a vector over the tiles.
    fn stride(&self) -> usize {
        vector_len(self.count())
    }

    /// The (rows, columns) of a plane padded so that every tile of `side` × `side` values reads
    /// inside it.
    fn padded(&self, side: usize) -> (usize, usize) {
        ((self.rows - 1) * M + side, (self.cols - 1) * M + side)
    }

    /// Where each tile starts in a batch of planes padded for `side`, then, up to the vector
    /// length, the first tile again, so that reads past the last tile stay inside the planes.
    fn starts(&self, side: usize) -> Vec<usize> {
        let (ph, pw) = self.padded(side);
        let (rows, cols) = (self.rows, self.cols);
        let mut starts: Vec<usize> = (0..self.batch)
            .flat_map(|n| {
                (0..rows)
                    .flat_map(move |ty| (0..cols).map(move |tx| (n * ph + ty * M) * pw + tx * M))
            })
            .collect();
        starts.resize(self.stride(), 0);
        starts
    }
}

/// The length of a vector of `n` values in the transforms' buffers: whole `LANES` blocks (the
/// tail zero wherever it enters a sum), and never a multiple of 128 values (512 bytes). A
/// transform reads and writes 36 vectors at once, and at such strides they would all fall in
/// the same few cache sets.
fn vector_len(n: usize) -> usize {
    let len = n.next_multiple_of(LANES);
    if len.is_multiple_of(128) {
        len + LANES
    } else {
        len
    }
}

/// The convolution of `x` (geometry `geo`) with the transformed weights `u`.
fn run(geo: &ConvGeometry, x: &[f32], u: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let (c, k) = (geo.c_in, geo.c_out);
    let out = geo.window.out;
    let tiling = Tiling::new(geo.batch, out);
    let t = tiling.stride();
    // Each output channel's planes, padded to whole tiles.
    let (ph, pw) = tiling.padded(M);
    let channel_len = geo.batch * ph * pw;
    // The product at each point, k × t, in blocks spaced like vectors.
    let block = vector_len(k * t);
    with_buffer(
        &PRODUCTS,
        POINTS * (c * t + block) + k * channel_len,
        |buf| {
            let (v, rest) = buf.split_at_mut(POINTS * c * t);
            let (m, by_channel) = rest.split_at_mut(POINTS * block);
            transform_tiles::<InputTiles>(&geo.window, x, c, tiling, v);
            m.par_chunks_mut(block).enumerate().for_each(|(q, mq)| {
                let uq = Mat::new(&u[q * vector_len(k * c)..][..k * c], k, c);
                gemm(1.0, uq, point_rows(v, q, c, t), 0.0, mq);
            });
            let starts = tiling.starts(M);
            by_channel
                .par_chunks_mut(channel_len)
                .enumerate()
                .for_each(|(ko, yk)| {
                    with_buffer(&TILES, M * M * t, |o| {
                        let products = Vectors {
                            data: &m[ko * t..],
                            step: block,
                        };
                        transform2d::<OutputTiles>(products, t, o);
                        scatter(o, &starts[..tiling.count()], pw, yk);
                    });
                });
            // Into NCHW order, without the padding.
            let plane = out.0 * out.1;
            y.par_chunks_mut(plane).enumerate().for_each(|(i, dst)| {
                let (n, ko) = (i / k, i % k);
                let shift = bias.map_or(0.0, |b| b[ko]);
                let src = &by_channel[ko * channel_len + n * ph * pw..];
                for (row, src) in dst.chunks_exact_mut(out.1).zip(src.chunks(pw)) {
                    row.iter_mut().zip(src).for_each(|(y, v)| *y = v + shift);
                }
            });
        },
    );
}

/// Writes T d Tᵀ for every `T::IN` × `T::IN` tile d of every channel of the NCHW batch `x`
/// (tiles placed by `window`'s leading padding) into `out`, laid out as [channel][point][tile],
/// each vector zero past the last tile so that sums over tiles can include it.
fn transform_tiles<T: Transform>(
    window: &Window2d,
    x: &[f32],
    channels: usize,
    tiling: Tiling,
    out: &mut [f32],
) {
    let t = tiling.stride();
    let side = T::IN;
    let starts = tiling.starts(side);
    let (ph, pw) = tiling.padded(side);
    out.par_chunks_mut(T::OUT * T::OUT * t)
        .enumerate()
        .for_each(|(ch, vectors)| {
            with_buffer(&TILES, tiling.batch * ph * pw, |padded| {
                pad_planes(x, ch, channels, window, (ph, pw), padded);
                let tiles = Tiles {
                    padded,
                    starts: &starts,
                    pw,
                    side,
                };
                transform2d::<T>(tiles, t, vectors);
            });
            for vector in vectors.chunks_exact_mut(t) {
                vector[tiling.count()..].fill(0.0);
            }
        });
}

/// Copies channel `channel` of every sample of the NCHW batch `x` (planes of `window`'s size)
/// into `padded`, planes of `size`, at `window`'s leading padding, with zeros around.
fn pad_planes(
    x: &[f32],
    channel: usize,
    channels: usize,
    window: &Window2d,
    (ph, pw): (usize, usize),
    padded: &mut [f32],
) {
    let Window2d { h, w, pad, .. } = *window;
    let (rows, cols) = (h.min(ph - pad.0), w.min(pw - pad.1));
    for (n, dst) in padded.chunks_exact_mut(ph * pw).enumerate() {
        let plane = &x[(n * channels + channel) * h * w..][..h * w];
        // Only the border is zeroed: the rest is overwritten.
        dst[..pad.0 * pw].fill(0.0);
        dst[(pad.0 + rows) * pw..].fill(0.0);
        for (y, src) in plane.chunks_exact(w).take(rows).enumerate() {
            let row = &mut dst[(y + pad.0) * pw..][..pw];
            row[..pad.1].fill(0.0);
            row[pad.1..][..cols].copy_from_slice(&src[..cols]);
            row[pad.1 + cols..].fill(0.0);
        }
    }
}

/// The inverse of `Tiles` for M×M output tiles: writes vector (a, b) of `o` (vectors of
/// `stride` values, one per tile) into padded planes (rows of `pw` values) at `starts`.
fn scatter(o: &[f32], starts: &[usize], pw: usize, padded: &mut [f32]) {
    let stride = o.len() / (M * M);
    for (ab, vector) in o.chunks_exact(stride).enumerate() {
        let offset = (ab / M) * pw + ab % M;
        for (value, start) in vector.iter().zip(starts) {
            padded[start + offset] = *value;
        }
    }
}

/// Tiles per block of `transform2d`: one AVX-512 register of each vector.
const LANES: usize = 16;

/// Where a transform reads its input: `LANES` values of an element (a position in the tile)
/// for consecutive tiles.
trait Blocks: Copy {
    fn block(&self, element: usize, first_tile: usize) -> Block;
}

/// Elements stored as vectors over the tiles, `step` values apart.
#[derive(Clone, Copy)]
struct Vectors<'a> {
    data: &'a [f32],
    step: usize,
}

impl Blocks for Vectors<'_> {
    fn block(&self, element: usize, first_tile: usize) -> Block {
        self.data[element * self.step + first_tile..][..LANES]
            .try_into()
            .expect("a block")
    }
}

/// The `side` × `side` tiles of padded planes (rows of `pw` values), read where they lie:
/// tile t's element (r, s) is at `starts[t] + r·pw + s`.
#[derive(Clone, Copy)]
struct Tiles<'a> {
    padded: &'a [f32],
    starts: &'a [usize],
    pw: usize,
    side: usize,
}

impl Blocks for Tiles<'_> {
    fn block(&self, element: usize, first_tile: usize) -> Block {
        let offset = (element / self.side) * self.pw + element % self.side;
        let starts = &self.starts[first_tile..][..LANES];
        std::array::from_fn(|l| self.padded[starts[l] + offset])
    }
}

/// y = T x Tᵀ for every tile of `x`, `len` tiles (a multiple of `LANES`): y's element (i, j)
/// is a vector starting at y[(i·OUT + j)·len].
fn transform2d<T: Transform>(x: impl Blocks, len: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has the feature the function is compiled for.
        unsafe { transform2d_avx512::<T>(x, len, y) };
        return;
    }
    transform2d_blocks::<T>(x, len, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transform2d_avx512<T: Transform>(x: impl Blocks, len: usize, y: &mut [f32]) {
    transform2d_blocks::<T>(x, len, y);
}

/// A block of `LANES` tiles' values at one position.
type Block = [f32; LANES];

/// `transform2d`, `LANES` tiles at a time: T applied to the columns, then to the rows, each a
/// 1-d transform of six blocks that stays in registers.
#[inline(always)]
fn transform2d_blocks<T: Transform>(x: impl Blocks, len: usize, y: &mut [f32]) {
    debug_assert_eq!(len % LANES, 0);
    let (n, k) = (T::OUT, T::IN);
    for start in (0..len).step_by(LANES) {
        let mut half = [[[0.0f32; LANES]; A]; A];
        for s in 0..k {
            let mut column = [[0.0f32; LANES]; A];
            for (r, value) in column.iter_mut().enumerate().take(k) {
                *value = x.block(r * k + s, start);
            }
            let column = transform1d::<T>(&column);
            for (row, value) in half.iter_mut().zip(column).take(n) {
                row[s] = value;
            }
        }
        for (i, row) in half.iter().enumerate().take(n) {
            let row = transform1d::<T>(row);
            for (j, value) in row.iter().enumerate().take(n) {
                y[(i * n + j) * len + start..][..LANES].copy_from_slice(value);
            }
        }
    }
}

/// T v for six blocks v (the first `T::IN` of them used, the first `T::OUT` of the result
/// meaningful). The matrix is constant, so this unrolls into adds and multiplies by the
/// nonzero coefficients only.
#[inline(always)]
fn transform1d<T: Transform>(v: &[Block; A]) -> [Block; A] {
    let mut out = [[0.0f32; LANES]; A];
    for (i, acc) in out.iter_mut().enumerate().take(T::OUT) {
        for (r, value) in v.iter().enumerate().take(T::IN) {
            let c = T::MATRIX[i][r];
            if c != 0.0 {
                acc.iter_mut().zip(value).for_each(|(a, v)| *a += c * v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{conv_reference, wave};

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
    /// 0 to 2 (and one that leaves input unread), more output channels than input and fewer.
    fn geometries() -> Vec<ConvGeometry> {
        vec![
            geometry(3, (16, 16), (8, 8), (1, 1), (8, 8)),
            geometry(2, (16, 24), (6, 9), (0, 2), (4, 11)),
            geometry(5, (17, 16), (5, 8), (2, 0), (7, 6)),
            geometry(4, (16, 16), (7, 6), (1, 0), (6, 3)),
        ]
    }

    /// The largest error relative to 1 + |want|. F(4×4, 3×3) rounds more than the definition
    /// (its transforms scale by up to 8 and by 1/24), about 2e-5 here; a wrong tap, sign or
    /// offset errs by order 1.
    fn max_error(got: &[f32], want: impl Iterator<Item = f64>) -> f64 {
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
            forward(&geo, &x, &wt, Some(&b), &mut y);
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
