//! Dense matrix products on strided slices (row-major by default).
//!
//! The one place that calls into unsafe GEMM: every other kernel goes through these checked
//! wrappers. On CPUs with AVX-512, f32 products run on this crate's kernels: products whose
//! operands both run contiguously along a long inner dimension (a weight gradient: dy ·
//! patchesᵀ) are dot products of rows (`row_dots`), thin products whose b has contiguous rows
//! skip packing (`broadcast_rows`), and the rest go through packed panels and a 12- or 8-row
//! register tile (`packed`). Everything else (f64, other CPUs) goes to matrixmultiply.
//!
//! `ShiftedRows` is a b whose rows start anywhere in one slice: an implicit-GEMM convolution's
//! patch matrix, read in place by the same kernels (copied out first where they do not run).

#[cfg(target_arch = "x86_64")]
mod packed;
#[cfg(target_arch = "x86_64")]
mod row_dots;

#[cfg(target_arch = "x86_64")]
use crate::simd::{self, Mask, Zmm};

/// A matrix view: rows × cols over `data`, element (r, c) at `r * row_stride + c * col_stride`.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: isize,
    pub col_stride: isize,
}

impl<'a, T> Mat<'a, T> {
    /// A contiguous row-major matrix.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        assert!(
            data.len() >= rows * cols,
            "matrix {rows}x{cols} over {} values",
            data.len()
        );
        Mat {
            data,
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn last_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return 0;
        }
        ((self.rows - 1) as isize * self.row_stride + (self.cols - 1) as isize * self.col_stride)
            as usize
    }
}

/// A matrix whose row r is the `cols` contiguous values of `data` from `starts[r]` on. An
/// implicit-GEMM convolution's patch matrix is one: row (channel, tap) is the zero-padded input
/// shifted by the tap, so the patches are read where they lie instead of being copied out.
#[derive(Clone, Copy)]
pub struct ShiftedRows<'a> {
    data: &'a [f32],
    starts: &'a [usize],
    cols: usize,
}

impl<'a> ShiftedRows<'a> {
    pub fn new(data: &'a [f32], starts: &'a [usize], cols: usize) -> Self {
        assert!(
            starts.iter().all(|s| s + cols <= data.len()),
            "rows of {cols} values from {starts:?} over {} values",
            data.len()
        );
        ShiftedRows { data, starts, cols }
    }

    fn rows(&self) -> usize {
        self.starts.len()
    }

    fn row(&self, r: usize) -> &'a [f32] {
        &self.data[self.starts[r]..][..self.cols]
    }

    /// The rows copied into a contiguous row-major matrix, for the kernels that need strides.
    fn gathered(&self) -> Vec<f32> {
        (0..self.rows())
            .flat_map(|r| self.row(r))
            .copied()
            .collect()
    }
}

/// matrixmultiply's `sgemm`/`dgemm` signature: (m, k, n, α, a, a's row and column strides, b,
/// b's strides, β, c, c's strides).
///
/// Calling one is unsafe as matrixmultiply's are: every element addressed through the pointers
/// and strides must be inside the buffers.
pub type Kernel<T> = unsafe fn(
    usize,
    usize,
    usize,
    T,
    *const T,
    isize,
    isize,
    *const T,
    isize,
    isize,
    T,
    *mut T,
    isize,
    isize,
);

/// An element type with a matrixmultiply kernel.
pub trait Element: Copy + PartialEq + std::ops::MulAssign {
    const KERNEL: Kernel<Self>;

    /// Computes the product with this crate's own kernels when it has them for this CPU and
    /// these operands; false leaves `c` untouched (and matrixmultiply computes it).
    fn own_product(
        _alpha: Self,
        _a: Mat<Self>,
        _b: Mat<Self>,
        _beta: Self,
        _c: &mut [Self],
    ) -> bool {
        false
    }
}

impl Element for f32 {
    const KERNEL: Kernel<f32> = matrixmultiply::sgemm;

    fn own_product(alpha: f32, a: Mat<f32>, b: Mat<f32>, beta: f32, c: &mut [f32]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if simd::features().avx512f {
            let (k, n) = (a.cols, b.cols);
            if a.col_stride == 1 && b.row_stride == 1 && k >= LONG_DOTS {
                let b_col = |j: usize| &b.data[j * b.col_stride as usize..][..k];
                // SAFETY: the CPU has AVX-512F, the feature the function is compiled for; the
                // asserts in `gemm` and `settled` keep every row and column inside a and b.
                unsafe { row_dots::row_dots(alpha, a, n, b_col, beta, c) };
                return true;
            }
            // Few rows or a short inner dimension: packing b would cost about as much as the
            // product.
            if b.col_stride == 1 && (a.rows <= THIN || k <= THIN) {
                let b_row = |p: usize| &b.data[p * b.row_stride as usize..][..n];
                // SAFETY: AVX-512F and bounds as for `row_dots` above.
                unsafe { row_dots::broadcast_rows(alpha, a, n, b_row, beta, c) };
                return true;
            }
            // SAFETY: the CPU has AVX-512F, `packed::gemm`'s requirement.
            unsafe { packed::gemm(alpha, a, &b, beta, c) };
            return true;
        }
        false
    }
}

/// The shortest inner dimension for which `row_dots` beats packing: a lowered weight gradient
/// sums over thousands of positions and wins (`cargo xtask bench kernels`: against
/// matrixmultiply, conv1 and conv2 backward 30% and 10% faster; against `packed`, conv1 backward
/// twice as fast); Winograd's 128 × 128 products over 272 tiles lost 20%.
const LONG_DOTS: usize = 512;

/// The most rows of a, or the longest inner dimension, for which `broadcast_rows` beats packing
/// (LeNet-5's first convolution has 6 output channels, its second one's input gradient an inner
/// dimension of 6; at an inner dimension of 9, conv1's forward, `packed` was twice as fast).
const THIN: usize = 8;

impl Element for f64 {
    const KERNEL: Kernel<f64> = matrixmultiply::dgemm;
}

/// c = alpha · a · b + beta · c, with c a contiguous row-major `a.rows × b.cols` matrix.
pub fn gemm<T: Element>(alpha: T, a: Mat<T>, b: Mat<T>, beta: T, c: &mut [T]) {
    if settled_product(&a, &b, beta, c) {
        return;
    }
    if T::own_product(alpha, a, b, beta, c) {
        return;
    }
    matrixmultiply_gemm(alpha, a, b, beta, c);
}

/// `gemm` computed by matrixmultiply alone, never by this crate's own kernels: what `gemm` does
/// where those do not run, and the baseline `cargo xtask bench kernels` times them against.
pub fn matrixmultiply_gemm<T: Element>(alpha: T, a: Mat<T>, b: Mat<T>, beta: T, c: &mut [T]) {
    if settled_product(&a, &b, beta, c) {
        return;
    }
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // SAFETY: the asserts in `settled_product` keep every element the product reads inside
    // `a.data`, `b.data`, and every element it writes inside `c`.
    unsafe {
        (T::KERNEL)(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.row_stride,
            a.col_stride,
            b.data.as_ptr(),
            b.row_stride,
            b.col_stride,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `settled` for a matrix b, whose bounds it checks too when there is a product to compute.
fn settled_product<T: Element>(a: &Mat<T>, b: &Mat<T>, beta: T, c: &mut [T]) -> bool {
    if settled(a, b.rows, b.cols, beta, c) {
        return true;
    }
    assert!(b.last_index() < b.data.len() && b.row_stride >= 0 && b.col_stride >= 0);
    false
}

/// c = α·a·b + β·c for b given as shifted rows, with c a contiguous row-major
/// `a.rows × b.cols` matrix: a convolution's output or input gradient from its patches.
pub fn gemm_shifted(alpha: f32, a: Mat<f32>, b: ShiftedRows, beta: f32, c: &mut [f32]) {
    if settled(&a, b.rows(), b.cols, beta, c) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd::features().avx512f {
        if a.rows <= THIN || a.cols <= THIN {
            // SAFETY: the CPU has AVX-512F, the feature the function is compiled for; `settled`
            // checked a's bounds and `ShiftedRows::new` b's.
            unsafe { row_dots::broadcast_rows(alpha, a, b.cols, |p| b.row(p), beta, c) };
        } else {
            // SAFETY: the CPU has AVX-512F, `packed::gemm`'s requirement.
            unsafe { packed::gemm(alpha, a, &b, beta, c) };
        }
        return;
    }
    let rows = b.gathered();
    gemm(alpha, a, Mat::new(&rows, b.rows(), b.cols), beta, c);
}

/// c = α·a·bᵀ + β·c for b given as shifted rows, with c a contiguous row-major
/// `a.rows × b.rows` matrix: a convolution's weight gradient, a sum along the patches.
pub fn gemm_shifted_t(alpha: f32, a: Mat<f32>, b: ShiftedRows, beta: f32, c: &mut [f32]) {
    if settled(&a, b.cols, b.rows(), beta, c) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd::features().avx512f {
        if a.col_stride == 1 && b.cols >= LONG_DOTS {
            // SAFETY: the CPU has AVX-512F, the feature the function is compiled for; `settled`
            // checked a's bounds and `ShiftedRows::new` b's.
            unsafe { row_dots::row_dots(alpha, a, b.rows(), |j| b.row(j), beta, c) };
        } else {
            // SAFETY: the CPU has AVX-512F, `packed::gemm`'s requirement.
            unsafe { packed::gemm(alpha, a, &packed::Transposed(b), beta, c) };
        }
        return;
    }
    let rows = b.gathered();
    gemm(alpha, a, Mat::new(&rows, b.rows(), b.cols).t(), beta, c);
}

/// Checks the shapes of c = α·a·b + β·c for a b of `k × n`, and settles the products with
/// nothing to sum: true when c is empty or, with k = 0, has been scaled by β.
fn settled<T: Element>(a: &Mat<T>, k: usize, n: usize, beta: T, c: &mut [T]) -> bool {
    let m = a.rows;
    assert_eq!(a.cols, k, "inner dimensions {} and {k}", a.cols);
    assert!(
        c.len() >= m * n,
        "output holds {} values, needs {}",
        c.len(),
        m * n
    );
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        c[..m * n].iter_mut().for_each(|v| *v *= beta);
        return true;
    }
    assert!(a.last_index() < a.data.len() && a.row_stride >= 0 && a.col_stride >= 0);
    false
}

/// dst = α·v + β·dst over dst's values (at most `LANES`, the first lanes of v); β = 0 never
/// reads dst. How every AVX-512 kernel here writes its results into c.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn store_scaled(dst: &mut [f32], v: Zmm, alpha: f32, beta: f32) {
    let mask = Mask::first(dst.len());
    let mut r = Zmm::splat(alpha).mul(v);
    // SAFETY: the mask covers only dst's values.
    unsafe {
        if beta != 0.0 {
            let old = Zmm::load_masked(mask, dst.as_ptr());
            r = Zmm::splat(beta).mul_add(old, r);
        }
        r.store_masked(mask, dst.as_mut_ptr());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks gemm(α, a, b, β, c) against a loop in f64, with β = 0 ignoring c's NaNs.
    fn check(m: usize, n: usize, k: usize, a: Mat<f32>, b: Mat<f32>, beta: f32) {
        let start = if beta == 0.0 { f32::NAN } else { 1.5 };
        let mut c = vec![start; m * n];
        gemm(2.0, a, b, beta, &mut c);
        let at = |x: &Mat<f32>, i: usize, j: usize| {
            x.data[(i as isize * x.row_stride + j as isize * x.col_stride) as usize] as f64
        };
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| at(&a, i, p) * at(&b, p, j)).sum();
                let old = if beta == 0.0 {
                    0.0
                } else {
                    (beta * start) as f64
                };
                let want = 2.0 * dot + old;
                let got = c[i * n + j] as f64;
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{m}x{n}x{k} ({i}, {j}): {got} vs {want}"
                );
            }
        }
    }

    fn values(n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|v| ((v as f32) * scale).sin()).collect()
    }

    #[test]
    fn products_and_transposes_match_a_naive_loop() {
        let a: Vec<f32> = (0..6).map(|v| v as f32).collect(); // 2x3
        let b: Vec<f32> = (0..12).map(|v| (v as f32) * 0.5).collect(); // 3x4
        let mut c = vec![1.0; 8];
        gemm(2.0, Mat::new(&a, 2, 3), Mat::new(&b, 3, 4), 1.0, &mut c);
        for i in 0..2 {
            for j in 0..4 {
                let want: f32 =
                    1.0 + 2.0 * (0..3).map(|k| a[i * 3 + k] * b[k * 4 + j]).sum::<f32>();
                assert_eq!(c[i * 4 + j], want);
            }
        }
        // aᵀ (3x2) times a (2x3)
        let mut d = vec![0.0; 9];
        gemm(1.0, Mat::new(&a, 2, 3).t(), Mat::new(&a, 2, 3), 0.0, &mut d);
        assert_eq!(d[1], a[0] * a[1] + a[3] * a[4]);
    }

    #[test]
    fn dot_product_form_matches_a_naive_loop() {
        // a (m × k) row-major, b = bᵀ of an (n × k) row-major matrix: both contiguous along k.
        // Sizes off the 4 × 4 blocks and 16 lanes, inner dimensions from `LONG_DOTS` on (the
        // shorter ones are packed).
        for (m, n, k, beta) in [
            (5, 7, LONG_DOTS + 37, 0.0),
            (4, 4, LONG_DOTS, 0.5),
            (9, 2, LONG_DOTS + 100, 0.0),
            (1, 1, LONG_DOTS + 3, 2.0),
        ] {
            let (a, bt) = (values(m * k, 0.37), values(n * k, 0.71));
            check(m, n, k, Mat::new(&a, m, k), Mat::new(&bt, n, k).t(), beta);
        }
    }

    #[test]
    fn thin_products_match_a_naive_loop() {
        // Few rows of a, or a short inner dimension (a transposed as in an input gradient);
        // widths off the 16 lanes.
        for (m, n, k, beta) in [
            (6, 37, 25, 0.0),
            (3, 16, 40, 0.5),
            (30, 50, 6, 0.0),
            (9, 17, 3, 2.0),
        ] {
            let (a, b) = (values(m * k, 0.37), values(k * n, 0.71));
            check(m, n, k, Mat::new(&a, m, k), Mat::new(&b, k, n), beta);
            check(m, n, k, Mat::new(&a, k, m).t(), Mat::new(&b, k, n), beta);
        }
    }

    #[test]
    fn products_with_shifted_rows_match_a_naive_loop() {
        // Rows that overlap and start anywhere, as a padded image's shifted views do; shapes for
        // each kernel: few rows of a (broadcast), packed tiles with edges, and for a·bᵀ long
        // rows (row dots) and short ones (packed with bᵀ gathered).
        for (m, rows, cols, beta) in [
            (6, 25, 70, 0.0),
            (30, 9, 37, 0.5),
            (13, 40, 150, 0.0),
            (20, 33, LONG_DOTS + 21, 2.0),
        ] {
            let data = values(cols + 3 * rows + 7, 0.53);
            let starts: Vec<usize> = (0..rows).map(|r| (r * 7) % (3 * rows + 7)).collect();
            let b = ShiftedRows::new(&data, &starts, cols);
            let at = |r: usize, j: usize| data[starts[r] + j] as f64;
            let start = if beta == 0.0 { f32::NAN } else { 1.5 };
            let old = if beta == 0.0 {
                0.0
            } else {
                (beta * start) as f64
            };

            // a (m × rows) · b
            let a = values(m * rows, 0.37);
            let mut c = vec![start; m * cols];
            gemm_shifted(2.0, Mat::new(&a, m, rows), b, beta, &mut c);
            for (i, j) in (0..m).flat_map(|i| (0..cols).map(move |j| (i, j))) {
                let dot: f64 = (0..rows).map(|r| a[i * rows + r] as f64 * at(r, j)).sum();
                let want = 2.0 * dot + old;
                let got = c[i * cols + j] as f64;
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "a·b {m}x{rows}x{cols} ({i}, {j}): {got} vs {want}"
                );
            }

            // a (m × cols) · bᵀ
            let a = values(m * cols, 0.29);
            let mut c = vec![start; m * rows];
            gemm_shifted_t(2.0, Mat::new(&a, m, cols), b, beta, &mut c);
            for (i, r) in (0..m).flat_map(|i| (0..rows).map(move |r| (i, r))) {
                let dot: f64 = (0..cols).map(|j| a[i * cols + j] as f64 * at(r, j)).sum();
                let want = 2.0 * dot + old;
                let got = c[i * rows + r] as f64;
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "a·bᵀ {m}x{cols}x{rows} ({i}, {r}): {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn packed_products_match_a_naive_loop() {
        // Sizes off the 8- and 12-row tiles (the row count picks one), the 32 columns and the
        // packed blocks (16 tiles of rows, 128 inner, 1024 columns), so that edge tiles, several
        // inner blocks adding up and several column blocks all run, down to one column and
        // (with b transposed) one row; b row-major and transposed, a transposed.
        for (m, n, k, beta) in [
            (13, 33, 129, 0.0),
            (200, 40, 300, 0.5),
            (203, 40, 300, 0.5),
            (25, 1030, 20, 0.0),
            (12, 32, 128, 2.0),
            (20, 1, 40, 0.5),
            (1, 5, 40, 0.0),
        ] {
            let (a, b) = (values(m * k, 0.37), values(k * n, 0.71));
            check(m, n, k, Mat::new(&a, m, k), Mat::new(&b, k, n), beta);
            check(
                m,
                n,
                k,
                Mat::new(&a, k, m).t(),
                Mat::new(&b, n, k).t(),
                beta,
            );
        }
    }
}
