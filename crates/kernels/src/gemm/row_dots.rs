//! c = α·a·b + β·c where a's rows and b's columns are contiguous: every value is a dot product
//! of two contiguous runs, 4 × 4 of them at a time in AVX-512 registers. Also `broadcast_rows`,
//! the thin products that skip packing. Both only run on CPUs with AVX-512F; `gemm` checks.

use super::{store_scaled, Mat};
use crate::simd::{Mask, Zmm, LANES};

/// `b_col(j)` is b's column j, `a.cols` values.
#[target_feature(enable = "avx512f")]
pub(super) fn row_dots<'b>(
    alpha: f32,
    a: Mat<f32>,
    n: usize,
    b_col: impl Fn(usize) -> &'b [f32],
    beta: f32,
    c: &mut [f32],
) {
    let (m, k) = (a.rows, a.cols);
    // Row i of a: k contiguous values (checked by the caller's bounds asserts and by
    // slicing here).
    let a_row = |i: usize| &a.data[i * a.row_stride as usize..][..k];
    let full = k - k % LANES;
    let tail = Mask::first(k % LANES);
    for i0 in (0..m).step_by(4) {
        let rows: [Option<&[f32]>; 4] =
            std::array::from_fn(|r| (i0 + r < m).then(|| a_row(i0 + r)));
        for j0 in (0..n).step_by(4) {
            let cols: [Option<&[f32]>; 4] =
                std::array::from_fn(|s| (j0 + s < n).then(|| b_col(j0 + s)));
            let mut acc = [[Zmm::zero(); 4]; 4];
            let load = |v: Option<&[f32]>, p: usize, mask: Mask| match v {
                // SAFETY: the masked lanes are inside the slice: p + popcount(mask) ≤ k.
                Some(v) => unsafe { Zmm::load_masked(mask, v[p..].as_ptr()) },
                None => Zmm::zero(),
            };
            let mut step = |p: usize, mask: Mask| {
                let av = rows.map(|v| load(v, p, mask));
                let bv = cols.map(|v| load(v, p, mask));
                for (acc, a) in acc.iter_mut().zip(av) {
                    for (acc, b) in acc.iter_mut().zip(bv) {
                        *acc = a.mul_add(b, *acc);
                    }
                }
            };
            for p in (0..full).step_by(LANES) {
                step(p, Mask::ALL);
            }
            if full < k {
                step(full, tail);
            }
            for (r, acc) in acc.iter().enumerate().take(m - i0) {
                for (s, acc) in acc.iter().enumerate().take(n - j0) {
                    let out = &mut c[(i0 + r) * n + j0 + s];
                    let dot = alpha * acc.sum();
                    *out = if beta == 0.0 { dot } else { dot + beta * *out };
                }
            }
        }
    }
}

/// Rows of c at a time.
const ROWS: usize = 8;

/// c = α·a·b + β·c for b with contiguous rows, without packing: each 8 × 32 block of c
/// accumulates a's values (broadcast) times b's rows, read where they lie. `b_row(p)` is
/// b's row p, n values. Two registers per row of c, so that even a few rows keep enough
/// independent sums in flight to hide the latency of each multiply-add.
#[target_feature(enable = "avx512f")]
pub(super) fn broadcast_rows<'b>(
    alpha: f32,
    a: Mat<f32>,
    n: usize,
    b_row: impl Fn(usize) -> &'b [f32],
    beta: f32,
    c: &mut [f32],
) {
    let (m, k) = (a.rows, a.cols);
    let a_at = |i: usize, p: usize| {
        a.data[(i as isize * a.row_stride + p as isize * a.col_stride) as usize]
    };
    for i0 in (0..m).step_by(ROWS) {
        let rows = ROWS.min(m - i0);
        for j0 in (0..n).step_by(2 * LANES) {
            let widths = [LANES.min(n - j0), (n - j0).saturating_sub(LANES).min(LANES)];
            let masks = widths.map(Mask::first);
            let mut acc = [[Zmm::zero(); 2]; ROWS];
            for p in 0..k {
                let row = b_row(p)[j0..].as_ptr();
                // SAFETY: the masks read only inside b's row, j0 + widths ≤ n; an empty
                // second half reads nothing (and its address is only computed).
                let bv = unsafe {
                    [
                        Zmm::load_masked(masks[0], row),
                        Zmm::load_masked(masks[1], row.wrapping_add(LANES)),
                    ]
                };
                for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                    let av = Zmm::splat(a_at(i0 + r, p));
                    acc[0] = av.mul_add(bv[0], acc[0]);
                    acc[1] = av.mul_add(bv[1], acc[1]);
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                let out = &mut c[(i0 + r) * n + j0..];
                for (half, (v, width)) in acc.iter().zip(widths).enumerate() {
                    if width > 0 {
                        let at = half * LANES;
                        store_scaled(&mut out[at..][..width], *v, alpha, beta);
                    }
                }
            }
        }
    }
}
