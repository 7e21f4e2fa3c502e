//! 2-D max and average pooling (NCHW) and global average pooling: forward and backward.

use crate::par_zeroed;
use crate::window::Window2d;
use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

impl Window2d {
    /// Calls `f` with the flat index into the plane of each input position under output
    /// (oy, ox), row by row.
    fn for_each_cell(&self, oy: usize, ox: usize, mut f: impl FnMut(usize)) {
        let (rows, cols) = self.axes();
        for y in (0..self.kh).filter_map(|i| rows.input(oy, i)) {
            for x in (0..self.kw).filter_map(|j| cols.input(ox, j)) {
                f(y * self.w + x);
            }
        }
    }

    /// The input positions under output (oy, ox), and the number of window cells, padding
    /// included.
    fn window(&self, oy: usize, ox: usize, cells: &mut Vec<usize>) -> usize {
        cells.clear();
        self.for_each_cell(oy, ox, |i| cells.push(i));
        // Cells past the end padding (ceil_mode) do not count as padding either.
        let rows = (0..self.kh)
            .filter(|i| oy * self.stride.0 + i * self.dilation.0 < self.h + 2 * self.pad.0)
            .count();
        let cols = (0..self.kw)
            .filter(|j| ox * self.stride.1 + j * self.dilation.1 < self.w + 2 * self.pad.1)
            .count();
        rows * cols
    }
}

/// Max pooling; returns the output and, per output element, the flat input index it came from.
pub fn max_forward(geo: &Window2d, x: ArrayView4<f32>) -> (Array4<f32>, Array4<u32>) {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let x = x.as_standard_layout();
    let mut y = Array4::<f32>::zeros((n, c, geo.out.0, geo.out.1));
    let mut arg = Array4::<u32>::zeros((n, c, geo.out.0, geo.out.1));
    let planes = x
        .as_slice()
        .expect("standard layout")
        .par_chunks(geo.h * geo.w);
    y.as_slice_mut()
        .expect("fresh")
        .par_chunks_mut(geo.out.0 * geo.out.1)
        .zip(
            arg.as_slice_mut()
                .expect("fresh")
                .par_chunks_mut(geo.out.0 * geo.out.1),
        )
        .zip(planes)
        .for_each(|((yp, ap), xp)| max_plane(geo, xp, yp, ap));
    (y, arg)
}

/// Max pooling of one plane `xp` (h × w) into `yp` and the winning flat indices into `ap`.
pub(crate) fn max_plane(geo: &Window2d, xp: &[f32], yp: &mut [f32], ap: &mut [u32]) {
    if geo.is_plain_2x2() {
        return max_2x2(geo, xp, yp, ap);
    }
    let (rows, cols) = geo.axes();
    let wo = geo.out.1;
    // Kernel cells in row-major order, each over every output of the row at once: the first
    // maximum wins, as in PyTorch, and a window whose values are all -inf or NaN points at its
    // first cell.
    const UNSET: u32 = u32::MAX;
    for (oy, (best, at)) in yp
        .chunks_exact_mut(wo)
        .zip(ap.chunks_exact_mut(wo))
        .enumerate()
    {
        best.fill(f32::NEG_INFINITY);
        at.fill(UNSET);
        for y in (0..geo.kh).filter_map(|i| rows.input(oy, i)) {
            let row = &xp[y * geo.w..][..geo.w];
            for j in 0..geo.kw {
                let (inside, off) = cols.inside(j);
                for ox in inside {
                    let x = (ox * geo.stride.1) as isize + off;
                    let v = row[x as usize];
                    let index = (y * geo.w) as u32 + x as u32;
                    if at[ox] == UNSET {
                        at[ox] = index;
                    }
                    if v > best[ox] {
                        (best[ox], at[ox]) = (v, index);
                    }
                }
            }
        }
        at.iter_mut().filter(|a| **a == UNSET).for_each(|a| *a = 0);
    }
}

impl Window2d {
    /// A 2×2 window with stride 2, no padding or dilation, inside the input: the most common
    /// pool in CNNs, which `max_forward` runs without its general index arithmetic.
    fn is_plain_2x2(&self) -> bool {
        (self.kh, self.kw, self.stride, self.dilation, self.pad) == (2, 2, (2, 2), (1, 1), (0, 0))
            && 2 * self.out.0 <= self.h
            && 2 * self.out.1 <= self.w
    }
}

/// `max_forward` on one plane `xp` for a plain 2×2 window: the same first-maximum rule, cells
/// in row-major order. Selects, not branches: which cell wins is data, and a mispredicted branch
/// per cell cost more than the comparisons.
fn max_2x2(geo: &Window2d, xp: &[f32], yp: &mut [f32], ap: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::features().avx512f {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { max_2x2_avx512(geo, xp, yp, ap) };
    }
    let (w, wo) = (geo.w, geo.out.1);
    for (oy, (best, at)) in yp
        .chunks_exact_mut(wo)
        .zip(ap.chunks_exact_mut(wo))
        .enumerate()
    {
        let (top, bottom) = (2 * oy * w, (2 * oy + 1) * w);
        let rows = (&xp[top..][..2 * wo], &xp[bottom..][..2 * wo]);
        for (ox, ((best, at), (t, b))) in best
            .iter_mut()
            .zip(at.iter_mut())
            .zip(rows.0.chunks_exact(2).zip(rows.1.chunks_exact(2)))
            .enumerate()
        {
            let offsets = [top, top + 1, bottom, bottom + 1].map(|c| (c + 2 * ox) as u32);
            let values = [t[0], t[1], b[0], b[1]];
            let (mut v, mut i) = (f32::NEG_INFINITY, offsets[0]);
            for (value, offset) in values.into_iter().zip(offsets) {
                let wins = value > v;
                v = if wins { value } else { v };
                i = if wins { offset } else { i };
            }
            (*best, *at) = (v, i);
        }
    }
}

/// `max_2x2` with AVX-512, a row of outputs at a time, 16 per step (the last step masked): the
/// four cells of 16 windows are deinterleaved from two input rows by permutes, and the same
/// first-maximum selects run on all 16 at once. Inside a fused kernel the plane is in cache and
/// this is compute, which one value at a time made the largest part of the pool.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn max_2x2_avx512(geo: &Window2d, xp: &[f32], yp: &mut [f32], ap: &mut [u32]) {
    use crate::simd::{I32x16, Mask, Zmm};
    let (w, (ho, wo)) = (geo.w, geo.out);
    // Every access below stays inside these bounds (is_plain_2x2: 2·ho ≤ h, 2·wo ≤ w).
    assert!(xp.len() >= geo.h * w && yp.len() >= ho * wo && ap.len() >= ho * wo);
    assert!(2 * ho <= geo.h && 2 * wo <= w && geo.h * w <= i32::MAX as usize);
    let even = I32x16::from_array([0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30]);
    let odd = even.add(I32x16::splat(1));
    for oy in 0..ho {
        let (top, bottom) = (2 * oy * w, (2 * oy + 1) * w);
        for ox in (0..wo).step_by(16) {
            let n = (wo - ox).min(16);
            let (low, high) = (
                Mask::first((2 * n).min(16)),
                Mask::first((2 * n).saturating_sub(16)),
            );
            // SAFETY: the masked loads read 2n values from column 2·ox of rows 2·oy and
            // 2·oy + 1, inside xp; masked-off lanes are not read.
            let pair = |row: usize| unsafe {
                let p = xp.as_ptr().add(row + 2 * ox);
                let a = Zmm::load_masked(low, p);
                let b = Zmm::load_masked(high, p.add(16));
                (a.permute2(even, b), a.permute2(odd, b))
            };
            let ((t0, t1), (b0, b1)) = (pair(top), pair(bottom));
            let at = |row: usize, col: i32| {
                let first = I32x16::splat((row + 2 * ox) as i32 + col);
                first.add(even)
            };
            let cells = [(t0, at(top, 0)), (t1, at(top, 1)), (b0, at(bottom, 0))];
            let (mut v, mut i) = (Zmm::splat(f32::NEG_INFINITY), at(top, 0));
            for (value, index) in cells.into_iter().chain([(b1, at(bottom, 1))]) {
                let wins = value.greater(v);
                v = v.blend(wins, value);
                i = i.blend(wins, index);
            }
            // SAFETY: n outputs from oy·wo + ox, inside yp and ap.
            unsafe {
                let out = oy * wo + ox;
                v.store_masked(Mask::first(n), yp.as_mut_ptr().add(out));
                i.store_masked(Mask::first(n), ap.as_mut_ptr().add(out).cast());
            }
        }
    }
}

/// Routes each output gradient to the input element that won the max.
pub fn max_backward(geo: &Window2d, arg: &Array4<u32>, dy: ArrayView4<f32>) -> Array4<f32> {
    let (n, c) = (dy.shape()[0], dy.shape()[1]);
    let dy = dy.as_standard_layout();
    let plane_out = geo.out.0 * geo.out.1;
    let (args, dys) = (
        arg.as_slice().expect("standard"),
        dy.as_slice().expect("standard"),
    );
    // Each plane zeroed and filled while in cache.
    par_zeroed((n, c, geo.h, geo.w), geo.h * geo.w, |p, plane| {
        let range = p * plane_out..(p + 1) * plane_out;
        for (a, d) in args[range.clone()].iter().zip(&dys[range]) {
            plane[*a as usize] += d;
        }
    })
}

/// Average pooling; `count_include_pad` divides by the whole window instead of its valid cells.
pub fn avg_forward(geo: &Window2d, x: ArrayView4<f32>, count_include_pad: bool) -> Array4<f32> {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let x = x.as_standard_layout();
    let mut y = Array4::<f32>::zeros((n, c, geo.out.0, geo.out.1));
    y.as_slice_mut()
        .expect("fresh")
        .par_chunks_mut(geo.out.0 * geo.out.1)
        .zip(
            x.as_slice()
                .expect("standard layout")
                .par_chunks(geo.h * geo.w),
        )
        .for_each(|(yp, xp)| {
            let mut cells = Vec::new();
            for oy in 0..geo.out.0 {
                for ox in 0..geo.out.1 {
                    let total = geo.window(oy, ox, &mut cells);
                    let count = divisor(count_include_pad, total, cells.len());
                    let sum: f32 = cells.iter().map(|&i| xp[i]).sum();
                    yp[oy * geo.out.1 + ox] = if count == 0 { 0.0 } else { sum / count as f32 };
                }
            }
        });
    y
}

/// What an average pool divides a window's sum by: the window's full size with
/// `count_include_pad`, else the cells inside the input.
fn divisor(count_include_pad: bool, window: usize, inside: usize) -> usize {
    if count_include_pad {
        window
    } else {
        inside
    }
}

/// Spreads each output gradient evenly over its window.
pub fn avg_backward(geo: &Window2d, dy: ArrayView4<f32>, count_include_pad: bool) -> Array4<f32> {
    let (n, c) = (dy.shape()[0], dy.shape()[1]);
    let dy = dy.as_standard_layout();
    let mut dx = Array4::<f32>::zeros((n, c, geo.h, geo.w));
    dx.as_slice_mut()
        .expect("fresh")
        .par_chunks_mut(geo.h * geo.w)
        .zip(
            dy.as_slice()
                .expect("standard layout")
                .par_chunks(geo.out.0 * geo.out.1),
        )
        .for_each(|(dxp, dyp)| {
            let mut cells = Vec::new();
            for oy in 0..geo.out.0 {
                for ox in 0..geo.out.1 {
                    let total = geo.window(oy, ox, &mut cells);
                    let count = divisor(count_include_pad, total, cells.len());
                    if count == 0 {
                        continue;
                    }
                    let g = dyp[oy * geo.out.1 + ox] / count as f32;
                    for &i in &cells {
                        dxp[i] += g;
                    }
                }
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    fn geo(pad: usize, stride: usize, out: (usize, usize)) -> Window2d {
        Window2d {
            h: 5,
            w: 5,
            kh: 3,
            kw: 3,
            stride: (stride, stride),
            dilation: (1, 1),
            pad: (pad, pad),
            out,
        }
    }

    fn input() -> Array4<f32> {
        Array::from_shape_fn((2, 3, 5, 5), |(n, c, y, x)| {
            (((n * 7 + c * 5 + y * 3 + x) as f32) * 0.913).sin()
        })
    }

    #[test]
    fn max_pool_matches_the_definition_and_routes_gradients() {
        let g = geo(1, 2, (3, 3));
        let x = input();
        let (y, arg) = max_forward(&g, x.view());
        // Output (1,1) covers rows 1..4, cols 1..4.
        let want = (1..4)
            .flat_map(|r| (1..4).map(move |c| (r, c)))
            .map(|(r, c)| x[[1, 2, r, c]])
            .fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(y[[1, 2, 1, 1]], want);
        let dy = Array4::<f32>::ones(y.raw_dim());
        let dx = max_backward(&g, &arg, dy.view());
        assert_eq!(
            dx.sum(),
            y.len() as f32,
            "each output sends its gradient once"
        );
        let flat = arg[[1, 2, 1, 1]] as usize;
        assert_eq!(x[[1, 2, flat / 5, flat % 5]], want);
    }

    #[test]
    fn max_pool_matches_a_naive_loop_for_strides_dilations_and_padding() {
        // Ties in the top-left corner: the first cell in row-major order wins.
        let mut x = input();
        x[[0, 0, 0, 1]] = x[[0, 0, 0, 0]];
        x[[0, 0, 1, 0]] = x[[0, 0, 0, 0]];
        for (kernel, stride, dilation, pad) in [
            (3, 1, 1, 0),
            (3, 2, 1, 1),
            (3, 1, 2, 2),
            (3, 3, 2, 1),
            // The plain 2×2 path, on a 5×5 input whose last row and column no window reads.
            (2, 2, 1, 0),
        ] {
            let out = |n: usize| (n + 2 * pad - ((kernel - 1) * dilation + 1)) / stride + 1;
            let g = Window2d {
                kh: kernel,
                kw: kernel,
                dilation: (dilation, dilation),
                ..geo(pad, stride, (out(5), out(5)))
            };
            let (y, arg) = max_forward(&g, x.view());
            for ((n, c, oy, ox), &got) in y.indexed_iter() {
                let (mut want, mut first) = (f32::NEG_INFINITY, None);
                for i in 0..kernel {
                    for j in 0..kernel {
                        let r = (oy * stride + i * dilation) as isize - pad as isize;
                        let q = (ox * stride + j * dilation) as isize - pad as isize;
                        if (0..5).contains(&r) && (0..5).contains(&q) {
                            let v = x[[n, c, r as usize, q as usize]];
                            if v > want {
                                (want, first) = (v, Some(r as usize * 5 + q as usize));
                            }
                        }
                    }
                }
                assert_eq!(got, want, "{g:?} at {:?}", (n, c, oy, ox));
                assert_eq!(Some(arg[[n, c, oy, ox]] as usize), first, "{g:?}");
            }
        }
    }

    #[test]
    fn the_plain_2x2_pool_takes_the_first_maximum_on_any_width() {
        // Widths with 1 to 40 outputs per row (several vector steps and a masked tail), with and
        // without an unread last column; ties, -inf and NaN included.
        for wo in 1..=40 {
            for w in [2 * wo, 2 * wo + 1] {
                let h = 5;
                let xp: Vec<f32> = (0..h * w)
                    .map(|i| match i % 11 {
                        3 => f32::NAN,
                        7 => f32::NEG_INFINITY,
                        k => ((k * 37 + i / 5) % 6) as f32,
                    })
                    .collect();
                let g = Window2d {
                    h,
                    w,
                    kh: 2,
                    kw: 2,
                    stride: (2, 2),
                    dilation: (1, 1),
                    pad: (0, 0),
                    out: (2, wo),
                };
                let (mut y, mut arg) = (vec![0.0; 2 * wo], vec![0; 2 * wo]);
                max_plane(&g, &xp, &mut y, &mut arg);
                for (k, (&got, &at)) in y.iter().zip(&arg).enumerate() {
                    let (oy, ox) = (k / wo, k % wo);
                    let first = 2 * oy * w + 2 * ox;
                    let cells = [first, first + 1, first + w, first + w + 1];
                    let (mut want, mut index) = (f32::NEG_INFINITY, first);
                    for c in cells {
                        if xp[c] > want {
                            (want, index) = (xp[c], c);
                        }
                    }
                    assert_eq!((got, at as usize), (want, index), "w {w} output {k}");
                }
            }
        }
    }

    #[test]
    fn average_pool_divides_by_the_right_count() {
        let g = geo(1, 2, (3, 3));
        let x = Array4::<f32>::ones((1, 1, 5, 5));
        let excl = avg_forward(&g, x.view(), false);
        let incl = avg_forward(&g, x.view(), true);
        assert_eq!(excl[[0, 0, 0, 0]], 1.0);
        assert!((incl[[0, 0, 0, 0]] - 4.0 / 9.0).abs() < 1e-6);
    }

    #[test]
    fn average_pool_backward_matches_finite_differences() {
        for include in [false, true] {
            let g = geo(1, 2, (3, 3));
            let x = input();
            let r = Array::from_shape_fn((2, 3, 3, 3), |(a, b, c, d)| {
                ((a + 2 * b + 3 * c + 5 * d) as f32 * 0.37).cos()
            });
            let loss = |x: &Array4<f32>| (avg_forward(&g, x.view(), include) * &r).sum() as f64;
            let dx = avg_backward(&g, r.view(), include);
            for idx in [[0, 0, 0, 0], [1, 2, 4, 4], [0, 1, 2, 3]] {
                let (mut p, mut m) = (x.clone(), x.clone());
                p[idx] += 1e-2;
                m[idx] -= 1e-2;
                let fd = (loss(&p) - loss(&m)) / 2e-2;
                assert!(
                    (fd - dx[idx] as f64).abs() < 1e-3,
                    "{idx:?}: {fd} vs {}",
                    dx[idx]
                );
            }
        }
    }
}
