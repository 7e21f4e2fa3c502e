//! One layer's RLS state: P, the inverse autocorrelation of its mean inputs, with the
//! Sherman–Morrison update, the OBS saliency of input sets and the Schur-complement downdate that
//! follows a surgery (docs/methods/rls.md).

use ndarray::{s, Array2};
use pare_kernels::gemm::{gemm, Mat};
use pare_kernels::sums::slice_sums;
use rayon::prelude::*;

/// P for one layer: the inverse of the discounted autocorrelation of the mean inputs seen,
/// R = λᵗ/α·I + Σ λ^{t−i} ū_i ū_iᵀ.
#[derive(Debug, Clone, PartialEq)]
pub struct RlsState {
    pub p: Array2<f64>,
    alpha: f64,
    lambda: f64,
    steps: u64,
    /// Largest diagonal P may reach when λ < 1 (the wind-up guard); None turns it off.
    cap: Option<f64>,
    /// Times P was reset because γ was not positive (numerical breakdown).
    pub resets: u64,
    /// Per input, whether any mean input seen was non-zero: a dead channel's inputs never are.
    excited: Vec<bool>,
}

impl RlsState {
    pub fn new(n: usize, alpha: f64, lambda: f64) -> Self {
        RlsState {
            p: Array2::eye(n) * alpha,
            alpha,
            lambda,
            steps: 0,
            cap: Some(alpha),
            resets: 0,
            excited: vec![false; n],
        }
    }

    /// Sets the wind-up cap on diag(P) (α by default); None lets P follow RLS exactly.
    pub fn with_cap(self, cap: Option<f64>) -> Self {
        RlsState { cap, ..self }
    }

    pub fn len(&self) -> usize {
        self.p.nrows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// P ← (P − v vᵀ/γ)/λ with v = P ū, γ = λ + ūᵀ v (κ = 1).
    pub fn update(&mut self, u: &[f64]) {
        let n = self.len();
        assert_eq!(
            u.len(),
            n,
            "mean input of length {} for P of size {n}",
            u.len()
        );
        for (e, &x) in self.excited.iter_mut().zip(u) {
            *e |= x != 0.0;
        }
        let p = self.p.as_slice().expect("standard layout");
        let v: Vec<f64> = p
            .par_chunks(n)
            .map(|row| slice_sums(row, u, |a, b| (a * b, 0.0)).0)
            .collect();
        let gamma = self.lambda + u.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
        if !(gamma > 0.0 && gamma.is_finite()) {
            self.p = Array2::eye(n) * self.alpha;
            self.resets += 1;
            return;
        }
        let inv_lambda = 1.0 / self.lambda;
        let p = self.p.as_slice_mut().expect("standard layout");
        p.par_chunks_mut(n).zip(&v).for_each(|(row, vi)| {
            let vi = vi / gamma;
            for (pj, vj) in row.iter_mut().zip(&v) {
                *pj = (*pj - vi * vj) * inv_lambda;
            }
        });
        self.steps += 1;
        if self.steps.is_multiple_of(64) {
            self.symmetrize();
        }
        // Wind-up guard: with λ < 1, directions the inputs never excite grow like λ^-t. Each
        // index i past the cap is scaled back to P_ii = cap by the congruence D·P·D with
        // d_i = √(cap/P_ii), which keeps P symmetric positive definite.
        if let (true, Some(cap)) = (self.lambda < 1.0, self.cap) {
            let d: Vec<f64> = self
                .p
                .diag()
                .iter()
                .map(|&pii| if pii > cap { (cap / pii).sqrt() } else { 1.0 })
                .collect();
            if d.iter().any(|&x| x < 1.0) {
                let p = self.p.as_slice_mut().expect("standard layout");
                p.par_chunks_mut(n).zip(&d).for_each(|(row, di)| {
                    row.iter_mut().zip(&d).for_each(|(v, dj)| *v *= di * dj);
                });
            }
        }
    }

    fn symmetrize(&mut self) {
        let t = self.p.t().to_owned();
        self.p = (&self.p + &t) * 0.5;
    }

    /// ½·tr(W_S P_SS⁻¹ W_Sᵀ): how much the layer's least-squares cost rises when the inputs `s`
    /// are removed and the other weights refit (OBS with P as the inverse Hessian). `w` has rows
    /// = outputs over all of P's inputs. Inputs never excited score 0: removing them costs nothing.
    pub fn saliency(&self, w: &Array2<f64>, s: &[usize]) -> f64 {
        if s.iter().all(|&i| !self.excited[i]) {
            return 0.0;
        }
        let pss = Array2::from_shape_fn((s.len(), s.len()), |(i, j)| self.p[[s[i], s[j]]]);
        let Some(l) = cholesky(&pss) else {
            // Not positive definite in floating point: the diagonal approximation.
            return 0.5
                * s.iter()
                    .map(|&j| w.column(j).iter().map(|x| x * x).sum::<f64>() / self.p[[j, j]])
                    .sum::<f64>();
        };
        let mut total = 0.0;
        for row in w.rows() {
            let b: Vec<f64> = s.iter().map(|&j| row[j]).collect();
            total += forward_substitute(&l, &b)
                .iter()
                .map(|y| y * y)
                .sum::<f64>();
        }
        0.5 * total
    }

    /// Removes inputs `drop` (sorted): P becomes the Schur complement P_RR − P_RS P_SS⁻¹ P_SR,
    /// which is exactly the inverse autocorrelation of the inputs that remain.
    pub fn remove(&mut self, drop: &[usize]) {
        if drop.is_empty() {
            return;
        }
        let n = self.len();
        let keep: Vec<usize> = (0..n).filter(|i| drop.binary_search(i).is_err()).collect();
        let pick = |rows: &[usize], cols: &[usize]| {
            Array2::from_shape_fn((rows.len(), cols.len()), |(i, j)| {
                self.p[[rows[i], cols[j]]]
            })
        };
        let prr = pick(&keep, &keep);
        let psr = pick(drop, &keep);
        self.p = match cholesky(&pick(drop, drop)) {
            Some(l) => {
                // X = L⁻¹ P_SR, so P_RS P_SS⁻¹ P_SR = Xᵀ X.
                let mut x = Array2::<f64>::zeros(psr.dim());
                for (c, col) in psr.columns().into_iter().enumerate() {
                    let y = forward_substitute(&l, &col.to_vec());
                    x.column_mut(c).assign(&ndarray::Array1::from(y));
                }
                prr - x.t().dot(&x)
            }
            None => prr,
        };
        self.excited = keep.iter().map(|&i| self.excited[i]).collect();
    }

    /// G·P for a gradient G with rows = outputs.
    pub fn precondition(&self, g: &Array2<f64>) -> Array2<f64> {
        // Fixed blocks of P's columns in parallel: every block packs only its own columns, and
        // each output element is the same sum whatever the split.
        const COLUMNS: usize = 256;
        let (m, n) = g.dim();
        let g = Mat::new(g.as_slice().expect("standard"), m, n);
        let p = self.p.as_slice().expect("standard");
        let starts: Vec<usize> = (0..n).step_by(COLUMNS).collect();
        let blocks: Vec<Vec<f64>> = starts
            .par_iter()
            .map(|&j0| {
                let cols = COLUMNS.min(n - j0);
                let block = Mat {
                    data: &p[j0..],
                    rows: n,
                    cols,
                    row_stride: n as isize,
                    col_stride: 1,
                };
                let mut out = vec![0.0; m * cols];
                gemm(1.0, g, block, 0.0, &mut out);
                out
            })
            .collect();
        let mut out = Array2::<f64>::zeros((m, n));
        for (&j0, block) in starts.iter().zip(blocks) {
            let cols = COLUMNS.min(n - j0);
            let block = Array2::from_shape_vec((m, cols), block).expect("m × cols product");
            out.slice_mut(s![.., j0..j0 + cols]).assign(&block);
        }
        out
    }
}

/// The lower Cholesky factor of a symmetric positive definite matrix; None if it is not one.
fn cholesky(a: &Array2<f64>) -> Option<Array2<f64>> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum();
            if i == j {
                let d = a[[i, i]] - dot;
                if !(d > 0.0 && d.is_finite()) {
                    return None;
                }
                l[[i, i]] = d.sqrt();
            } else {
                l[[i, j]] = (a[[i, j]] - dot) / l[[j, j]];
            }
        }
    }
    Some(l)
}

/// Solves L y = b for lower-triangular L.
fn forward_substitute(l: &Array2<f64>, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; b.len()];
    for i in 0..b.len() {
        let dot: f64 = (0..i).map(|k| l[[i, k]] * y[k]).sum();
        y[i] = (b[i] - dot) / l[[i, i]];
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inverse(a: &Array2<f64>) -> Array2<f64> {
        // Gauss–Jordan, fine for the small SPD matrices of these tests.
        let n = a.nrows();
        let mut m = a.clone();
        let mut inv = Array2::<f64>::eye(n);
        for i in 0..n {
            let p = m[[i, i]];
            for j in 0..n {
                m[[i, j]] /= p;
                inv[[i, j]] /= p;
            }
            for r in 0..n {
                if r != i {
                    let f = m[[r, i]];
                    for j in 0..n {
                        m[[r, j]] -= f * m[[i, j]];
                        inv[[r, j]] -= f * inv[[i, j]];
                    }
                }
            }
        }
        inv
    }

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    #[test]
    fn p_is_the_inverse_discounted_autocorrelation_of_the_means_seen() {
        let (n, alpha) = (5, 0.5);
        let mut state = RlsState::new(n, alpha, 1.0);
        let mut r = Array2::<f64>::eye(n) / alpha;
        let mut seed = 7;
        for _ in 0..40 {
            let u: Vec<f64> = (0..n).map(|_| lcg(&mut seed)).collect();
            state.update(&u);
            r = r + Array2::from_shape_fn((n, n), |(i, j)| u[i] * u[j]);
        }
        let err = (&state.p - &inverse(&r))
            .mapv(f64::abs)
            .fold(0.0f64, |a, &b| a.max(b));
        assert!(err < 1e-9, "max |P − R⁻¹| = {err}");
    }

    #[test]
    fn with_forgetting_p_follows_rls_exactly_without_the_guard_and_never_winds_up_with_it() {
        let (n, alpha, lambda) = (4, 0.5, 0.9);
        let mut exact = RlsState::new(n, alpha, lambda).with_cap(None);
        let mut r = Array2::<f64>::eye(n) / alpha;
        let mut seed = 11;
        for _ in 0..30 {
            let u: Vec<f64> = (0..n).map(|_| lcg(&mut seed)).collect();
            exact.update(&u);
            r = r * lambda + Array2::from_shape_fn((n, n), |(i, j)| u[i] * u[j]);
        }
        let err = (&exact.p - &inverse(&r))
            .mapv(f64::abs)
            .fold(0.0f64, |a, &b| a.max(b));
        assert!(err < 1e-8, "max |P − R⁻¹| = {err}");

        // A direction never excited: without the guard P_33 grows like λ^-t.
        let mut guarded = RlsState::new(n, alpha, lambda);
        let mut unguarded = RlsState::new(n, alpha, lambda).with_cap(None);
        for _ in 0..200 {
            guarded.update(&[1.0, 0.5, -0.2, 0.0]);
            unguarded.update(&[1.0, 0.5, -0.2, 0.0]);
        }
        assert!(unguarded.p[[3, 3]] > 1e6 * alpha);
        assert!(
            guarded.p.diag().iter().all(|&d| d <= alpha + 1e-12),
            "{:?}",
            guarded.p.diag()
        );
        assert!(
            (&guarded.p - &guarded.p.t())
                .mapv(f64::abs)
                .fold(0.0f64, |a, &b| a.max(b))
                < 1e-12
        );
    }

    #[test]
    fn rls_converges_to_the_closed_form_least_squares_solution() {
        // One sample per step (so the mean is the sample), λ = 1, η = 1, MSE gradient G = −e uᵀ:
        // exact RLS, whose weights are the ridge solution W = C R⁻¹ with R = I/α + Σ u uᵀ.
        let (m, n, alpha) = (3, 4, 100.0);
        let mut state = RlsState::new(n, alpha, 1.0);
        let w_true =
            Array2::from_shape_fn((m, n), |(i, j)| (i as f64 + 1.0) * 0.5 - j as f64 * 0.3);
        let mut w = Array2::<f64>::zeros((m, n));
        let mut r = Array2::<f64>::eye(n) / alpha;
        let mut c = Array2::<f64>::zeros((m, n));
        let mut seed = 3;
        for _ in 0..200 {
            let u: Vec<f64> = (0..n).map(|_| lcg(&mut seed)).collect();
            let d: Vec<f64> = (0..m)
                .map(|i| (0..n).map(|j| w_true[[i, j]] * u[j]).sum::<f64>() + 0.01 * lcg(&mut seed))
                .collect();
            let e: Vec<f64> = (0..m)
                .map(|i| d[i] - (0..n).map(|j| w[[i, j]] * u[j]).sum::<f64>())
                .collect();
            let g = Array2::from_shape_fn((m, n), |(i, j)| -e[i] * u[j]);
            state.update(&u);
            w = &w - &state.precondition(&g);
            r = r + Array2::from_shape_fn((n, n), |(i, j)| u[i] * u[j]);
            c = c + Array2::from_shape_fn((m, n), |(i, j)| d[i] * u[j]);
        }
        let closed = c.dot(&inverse(&r));
        let err = (&w - &closed).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
        assert!(err < 1e-8, "max |W − W*| = {err}");
        let to_truth = (&w - &w_true).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
        assert!(
            to_truth < 0.01,
            "the fit recovers the generating weights: {to_truth}"
        );
    }

    #[test]
    fn removing_inputs_leaves_the_p_of_the_inputs_that_remain() {
        // With λ = 1, P over all inputs downdated by the Schur complement equals P of a run that
        // only ever saw the kept inputs.
        let (n, alpha) = (6, 0.5);
        let keep = [0, 2, 3, 5];
        let mut full = RlsState::new(n, alpha, 1.0);
        let mut kept = RlsState::new(keep.len(), alpha, 1.0);
        let mut seed = 5;
        for _ in 0..25 {
            let u: Vec<f64> = (0..n).map(|_| lcg(&mut seed)).collect();
            full.update(&u);
            kept.update(&keep.iter().map(|&i| u[i]).collect::<Vec<_>>());
        }
        full.remove(&[1, 4]);
        let err = (&full.p - &kept.p)
            .mapv(f64::abs)
            .fold(0.0f64, |a, &b| a.max(b));
        assert!(err < 1e-9, "max |P_schur − P_kept| = {err}");
    }

    #[test]
    fn saliency_is_the_rise_of_the_least_squares_cost_and_zero_for_dead_inputs() {
        let (n, alpha) = (5, 1.0);
        let mut state = RlsState::new(n, alpha, 1.0);
        let mut seed = 9;
        for _ in 0..30 {
            // Input 4 is dead: always exactly zero.
            let mut u: Vec<f64> = (0..n).map(|_| lcg(&mut seed)).collect();
            u[4] = 0.0;
            state.update(&u);
        }
        let w = Array2::from_shape_fn((3, n), |(i, j)| (i as f64 - 1.0) * 0.7 + j as f64 * 0.2);
        let s = [1, 3];
        let pss = Array2::from_shape_fn((2, 2), |(i, j)| state.p[[s[i], s[j]]]);
        let ws = Array2::from_shape_fn((3, 2), |(i, j)| w[[i, s[j]]]);
        let expected = 0.5 * ws.dot(&inverse(&pss)).dot(&ws.t()).diag().sum();
        assert!((state.saliency(&w, &s) - expected).abs() < 1e-10);
        assert_eq!(state.saliency(&w, &[4]), 0.0);
        assert!(state.saliency(&w, &[3, 4]) > 0.0);
    }
}
