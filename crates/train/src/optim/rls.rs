//! Recursive least squares with the average approximation (specs/rls.md §2): one inverse input
//! autocorrelation P per Conv/Gemm/MatMul layer, updated from the batch's mean input vector by
//! Sherman–Morrison, and weights stepped W ← W − η·G·P. Other parameters (BatchNorm, constants of
//! element-wise ops) step with SGD.

use super::{param_mut, parameters, Optimizer, Sgd, SgdConfig};
use crate::executor::{Gradients, Tape};
use ndarray::{s, Array2};
use pare_ir::{Graph, NodeId, Op, Tensor, ValueId};
use pare_kernels::gemm::{gemm, Mat};
use pare_kernels::sums::slice_sums;
use rayon::prelude::*;
use std::ops::Range;

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
            // Not positive definite in floating point: the diagonal approximation of §5.
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
    /// which is exactly the inverse autocorrelation of the inputs that remain (§3.5).
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

/// How a layer's weight matrix W (rows = outputs) sits in its initializer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Storage {
    /// W is the tensor in row-major order (Conv [M, C/g, kh, kw], Gemm B with transB).
    Rows,
    /// The tensor is Wᵀ ([K, N]: Gemm B without transB, MatMul B).
    Transposed,
}

/// Where a layer's W and bias are and how big W is.
#[derive(Debug, Clone, PartialEq)]
struct Geometry {
    weight: ValueId,
    bias: Option<ValueId>,
    storage: Storage,
    outputs: usize,
    inputs: usize,
}

impl Geometry {
    /// The layer a node is to RLS, if it is one: a Conv, Gemm or MatMul with a constant weight.
    fn of(graph: &Graph, id: NodeId) -> Option<Geometry> {
        let node = graph.node(id);
        let input = |i: usize| node.inputs.get(i).copied().flatten();
        let weight = input(1)?;
        let wshape = f32_shape(graph, weight)?;
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
                    g.beta == 1.0 && f32_shape(graph, c).is_some_and(|s| s == [n] || s == [1, n])
                });
                (storage, n, k, bias)
            }
            Op::MatMul if wshape.len() == 2 => (Storage::Transposed, wshape[1], wshape[0], None),
            _ => return None,
        };
        Some(Geometry {
            weight,
            bias,
            storage,
            outputs,
            inputs,
        })
    }

    /// Index of W[r, c] in the weight tensor's data.
    fn at(&self, r: usize, c: usize) -> usize {
        match self.storage {
            Storage::Rows => r * self.inputs + c,
            Storage::Transposed => c * self.outputs + r,
        }
    }

    /// W (rows = outputs) in f64, the bias as a last column when there is one.
    fn matrix(&self, graph: &Graph, weight: &[f32]) -> Array2<f64> {
        let (m, k) = (self.outputs, self.inputs);
        let mut w = Array2::<f64>::zeros((m, k + self.bias.is_some() as usize));
        for r in 0..m {
            for c in 0..k {
                w[[r, c]] = weight[self.at(r, c)] as f64;
            }
        }
        if let Some(Tensor::F32(b)) = self.bias.and_then(|b| graph.value(b).initializer()) {
            for (r, v) in b.iter().enumerate() {
                w[[r, k]] = *v as f64;
            }
        }
        w
    }
}

#[derive(Debug, Clone)]
struct Layer {
    node: NodeId,
    geometry: Geometry,
    state: RlsState,
}

/// The RLS optimiser over a graph's layers.
#[derive(Clone)]
pub struct Rls {
    config: RlsConfig,
    layers: Vec<Layer>,
    other: Sgd,
    /// Multiplies η and the SGD rate of the other parameters (`Optimizer::set_step_scale`).
    step_scale: f64,
}

fn f32_shape(graph: &Graph, v: ValueId) -> Option<Vec<usize>> {
    match graph.value(v).initializer()? {
        Tensor::F32(a) => Some(a.shape().to_vec()),
        _ => None,
    }
}

fn f32_data(graph: &Graph, v: ValueId) -> &[f32] {
    match graph.value(v).initializer() {
        Some(Tensor::F32(a)) => a.as_slice().expect("initializers are standard layout"),
        _ => panic!("value {v:?} is not a float initializer"),
    }
}

impl Rls {
    pub fn new(config: RlsConfig, graph: &Graph) -> Self {
        let layers = graph
            .node_ids()
            .filter_map(|id| {
                let geometry = Geometry::of(graph, id)?;
                let n = geometry.inputs + geometry.bias.is_some() as usize;
                Some(Layer {
                    node: id,
                    geometry,
                    state: RlsState::new(n, config.alpha, config.lambda),
                })
            })
            .collect();
        let other = Sgd::new(config.other.clone());
        Rls {
            config,
            layers,
            other,
            step_scale: 1.0,
        }
    }

    /// Updates every P from a forward pass's mean inputs without moving any weight: how P is
    /// estimated for a model that is scored but not trained with RLS.
    pub fn observe(&mut self, tape: &Tape) {
        for layer in &mut self.layers {
            if let Some(u) = mean_input(layer, tape) {
                layer.state.update(&u);
            }
        }
    }

    /// OBS saliency (specs/rls.md §3.2) of input feature sets of `node`'s layer: for each range
    /// of indices along the weight's input axis, ½·tr(W_S P_SS⁻¹ W_Sᵀ) with S every weight column
    /// of those features (a Conv feature is a channel: its kh·kw columns). A feature set whose
    /// inputs were always exactly zero (a dead channel) scores 0. None if `node` is no RLS layer.
    pub fn saliency(
        &self,
        graph: &Graph,
        node: NodeId,
        features: &[Range<usize>],
    ) -> Option<Vec<f64>> {
        let layer = self.layers.iter().find(|l| l.node == node)?;
        let g = &layer.geometry;
        let w = g.matrix(graph, f32_data(graph, g.weight));
        let per = g.inputs / input_axis_len(graph, g);
        Some(
            features
                .iter()
                .map(|f| {
                    let s: Vec<usize> = (f.start * per..f.end * per).collect();
                    layer.state.saliency(&w, &s)
                })
                .collect(),
        )
    }

    /// Follows a surgery that kept only `kept` of the `axis_len` features along the input axis of
    /// `node`'s weight: P loses those inputs by the Schur-complement downdate. Call `resync`
    /// after all layers are done.
    pub fn retain_inputs(&mut self, node: NodeId, kept: &[usize], axis_len: usize) {
        let Some(layer) = self.layers.iter_mut().find(|l| l.node == node) else {
            return;
        };
        let per = layer.geometry.inputs / axis_len.max(1);
        let mut keep = vec![false; layer.state.len()];
        for &f in kept {
            keep[f * per..(f + 1) * per].fill(true);
        }
        if layer.geometry.bias.is_some() {
            keep[layer.geometry.inputs] = true;
        }
        let drop: Vec<usize> = (0..keep.len()).filter(|&i| !keep[i]).collect();
        layer.state.remove(&drop);
    }

    /// Reads every layer's sizes from the graph again after a surgery.
    pub fn resync(&mut self, graph: &Graph) {
        for layer in &mut self.layers {
            let g = Geometry::of(graph, layer.node).expect("surgery keeps every layer");
            assert_eq!(
                g.inputs + g.bias.is_some() as usize,
                layer.state.len(),
                "P of node {:?} follows its inputs",
                layer.node
            );
            layer.geometry = g;
        }
    }
}

/// The length of a layer's weight along its input axis (channels of a Conv, features of a Gemm).
fn input_axis_len(graph: &Graph, g: &Geometry) -> usize {
    let shape = f32_shape(graph, g.weight).expect("a layer's weight is a float initializer");
    match g.storage {
        Storage::Rows => shape[1],
        Storage::Transposed => shape[0],
    }
}

/// The layer's mean input vector of the last forward pass, with a 1 for the bias.
fn mean_input(layer: &Layer, tape: &Tape) -> Option<Vec<f64>> {
    let mean = tape.mean_input(layer.node)?;
    let mut u: Vec<f64> = mean.iter().map(|&v| v as f64).collect();
    if layer.geometry.bias.is_some() {
        u.push(1.0);
    }
    Some(u)
}

impl Optimizer for Rls {
    fn needs_mean_inputs(&self) -> bool {
        true
    }

    fn set_step_scale(&mut self, scale: f64) {
        self.step_scale = scale;
        self.other.set_step_scale(scale);
    }

    fn step(&mut self, graph: &mut Graph, tape: &Tape, grads: &Gradients) {
        let eta = self.config.eta * self.step_scale;
        // Each layer's P and G·P in parallel, then the weights.
        let deltas: Vec<Option<Array2<f64>>> = self
            .layers
            .par_iter_mut()
            .map(|layer| {
                let geo = &layer.geometry;
                let (gw, u) = (grads.of(geo.weight)?, mean_input(layer, tape)?);
                layer.state.update(&u);
                let (m, k) = (geo.outputs, geo.inputs);
                let gw = gw.as_standard_layout();
                let gws = gw.as_slice().expect("standard");
                let mut g = Array2::<f64>::zeros((m, layer.state.len()));
                for r in 0..m {
                    for c in 0..k {
                        g[[r, c]] = gws[geo.at(r, c)] as f64;
                    }
                }
                if let Some(b) = geo.bias {
                    let gb = grads.of(b).expect("bias gradient with its weight");
                    for (r, v) in gb.iter().enumerate() {
                        g[[r, k]] = *v as f64;
                    }
                }
                Some(layer.state.precondition(&g))
            })
            .collect();
        for (layer, delta) in self.layers.iter().zip(deltas) {
            let Some(delta) = delta else { continue };
            let geo = &layer.geometry;
            let (m, k) = (geo.outputs, geo.inputs);
            let w = param_mut(graph, geo.weight);
            let ws = w.as_slice_mut().expect("initializers are standard layout");
            for r in 0..m {
                for c in 0..k {
                    ws[geo.at(r, c)] -= (eta * delta[[r, c]]) as f32;
                }
            }
            if let Some(b) = geo.bias {
                for (r, v) in param_mut(graph, b).iter_mut().enumerate() {
                    *v -= (eta * delta[[r, k]]) as f32;
                }
            }
        }
        let covered: Vec<ValueId> = self
            .layers
            .iter()
            .flat_map(|l| std::iter::once(l.geometry.weight).chain(l.geometry.bias))
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
