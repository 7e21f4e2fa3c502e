//! Test support for the kernels: central finite differences against a computed gradient, and
//! test inputs.

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
