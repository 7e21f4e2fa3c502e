//! Recursive least squares with the average approximation (docs/methods/rls.md, "P and the
//! update"): one inverse input autocorrelation P per Conv/Gemm/MatMul layer, updated from the
//! batch's mean input vector by Sherman–Morrison, and weights stepped W ← W − η·G·P. Other
//! parameters (BatchNorm, constants of element-wise ops) step with SGD.

mod state;

pub use state::RlsState;

use super::{param_mut, parameters, Optimizer, Sgd, SgdConfig};
use crate::executor::{Gradients, Tape};
use ndarray::Array2;
use pare_ir::{Graph, NodeId, Op, Tensor, ValueId};
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
    /// The defaults for fine-tuning a pretrained network (docs/methods/rls.md, "Defaults"): λ = 1,
    /// α = 0.1, η = 3.
    fn default() -> Self {
        RlsConfig {
            alpha: 0.1,
            eta: 3.0,
            lambda: 1.0,
            other: SgdConfig::default(),
        }
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

    /// OBS saliency (docs/methods/rls.md, "Saliency") of input feature sets of `node`'s layer:
    /// for each range of indices along the weight's input axis, ½·tr(W_S P_SS⁻¹ W_Sᵀ) with S every
    /// weight column of those features (a Conv feature is a channel: its kh·kw columns). A feature set whose
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
