//! Dense matrix products on strided slices (row-major by default), over matrixmultiply.
//!
//! The one place that calls into unsafe GEMM: every other kernel goes through these checked
//! wrappers.

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
}

impl Element for f32 {
    const KERNEL: Kernel<f32> = matrixmultiply::sgemm;
}

impl Element for f64 {
    const KERNEL: Kernel<f64> = matrixmultiply::dgemm;
}

/// c = alpha · a · b + beta · c, with c a contiguous row-major `a.rows × b.cols` matrix.
pub fn gemm<T: Element>(alpha: T, a: Mat<T>, b: Mat<T>, beta: T, c: &mut [T]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions {k} and {}", b.rows);
    assert!(
        c.len() >= m * n,
        "output holds {} values, needs {}",
        c.len(),
        m * n
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].iter_mut().for_each(|v| *v *= beta);
        return;
    }
    assert!(a.last_index() < a.data.len() && b.last_index() < b.data.len());
    assert!(a.row_stride >= 0 && a.col_stride >= 0 && b.row_stride >= 0 && b.col_stride >= 0);
    // SAFETY: the asserts above keep every element the product reads inside `a.data`, `b.data`,
    // and every element it writes inside `c`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
