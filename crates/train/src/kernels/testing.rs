//! Test support for the kernels: central finite differences against a computed gradient, test
//! inputs, and the convolution's definition as a reference.

use super::conv::ConvGeometry;
use super::window::Window2d;
use ndarray::ArrayD;

/// Checks `grad` (dL/dx) against central differences of `loss` at every `stride`-th element of
/// `x`, with step 1e-2 and relative tolerance `tolerance`.
pub fn check_gradient(
    loss: &dyn Fn(&ArrayD<f32>) -> f64,
    x: &ArrayD<f32>,
    grad: &ArrayD<f32>,
    stride: usize,
    tolerance: f64,
    what: &str,
) {
    for i in (0..x.len()).step_by(stride) {
        let (mut p, mut m) = (x.clone(), x.clone());
        p.as_slice_mut().unwrap()[i] += 1e-2;
        m.as_slice_mut().unwrap()[i] -= 1e-2;
        let fd = (loss(&p) - loss(&m)) / 2e-2;
        let got = grad.as_slice().unwrap()[i] as f64;
        assert!(
            (fd - got).abs() < tolerance * (1.0 + fd.abs()),
            "{what}[{i}]: {fd} vs {got}"
        );
    }
}

/// `n` smooth values in [−1, 1], different for each `seed`.
pub fn wave(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 + seed) * 0.7123).sin()).collect()
}

/// The convolution's definition, one multiply at a time in f64: NCHW `x`, OIHW `w`, bias `b`.
pub fn conv_reference(geo: &ConvGeometry, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let Window2d {
        h,
        w: wd,
        kh,
        kw,
        out,
        ..
    } = geo.window;
    let (rows, columns) = geo.window.axes();
    let (cg, mg) = (geo.c_in / geo.group, geo.c_out / geo.group);
    let mut y = Vec::with_capacity(geo.batch * geo.c_out * out.0 * out.1);
    for n in 0..geo.batch {
        for m in 0..geo.c_out {
            let g = m / mg;
            for oy in 0..out.0 {
                for ox in 0..out.1 {
                    let mut acc = b[m] as f64;
                    for c in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                if let (Some(yy), Some(xx)) =
                                    (rows.input(oy, i), columns.input(ox, j))
                                {
                                    let xv = x[((n * geo.c_in + g * cg + c) * h + yy) * wd + xx];
                                    acc += w[((m * cg + c) * kh + i) * kw + j] as f64 * xv as f64;
                                }
                            }
                        }
                    }
                    y.push(acc as f32);
                }
            }
        }
    }
    y
}
