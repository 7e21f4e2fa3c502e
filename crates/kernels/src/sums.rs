//! Sums over slices in f64 with several independent accumulators, so the loops vectorise while
//! every sum still adds its terms in a fixed order (results do not depend on threads or on the
//! CPU's vector width). Used by BatchNorm's statistics and by pare-train's RLS (P·u).

/// Independent accumulators per sum.
const LANES: usize = 8;

/// (Σ p, Σ q) over i of `f(a[i], b[i]) = (p, q)`, in f64, over `LANES` accumulators.
pub fn slice_sums<T: Copy + Into<f64>>(
    a: &[T],
    b: &[T],
    f: impl Fn(f64, f64) -> (f64, f64),
) -> (f64, f64) {
    let (mut p, mut q) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (a_body, b_body) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = a_body.remainder().iter().zip(b_body.remainder());
    for (ca, cb) in a_body.zip(b_body) {
        for l in 0..LANES {
            let (dp, dq) = f(ca[l].into(), cb[l].into());
            p[l] += dp;
            q[l] += dq;
        }
    }
    let (mut sp, mut sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    for (&va, &vb) in tail {
        let (dp, dq) = f(va.into(), vb.into());
        sp += dp;
        sq += dq;
    }
    (sp, sq)
}

/// Σ v over `values`, in f64 over `LANES` accumulators.
pub fn sum(values: &[f32]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let body = values.chunks_exact(LANES);
    let tail: f64 = body.remainder().iter().map(|&v| v as f64).sum();
    for chunk in body {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += v as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// (Σ v, Σ v²) over `values`: BatchNorm's statistics of one plane, whoever computes them.
pub fn sum_and_squares(values: &[f32]) -> (f64, f64) {
    slice_sums(values, values, |v, _| (v, v * v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_lanes_and_tail_match_a_plain_loop() {
        let a: Vec<f32> = (0..19).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..19).map(|i| (i as f32 * 0.91).cos()).collect();
        let (p, q) = slice_sums(&a, &b, |x, y| (x * y, x));
        let want_p: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let want_q: f64 = a.iter().map(|&x| x as f64).sum();
        assert!((p - want_p).abs() < 1e-12 && (q - want_q).abs() < 1e-12);
        assert!((sum(&a) - want_q).abs() < 1e-12);
    }
}
