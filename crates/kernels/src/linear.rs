//! Gemm (Y = α·op(A)·op(B) + β·C) and MatMul with a matrix right operand: forward and backward.

use crate::elementwise::unbroadcast;
use crate::gemm::{gemm, Mat};
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// Attributes of an ONNX Gemm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmSpec {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

fn op<'a>(x: &'a [f32], shape: &[usize], trans: bool) -> Mat<'a, f32> {
    let m = Mat::new(x, shape[0], shape[1]);
    if trans {
        m.t()
    } else {
        m
    }
}

/// Y = α·op(A)·op(B) + β·C.
pub fn gemm_forward(
    spec: GemmSpec,
    a: &ArrayViewD<f32>,
    b: &ArrayViewD<f32>,
    c: Option<&ArrayViewD<f32>>,
) -> ArrayD<f32> {
    let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
    let (oa, ob) = (
        op(a.as_slice().expect("std"), a.shape(), spec.trans_a),
        op(b.as_slice().expect("std"), b.shape(), spec.trans_b),
    );
    let (m, n) = (oa.rows, ob.cols);
    let mut y = match c {
        Some(c) if spec.beta != 0.0 => c
            .broadcast(IxDyn(&[m, n]))
            .expect("C broadcasts to [M, N]")
            .mapv(|v| v * spec.beta),
        _ => ArrayD::zeros(IxDyn(&[m, n])),
    };
    gemm(spec.alpha, oa, ob, 1.0, y.as_slice_mut().expect("fresh"));
    y
}

/// (dA, dB, dC) in the layouts A, B and C are stored in.
pub fn gemm_backward(
    spec: GemmSpec,
    a: &ArrayViewD<f32>,
    b: &ArrayViewD<f32>,
    c_shape: Option<&[usize]>,
    dy: &ArrayViewD<f32>,
) -> (ArrayD<f32>, ArrayD<f32>, Option<ArrayD<f32>>) {
    let (a, b, dy) = (
        a.as_standard_layout(),
        b.as_standard_layout(),
        dy.as_standard_layout(),
    );
    let (m, n) = (dy.shape()[0], dy.shape()[1]);
    let oa = op(a.as_slice().expect("std"), a.shape(), spec.trans_a);
    let ob = op(b.as_slice().expect("std"), b.shape(), spec.trans_b);
    let g = Mat::new(dy.as_slice().expect("std"), m, n);
    let mut da = ArrayD::zeros(a.raw_dim());
    if spec.trans_a {
        gemm(
            spec.alpha,
            ob,
            g.t(),
            0.0,
            da.as_slice_mut().expect("fresh"),
        ); // [K, M]
    } else {
        gemm(
            spec.alpha,
            g,
            ob.t(),
            0.0,
            da.as_slice_mut().expect("fresh"),
        ); // [M, K]
    }
    let mut db = ArrayD::zeros(b.raw_dim());
    if spec.trans_b {
        gemm(
            spec.alpha,
            g.t(),
            oa,
            0.0,
            db.as_slice_mut().expect("fresh"),
        ); // [N, K]
    } else {
        gemm(
            spec.alpha,
            oa.t(),
            g,
            0.0,
            db.as_slice_mut().expect("fresh"),
        ); // [K, N]
    }
    let dc = c_shape.map(|s| unbroadcast(dy.mapv(|v| v * spec.beta), s));
    (da, db, dc)
}

/// Y = A·B for A of shape [..., K] and a matrix B [K, N].
pub fn matmul_forward(a: &ArrayViewD<f32>, b: &ArrayViewD<f32>) -> Option<ArrayD<f32>> {
    let (k, n) = (*b.shape().first()?, *b.shape().get(1)?);
    if b.ndim() != 2 || a.shape().last() != Some(&k) {
        return None;
    }
    let rows = a.len() / k.max(1);
    let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
    let mut shape = a.shape().to_vec();
    *shape.last_mut()? = n;
    let mut y = ArrayD::zeros(IxDyn(&shape));
    gemm(
        1.0,
        Mat::new(a.as_slice()?, rows, k),
        Mat::new(b.as_slice()?, k, n),
        0.0,
        y.as_slice_mut()?,
    );
    Some(y)
}

/// (dA, dB) of A·B for a matrix B.
pub fn matmul_backward(
    a: &ArrayViewD<f32>,
    b: &ArrayViewD<f32>,
    dy: &ArrayViewD<f32>,
) -> (ArrayD<f32>, ArrayD<f32>) {
    let (k, n) = (b.shape()[0], b.shape()[1]);
    let rows = a.len() / k.max(1);
    let (a, b, dy) = (
        a.as_standard_layout(),
        b.as_standard_layout(),
        dy.as_standard_layout(),
    );
    let (am, bm, g) = (
        Mat::new(a.as_slice().expect("std"), rows, k),
        Mat::new(b.as_slice().expect("std"), k, n),
        Mat::new(dy.as_slice().expect("std"), rows, n),
    );
    let mut da = ArrayD::zeros(a.raw_dim());
    gemm(1.0, g, bm.t(), 0.0, da.as_slice_mut().expect("fresh"));
    let mut db = ArrayD::zeros(b.raw_dim());
    gemm(1.0, am.t(), g, 0.0, db.as_slice_mut().expect("fresh"));
    (da, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    fn arr(shape: &[usize], seed: f32) -> ArrayD<f32> {
        let n: usize = shape.iter().product();
        Array::from_shape_vec(
            IxDyn(shape),
            (0..n).map(|i| ((i as f32 + seed) * 0.613).sin()).collect(),
        )
        .unwrap()
    }

    fn check(f: &dyn Fn(&ArrayD<f32>) -> f64, x: &ArrayD<f32>, grad: &ArrayD<f32>, what: &str) {
        crate::testing::check_gradient(f, x, grad, 1, 1e-3, what);
    }

    #[test]
    fn gemm_gradients_match_for_every_transpose() {
        let (m, k, n) = (3, 4, 5);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let spec = GemmSpec {
                alpha: 0.7,
                beta: 1.3,
                trans_a: ta,
                trans_b: tb,
            };
            let a = arr(&if ta { [k, m] } else { [m, k] }, 1.0);
            let b = arr(&if tb { [n, k] } else { [k, n] }, 2.0);
            let c = arr(&[n], 3.0);
            let r = arr(&[m, n], 4.0);
            let y = gemm_forward(spec, &a.view(), &b.view(), Some(&c.view()));
            // Reference: the definition.
            let av = |i: usize, j: usize| if ta { a[[j, i]] } else { a[[i, j]] };
            let bv = |i: usize, j: usize| if tb { b[[j, i]] } else { b[[i, j]] };
            for i in 0..m {
                for j in 0..n {
                    let want =
                        0.7 * (0..k).map(|q| av(i, q) * bv(q, j)).sum::<f32>() + 1.3 * c[[j]];
                    assert!((y[[i, j]] - want).abs() < 1e-5);
                }
            }
            let (da, db, dc) = gemm_backward(spec, &a.view(), &b.view(), Some(&[n]), &r.view());
            let loss = |a: &ArrayD<f32>, b: &ArrayD<f32>, c: &ArrayD<f32>| {
                (gemm_forward(spec, &a.view(), &b.view(), Some(&c.view())) * &r)
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>()
            };
            check(&|x| loss(x, &b, &c), &a, &da, "dA");
            check(&|x| loss(&a, x, &c), &b, &db, "dB");
            check(&|x| loss(&a, &b, x), &c, &dc.unwrap(), "dC");
        }
    }

    #[test]
    fn matmul_over_leading_dims_matches() {
        let a = arr(&[2, 3, 4], 1.0);
        let b = arr(&[4, 5], 2.0);
        let r = arr(&[2, 3, 5], 3.0);
        let (da, db) = matmul_backward(&a.view(), &b.view(), &r.view());
        let loss = |a: &ArrayD<f32>, b: &ArrayD<f32>| {
            (matmul_forward(&a.view(), &b.view()).unwrap() * &r)
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>()
        };
        check(&|x| loss(x, &b), &a, &da, "dA");
        check(&|x| loss(&a, x), &b, &db, "dB");
    }
}
