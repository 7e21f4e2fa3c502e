//! Neural network relief (docs/methods/relief.md): each connection's importance is its average
//! share of the signal its unit receives on a pruning set of training images; per unit, the
//! smallest set of incoming connections carrying a fraction α of the signal is kept, and the rest
//! is masked. `units` then removes the units left dead or unread.
//!
//! A connection is one weight of a Gemm or MatMul, or one whole k×k kernel of a Conv (a filter
//! and one of its input channels); a unit's bias is one more entry. Scores come from the layer's
//! own inputs, so a Conv is scored on its output before any BatchNorm.

mod conv;
mod residual;
mod units;

pub use residual::gate_residuals;
pub use units::{dead_or_unread, remove_units};

use crate::PruneError;
use conv::KernelMaps;
use ndarray::{Array2, ArrayD, Axis, Ix4};
use pare_data::Dataset;
use pare_ir::{Graph, NodeId, Op, Tensor, ValueId};
use pare_train::executor::window_2d;
use pare_train::optim::Masks;
use pare_train::{Mode, Tape};

/// How a Conv kernel's share is measured (docs/methods/relief.md, "Convolutions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreForm {
    /// The mean over samples of the norm of each sample's map (the paper's form).
    PerSample,
    /// The norm of the map of the mean |input| (the authors' code: one convolution per layer).
    MeanInput,
}

/// The settings of one relief pass.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ReliefSettings {
    /// Share of a filter's signal its kept kernels carry.
    pub alpha_conv: f64,
    /// Share of a Gemm/MatMul neuron's signal its kept weights carry.
    pub alpha_fc: f64,
    pub form: ScoreForm,
    /// Training images in the pruning set.
    pub pruning_images: usize,
    /// Passes of masking and retraining, each with an equal share of the epochs.
    pub iterations: usize,
}

impl Default for ReliefSettings {
    fn default() -> Self {
        ReliefSettings {
            alpha_conv: 0.9,
            alpha_fc: 0.95,
            form: ScoreForm::PerSample,
            pruning_images: 1000,
            iterations: 5,
        }
    }
}

/// `pruning_images` training images drawn by `seed`, in a fixed order: the pruning set, the same
/// for every pass of a run.
pub fn pruning_set(train: &Dataset, pruning_images: usize, seed: u64) -> Dataset {
    let order = pare_kernels::rng::permutation(train.len(), seed);
    train.select(&order[..pruning_images.min(train.len())])
}

/// Where a layer's weights sit: rows = units.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Storage {
    /// Conv [M, C/g, kh, kw]: one connection per kernel of `area` weights.
    Conv { group: usize, area: usize },
    /// Gemm with transB: [units, inputs].
    Rows,
    /// Gemm without transB, MatMul: [inputs, units].
    Transposed,
}

/// A layer relief masks: a Conv, a Gemm (A not transposed) or a MatMul with a constant float
/// weight as its second input.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub node: NodeId,
    pub weight: ValueId,
    pub bias: Option<ValueId>,
    /// Units (filters or neurons).
    pub units: usize,
    /// Incoming connections per unit (input channels per group, or input features).
    pub connections: usize,
    storage: Storage,
    /// Gemm's alpha, which scales every weight.
    scale: f64,
}

fn f32_initializer(graph: &Graph, v: ValueId) -> Option<&ArrayD<f32>> {
    match graph.value(v).initializer()? {
        Tensor::F32(a) => Some(a),
        _ => None,
    }
}

impl Layer {
    /// The layer node `id` is, if relief masks it.
    pub fn of(graph: &Graph, id: NodeId) -> Option<Layer> {
        let node = graph.node(id);
        let input = |i: usize| node.inputs.get(i).copied().flatten();
        let weight = input(1)?;
        let shape = f32_initializer(graph, weight)?.shape().to_vec();
        let bias_of = |units: usize| {
            input(2).filter(|&b| {
                f32_initializer(graph, b)
                    .is_some_and(|t| t.shape() == [units] || t.shape() == [1, units])
            })
        };
        let (storage, units, connections, bias, scale) = match &node.op {
            Op::Conv(c) if shape.len() == 4 && c.group > 0 && shape[0] % c.group == 0 => {
                let storage = Storage::Conv {
                    group: c.group,
                    area: shape[2] * shape[3],
                };
                (storage, shape[0], shape[1], bias_of(shape[0]), 1.0)
            }
            Op::Gemm(g) if shape.len() == 2 && !g.trans_a => {
                let (storage, units, inputs) = if g.trans_b {
                    (Storage::Rows, shape[0], shape[1])
                } else {
                    (Storage::Transposed, shape[1], shape[0])
                };
                // C is a bias only when it adds one value per unit.
                let bias = bias_of(units).filter(|_| g.beta == 1.0);
                (storage, units, inputs, bias, g.alpha.abs() as f64)
            }
            Op::MatMul if shape.len() == 2 => (Storage::Transposed, shape[1], shape[0], None, 1.0),
            _ => return None,
        };
        Some(Layer {
            node: id,
            weight,
            bias,
            units,
            connections,
            storage,
            scale,
        })
    }

    /// Every layer of `graph` relief masks, in node order.
    pub fn all(graph: &Graph) -> Vec<Layer> {
        graph
            .node_ids()
            .filter_map(|id| Layer::of(graph, id))
            .collect()
    }

    pub fn is_conv(&self) -> bool {
        matches!(self.storage, Storage::Conv { .. })
    }

    /// The flat indices in the weight of connection `c` of unit `j`.
    pub fn entries(&self, j: usize, c: usize) -> std::ops::Range<usize> {
        match self.storage {
            Storage::Conv { area, .. } => {
                let start = (j * self.connections + c) * area;
                start..start + area
            }
            Storage::Rows => {
                let i = j * self.connections + c;
                i..i + 1
            }
            Storage::Transposed => {
                let i = c * self.units + j;
                i..i + 1
            }
        }
    }
}

/// One layer's importances: per unit, each incoming connection's and the bias's.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerScores {
    pub layer: Layer,
    /// [units, connections].
    pub connections: Array2<f64>,
    /// One per unit; empty without a bias.
    pub bias: Vec<f64>,
}

/// What a layer sums over the pruning set.
enum Sums {
    /// Σ|x| per input feature, and the rows summed.
    Features(Vec<f64>, usize),
    /// Per kernel, Σ over samples of its map's norm (`ScoreForm::PerSample`).
    KernelNorms(KernelMaps, Array2<f64>),
    /// Σ|x| of the input planes (`ScoreForm::MeanInput`).
    MeanInput(ndarray::Array4<f64>),
}

/// Runs `graph` on `data` in batches of `batch_size` (inference mode), handing each pass's tape
/// to `visit`.
pub(crate) fn sweep(
    graph: &Graph,
    data: &Dataset,
    batch_size: usize,
    mut visit: impl FnMut(&Tape) -> Result<(), PruneError>,
) -> Result<(), PruneError> {
    for (images, _, _) in data.batches(batch_size) {
        let tape =
            pare_train::forward(graph, images.to_owned().into_dyn(), Mode::Eval, false, None)?;
        visit(&tape)?;
    }
    Ok(())
}

/// The input layer `layer` read in the pass of `tape`.
fn layer_input<'t>(
    graph: &Graph,
    tape: &'t Tape,
    layer: &Layer,
) -> Result<&'t ArrayD<f32>, PruneError> {
    graph
        .node(layer.node)
        .inputs
        .first()
        .copied()
        .flatten()
        .and_then(|v| tape.value(v))
        .ok_or_else(|| PruneError::Relief {
            node: graph.node(layer.node).name.clone(),
            problem: "its input was not computed by the forward pass".into(),
        })
}

/// Every layer's importances over `data` (the pruning set), from one sweep of the network as it
/// is now.
pub fn score(
    graph: &Graph,
    data: &Dataset,
    form: ScoreForm,
    batch_size: usize,
) -> Result<Vec<LayerScores>, PruneError> {
    let layers = Layer::all(graph);
    let mut sums: Vec<Option<Sums>> = layers.iter().map(|_| None).collect();
    sweep(graph, data, batch_size, |tape| {
        for (layer, sum) in layers.iter().zip(&mut sums) {
            let x = layer_input(graph, tape, layer)?;
            add(graph, layer, form, x, sum)?;
        }
        Ok(())
    })?;
    let samples = data.len().max(1) as f64;
    layers
        .into_iter()
        .zip(sums)
        .map(|(layer, sum)| finish(graph, layer, sum, samples))
        .collect()
}

/// Adds one batch's input `x` of `layer` to its sums.
fn add(
    graph: &Graph,
    layer: &Layer,
    form: ScoreForm,
    x: &ArrayD<f32>,
    sum: &mut Option<Sums>,
) -> Result<(), PruneError> {
    let problem = |problem: String| PruneError::Relief {
        node: graph.node(layer.node).name.clone(),
        problem,
    };
    let Storage::Conv { group, .. } = layer.storage else {
        let features = *x.shape().last().unwrap_or(&0);
        if features != layer.connections {
            return Err(problem(format!(
                "input shape {:?} does not match its weight",
                x.shape()
            )));
        }
        let sum = sum.get_or_insert_with(|| Sums::Features(vec![0.0; features], 0));
        if let Sums::Features(s, rows) = sum {
            for row in x
                .as_standard_layout()
                .as_slice()
                .expect("standard")
                .chunks(features)
            {
                s.iter_mut()
                    .zip(row)
                    .for_each(|(s, v)| *s += v.abs() as f64);
                *rows += 1;
            }
        }
        return Ok(());
    };
    let x = x
        .view()
        .into_dimensionality::<Ix4>()
        .map_err(|_| problem(format!("input shape {:?} is not NCHW", x.shape())))?;
    let Op::Conv(c) = &graph.node(layer.node).op else {
        unreachable!("conv storage belongs to a Conv");
    };
    let (_, c_in, h, w) = x.dim();
    let window = window_2d(&c.window, false, h, w).map_err(problem)?;
    let abs = x.mapv(f32::abs);
    match form {
        ScoreForm::PerSample => {
            let sum = match sum {
                Some(sum) => sum,
                None => {
                    let weight = f32_initializer(graph, layer.weight).expect("a layer's weight");
                    let weight = weight.view().into_dimensionality::<Ix4>().expect("4-d");
                    let maps = KernelMaps::new(weight, group, c_in, window);
                    sum.insert(Sums::KernelNorms(
                        maps,
                        Array2::zeros((layer.units, layer.connections)),
                    ))
                }
            };
            if let Sums::KernelNorms(maps, norms) = sum {
                maps.add_norms(abs.view(), norms);
            }
        }
        ScoreForm::MeanInput => {
            let sum =
                sum.get_or_insert_with(|| Sums::MeanInput(ndarray::Array4::zeros((1, c_in, h, w))));
            if let Sums::MeanInput(s) = sum {
                let total = abs
                    .sum_axis(Axis(0))
                    .mapv(|v| v as f64)
                    .insert_axis(Axis(0));
                *s += &total;
            }
        }
    }
    Ok(())
}

/// The layer's scores from its sums over `samples` images.
fn finish(
    graph: &Graph,
    layer: Layer,
    sum: Option<Sums>,
    samples: f64,
) -> Result<LayerScores, PruneError> {
    let weight = f32_initializer(graph, layer.weight).expect("a layer's weight");
    let weight = weight.as_slice().expect("initializers are standard layout");
    let bias: Vec<f64> = layer
        .bias
        .and_then(|b| f32_initializer(graph, b))
        .map(|b| b.iter().map(|v| v.abs() as f64).collect())
        .unwrap_or_default();
    let (connections, bias_scale) = match sum {
        Some(Sums::Features(s, rows)) => {
            let mean: Vec<f64> = s.iter().map(|v| v / rows.max(1) as f64).collect();
            let scores = Array2::from_shape_fn((layer.units, layer.connections), |(j, c)| {
                layer.scale * weight[layer.entries(j, c).start].abs() as f64 * mean[c]
            });
            (scores, 1.0)
        }
        Some(Sums::KernelNorms(maps, norms)) => (norms / samples, maps.plane_root()),
        Some(Sums::MeanInput(s)) => {
            let x_bar = (s / samples).mapv(|v| v as f32);
            let Op::Conv(c) = &graph.node(layer.node).op else {
                unreachable!("mean-input sums belong to a Conv");
            };
            let Storage::Conv { group, .. } = layer.storage else {
                unreachable!("a Conv layer");
            };
            let (_, c_in, h, w) = x_bar.dim();
            let window = window_2d(&c.window, false, h, w).expect("the sweep ran this window");
            let w4 = f32_initializer(graph, layer.weight).expect("a layer's weight");
            let w4 = w4.view().into_dimensionality::<Ix4>().expect("4-d");
            let maps = KernelMaps::new(w4, group, c_in, window);
            let mut norms = Array2::zeros((layer.units, layer.connections));
            maps.add_norms(x_bar.view(), &mut norms);
            (norms, maps.plane_root())
        }
        None => (Array2::zeros((layer.units, layer.connections)), 1.0),
    };
    Ok(LayerScores {
        bias: bias.iter().map(|b| b * bias_scale).collect(),
        connections,
        layer,
    })
}

/// Which of one unit's entries the keep rule keeps: sorted by score, the shortest prefix whose
/// sum reaches `alpha` of the total, widened to every entry tied with its last one (so the kept
/// set does not depend on the order of ties). Nothing is kept of a unit with no signal at all.
pub fn kept_entries(scores: &[f64], alpha: f64) -> Vec<bool> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    // Summed in the same order as the prefix, so alpha = 1 stops exactly at the last nonzero.
    let total: f64 = order.iter().map(|&i| scores[i]).sum();
    let (mut sum, mut threshold) = (0.0, None);
    for &i in &order {
        if sum >= alpha * total {
            break;
        }
        sum += scores[i];
        threshold = Some(scores[i]);
    }
    scores
        .iter()
        .map(|&s| threshold.is_some_and(|t| s >= t))
        .collect()
}

/// Masks in `masks` every entry the keep rule drops from each layer of `scores` (already masked
/// entries stay masked; a layer without a mask gets one).
pub fn mask_layers(
    graph: &Graph,
    scores: &[LayerScores],
    settings: &ReliefSettings,
    masks: &mut Masks,
) {
    for s in scores {
        let layer = &s.layer;
        let alpha = if layer.is_conv() {
            settings.alpha_conv
        } else {
            settings.alpha_fc
        };
        let ones = |v: ValueId| {
            ArrayD::ones(
                f32_initializer(graph, v)
                    .expect("a layer's tensor")
                    .raw_dim(),
            )
        };
        let mut weight_mask = masks
            .get(layer.weight)
            .cloned()
            .unwrap_or_else(|| ones(layer.weight));
        let mut bias_mask = layer
            .bias
            .map(|b| masks.get(b).cloned().unwrap_or_else(|| ones(b)));
        let flat = weight_mask
            .as_slice_mut()
            .expect("masks are standard layout");
        for j in 0..layer.units {
            let mut entries = s.connections.row(j).to_vec();
            entries.extend(s.bias.get(j));
            let kept = kept_entries(&entries, alpha);
            for c in 0..layer.connections {
                if !kept[c] {
                    flat[layer.entries(j, c)].fill(0.0);
                }
            }
            if let (Some(mask), Some(&false)) = (bias_mask.as_mut(), kept.get(layer.connections)) {
                mask.as_slice_mut().expect("masks are standard layout")[j] = 0.0;
            }
        }
        masks.insert(layer.weight, weight_mask);
        if let (Some(b), Some(mask)) = (layer.bias, bias_mask) {
            masks.insert(b, mask);
        }
    }
}

#[cfg(test)]
mod tests;
