//! Recursive least squares with the average approximation (specs/rls.md §2): one inverse input
//! autocorrelation P per Conv/Gemm/MatMul layer, updated from the batch's mean input vector by
//! Sherman–Morrison, and weights stepped W ← W − η·G·P. Other parameters (BatchNorm, constants of
//! element-wise ops) step with SGD.

use super::{param_mut, parameters, Optimizer, Sgd, SgdConfig};
use crate::executor::{Gradients, Tape};
use crate::gemm::{dgemm, Mat};
use ndarray::Array2;
use pare_ir::{Graph, NodeId, Op, Tensor, ValueId};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RlsConfig {
    /// Initial P = α·I.
    pub alpha: f64,
    /// Step scale; α·η acts as the learning rate.
    pub eta: f64,
    /// Forgetting factor λ ∈ (0, 1].
    pub lambda: f64,
    /// For parameters that are not a layer's weight matrix or bias.
    pub other: SgdConfig,
}

impl Default for RlsConfig {
    /// The spec's defaults for fine-tuning a pretrained network (§5): λ = 1, α = 0.1, η = 3.
    fn default() -> Self {
        RlsConfig {
            alpha: 0.1,
            eta: 3.0,
            lambda: 1.0,
            other: SgdConfig::default(),
        }
    }
}

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
        let p = self.p.as_slice().expect("standard layout");
        let mut v = vec![0.0f64; n];
        dgemm(1.0, Mat::new(p, n, n), Mat::new(u, n, 1), 0.0, &mut v);
        let gamma = self.lambda + u.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
        if !(gamma > 0.0 && gamma.is_finite()) {
            self.p = Array2::eye(n) * self.alpha;
            self.resets += 1;
            return;
        }
        let inv_lambda = 1.0 / self.lambda;
        let p = self.p.as_slice_mut().expect("standard layout");
        for i in 0..n {
            let vi = v[i] / gamma;
            let row = &mut p[i * n..][..n];
            for (pj, vj) in row.iter_mut().zip(&v) {
                *pj = (*pj - vi * vj) * inv_lambda;
            }
        }
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
                for ((i, j), v) in self.p.indexed_iter_mut() {
                    *v *= d[i] * d[j];
                }
            }
        }
    }

    fn symmetrize(&mut self) {
        let t = self.p.t().to_owned();
        self.p = (&self.p + &t) * 0.5;
    }

    /// G·P for a gradient G with rows = outputs.
    pub fn precondition(&self, g: &Array2<f64>) -> Array2<f64> {
        let (m, n) = g.dim();
        let mut out = Array2::<f64>::zeros((m, n));
        dgemm(
            1.0,
            Mat::new(g.as_slice().expect("standard"), m, n),
            Mat::new(self.p.as_slice().expect("standard"), n, n),
            0.0,
            out.as_slice_mut().expect("fresh"),
        );
        out
    }
}

/// How a layer's weight matrix W (rows = outputs) sits in its initializer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Storage {
    /// W is the tensor in row-major order (Conv [M, C/g, kh, kw], Gemm B with transB).
    Rows,
    /// The tensor is Wᵀ ([K, N]: Gemm B without transB, MatMul B).
    Transposed,
}

#[derive(Debug, Clone)]
struct Layer {
    node: NodeId,
    weight: ValueId,
    bias: Option<ValueId>,
    storage: Storage,
    outputs: usize,
    inputs: usize,
    state: RlsState,
}

/// The RLS optimiser over a graph's layers.
pub struct Rls {
    config: RlsConfig,
    layers: Vec<Layer>,
    other: Sgd,
}

fn f32_shape(graph: &Graph, v: ValueId) -> Option<Vec<usize>> {
    match graph.value(v).initializer()? {
        Tensor::F32(a) => Some(a.shape().to_vec()),
        _ => None,
    }
}

impl Rls {
    pub fn new(config: RlsConfig, graph: &Graph) -> Self {
        let mut layers = Vec::new();
        for id in graph.node_ids() {
            let node = graph.node(id);
            let input = |i: usize| node.inputs.get(i).copied().flatten();
            let Some(weight) = input(1) else { continue };
            let Some(wshape) = f32_shape(graph, weight) else {
                continue;
            };
            let (storage, outputs, inputs, bias) = match &node.op {
                Op::Conv(_) if wshape.len() >= 3 => {
                    let bias =
                        input(2).filter(|&b| f32_shape(graph, b).is_some_and(|s| s == [wshape[0]]));
                    (Storage::Rows, wshape[0], wshape[1..].iter().product(), bias)
                }
                Op::Gemm(g) if wshape.len() == 2 && !g.trans_a => {
                    let (storage, n, k) = if g.trans_b {
                        (Storage::Rows, wshape[0], wshape[1])
                    } else {
                        (Storage::Transposed, wshape[1], wshape[0])
                    };
                    // C is a bias only when it holds one value per output.
                    let bias = input(2).filter(|&c| {
                        g.beta == 1.0
                            && f32_shape(graph, c).is_some_and(|s| s == [n] || s == [1, n])
                    });
                    (storage, n, k, bias)
                }
                Op::MatMul if wshape.len() == 2 => {
                    (Storage::Transposed, wshape[1], wshape[0], None)
                }
                _ => continue,
            };
            let n = inputs + bias.is_some() as usize;
            layers.push(Layer {
                node: id,
                weight,
                bias,
                storage,
                outputs,
                inputs,
                state: RlsState::new(n, config.alpha, config.lambda),
            });
        }
        let other = Sgd::new(config.other.clone());
        Rls {
            config,
            layers,
            other,
        }
    }

    /// The P of each layer, by the node it belongs to.
    pub fn states(&self) -> impl Iterator<Item = (NodeId, &RlsState)> {
        self.layers.iter().map(|l| (l.node, &l.state))
    }
}

impl Optimizer for Rls {
    fn step(&mut self, graph: &mut Graph, tape: &Tape, grads: &Gradients) {
        let eta = self.config.eta;
        for layer in &mut self.layers {
            let (Some(gw), Some(mean)) = (
                grads.of(layer.weight),
                tape.mean_inputs[layer.node.0 as usize].as_ref(),
            ) else {
                continue;
            };
            let (m, k) = (layer.outputs, layer.inputs);
            let n = layer.state.len();
            let mut u: Vec<f64> = mean.iter().map(|&v| v as f64).collect();
            if layer.bias.is_some() {
                u.push(1.0);
            }
            layer.state.update(&u);
            let gw = gw.as_standard_layout();
            let gws = gw.as_slice().expect("standard");
            let at = |r: usize, c: usize| match layer.storage {
                Storage::Rows => r * k + c,
                Storage::Transposed => c * m + r,
            };
            let mut g = Array2::<f64>::zeros((m, n));
            for r in 0..m {
                for c in 0..k {
                    g[[r, c]] = gws[at(r, c)] as f64;
                }
            }
            if let Some(b) = layer.bias {
                let gb = grads.of(b).expect("bias gradient with its weight");
                for (r, v) in gb.iter().enumerate() {
                    g[[r, k]] = *v as f64;
                }
            }
            let delta = layer.state.precondition(&g);
            let w = param_mut(graph, layer.weight);
            let ws = w.as_slice_mut().expect("initializers are standard layout");
            for r in 0..m {
                for c in 0..k {
                    ws[at(r, c)] -= (eta * delta[[r, c]]) as f32;
                }
            }
            if let Some(b) = layer.bias {
                for (r, v) in param_mut(graph, b).iter_mut().enumerate() {
                    *v -= (eta * delta[[r, k]]) as f32;
                }
            }
        }
        let covered: Vec<ValueId> = self
            .layers
            .iter()
            .flat_map(|l| std::iter::once(l.weight).chain(l.bias))
            .collect();
        let rest: Vec<ValueId> = parameters(graph, grads)
            .into_iter()
            .filter(|v| !covered.contains(v))
            .collect();
        self.other.step_params(graph, grads, &rest);
    }
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
}
