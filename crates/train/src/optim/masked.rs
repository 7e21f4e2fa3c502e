//! Connection masks that persist through training: a 0/1 mask per parameter tensor, and the
//! `Masked` wrapper that keeps any optimiser from moving a masked entry.
//!
//! The wrapper zeroes masked gradients before clipping and the step (so they neither count in the
//! gradient norm nor reach an update that mixes entries, such as RLS's G·P), and multiplies the
//! weights by the mask after the step (so momentum, Adam's moments or RLS cannot revive one).

use super::Optimizer;
use crate::executor::{Gradients, Tape};
use ndarray::{ArrayD, Zip};
use pare_ir::{Graph, Tensor, ValueId, ValueSource};
use std::collections::{BTreeMap, BTreeSet};

/// Per masked parameter (a float initializer), a 0/1 array of its shape; parameters without an
/// entry are not masked. A *held* parameter (a constant gate) is its mask: training never moves
/// it, not even by weight decay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Masks {
    masks: BTreeMap<ValueId, ArrayD<f32>>,
    held: BTreeSet<ValueId>,
}

impl Masks {
    /// Masks `param` with `mask` (its shape, entries 0 or 1), replacing any mask it had.
    pub fn insert(&mut self, param: ValueId, mask: ArrayD<f32>) {
        self.masks.insert(param, mask);
    }

    /// Holds `param` at `values` (0 or 1 each) through training.
    pub fn hold(&mut self, param: ValueId, values: ArrayD<f32>) {
        self.masks.insert(param, values);
        self.held.insert(param);
    }

    /// Whether `param` is held (see `hold`).
    pub fn is_held(&self, param: ValueId) -> bool {
        self.held.contains(&param)
    }

    pub fn get(&self, param: ValueId) -> Option<&ArrayD<f32>> {
        self.masks.get(&param)
    }

    pub fn get_mut(&mut self, param: ValueId) -> Option<&mut ArrayD<f32>> {
        self.masks.get_mut(&param)
    }

    /// Every masked parameter with its mask, in value order.
    pub fn iter(&self) -> impl Iterator<Item = (ValueId, &ArrayD<f32>)> {
        self.masks.iter().map(|(&v, m)| (v, m))
    }

    /// Every masked parameter with its mask, mutable (surgery slices them like the weights).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ValueId, &mut ArrayD<f32>)> {
        self.masks.iter_mut().map(|(&v, m)| (v, m))
    }

    /// Multiplies every masked parameter of `graph` by its mask, and sets every held one to its
    /// values.
    pub fn apply_to_weights(&self, graph: &mut Graph) {
        for (&v, mask) in &self.masks {
            if let ValueSource::Initializer(Tensor::F32(w)) = &mut graph.value_mut(v).source {
                if self.is_held(v) {
                    w.assign(mask);
                } else {
                    multiply(w, mask, v);
                }
            }
        }
    }

    /// Multiplies the gradient of every masked parameter by its mask; zeroes a held one's.
    pub fn apply_to_gradients(&self, grads: &mut Gradients) {
        for (&v, mask) in &self.masks {
            if let Some(g) = grads.of_mut(v) {
                if self.is_held(v) {
                    g.fill(0.0);
                } else {
                    multiply(g, mask, v);
                }
            }
        }
    }
}

/// `a *= mask`, entry by entry.
fn multiply(a: &mut ArrayD<f32>, mask: &ArrayD<f32>, v: ValueId) {
    assert_eq!(
        a.shape(),
        mask.shape(),
        "the mask of value {v:?} follows its tensor through every surgery"
    );
    Zip::from(a).and(mask).for_each(|a, &m| *a *= m);
}

/// An optimiser whose steps never move a masked entry away from zero.
pub struct Masked<O> {
    pub inner: O,
    pub masks: Masks,
}

impl<O: Optimizer> Masked<O> {
    /// Wraps `inner`, zeroing the masked weights of `graph` now so they start at zero.
    pub fn new(inner: O, masks: Masks, graph: &mut Graph) -> Self {
        masks.apply_to_weights(graph);
        Masked { inner, masks }
    }
}

impl<O: Optimizer> Optimizer for Masked<O> {
    fn mask_gradients(&self, grads: &mut Gradients) {
        self.masks.apply_to_gradients(grads);
        self.inner.mask_gradients(grads);
    }

    fn step(&mut self, graph: &mut Graph, tape: &Tape, grads: &Gradients) {
        self.inner.step(graph, tape, grads);
        self.masks.apply_to_weights(graph);
    }

    fn set_step_scale(&mut self, scale: f64) {
        self.inner.set_step_scale(scale);
    }

    fn needs_mean_inputs(&self) -> bool {
        self.inner.needs_mean_inputs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{AdamConfig, OptimizerConfig, RlsConfig, SgdConfig};
    use crate::{Loss, TrainConfig, TrainingLoop};
    use pare_data::Dataset;
    use pare_onnx::{attr, GraphBuilder};

    fn wave(n: usize, seed: f32, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + seed) * 0.7123).sin() * scale)
            .collect()
    }

    /// x[1,4,4] → Conv(3, 3×3, pad 1, bias) → Relu → Flatten → Gemm(48→2, transB, bias).
    fn graph() -> Graph {
        let mut b = GraphBuilder::new("masked", 17);
        b.input("x", [-1i64, 1, 4, 4]);
        b.initializer(attr::tensor_f32("w", &[3, 1, 3, 3], wave(27, 1.0, 0.5)));
        b.initializer(attr::tensor_f32("cb", &[3], wave(3, 2.0, 0.1)));
        b.initializer(attr::tensor_f32("fc", &[2, 48], wave(96, 3.0, 0.3)));
        b.initializer(attr::tensor_f32("fcb", &[2], wave(2, 4.0, 0.1)));
        b.node(
            "Conv",
            &["x", "w", "cb"],
            &["c"],
            vec![attr::ints("pads", &[1, 1, 1, 1])],
        );
        b.node("Relu", &["c"], &["r"], vec![]);
        b.node("Flatten", &["r"], &["f"], vec![]);
        b.node(
            "Gemm",
            &["f", "fc", "fcb"],
            &["y"],
            vec![attr::int("transB", 1)],
        );
        b.output("y", [-1i64, 2]);
        pare_ir::import(&b.build()).unwrap()
    }

    fn data() -> Dataset {
        let images = ndarray::Array4::from_shape_vec((8, 1, 4, 4), wave(128, 5.0, 1.0)).unwrap();
        Dataset::new(images, (0..8).map(|i| i % 2).collect())
    }

    fn value(graph: &Graph, name: &str) -> ValueId {
        graph
            .value_ids()
            .find(|&v| graph.value(v).name == name)
            .unwrap()
    }

    fn f32s(graph: &Graph, v: ValueId) -> ArrayD<f32> {
        match graph.value(v).initializer() {
            Some(Tensor::F32(a)) => a.clone(),
            _ => unreachable!("a float initializer"),
        }
    }

    /// Conv: filter 1's kernel masked whole; Gemm: every other weight; the Gemm's bias 0 masked.
    fn masks(graph: &Graph) -> Masks {
        let mut masks = Masks::default();
        let mut conv = ArrayD::ones(ndarray::IxDyn(&[3, 1, 3, 3]));
        conv.slice_mut(ndarray::s![1, .., .., ..]).fill(0.0);
        masks.insert(value(graph, "w"), conv);
        let fc = ArrayD::from_shape_fn(ndarray::IxDyn(&[2, 48]), |i| ((i[0] + i[1]) % 2) as f32);
        masks.insert(value(graph, "fc"), fc);
        masks.insert(
            value(graph, "fcb"),
            ArrayD::from_shape_vec(ndarray::IxDyn(&[2]), vec![0.0, 1.0]).unwrap(),
        );
        masks
    }

    #[test]
    fn a_held_parameter_never_moves_not_even_by_weight_decay() {
        let data = data();
        let sgd = OptimizerConfig::Sgd(SgdConfig {
            weight_decay: 0.1,
            ..SgdConfig::default()
        });
        let mut graph = graph();
        let mut masks = Masks::default();
        let held = ArrayD::from_shape_vec(ndarray::IxDyn(&[3]), vec![1.0, 0.0, 1.0]).unwrap();
        masks.hold(value(&graph, "cb"), held.clone());
        let mut masked = Masked::new(sgd.build(&graph), masks, &mut graph);
        let config = TrainConfig {
            epochs: 2,
            batch_size: 4,
            seed: 7,
            loss: Loss::CrossEntropy.into(),
            optimizer: sgd,
            batchnorm_training: true,
            max_grad_norm: None,
        };
        TrainingLoop::new(&graph, &data, config)
            .unwrap()
            .run(&mut graph, &mut masked, 4, &mut |_| {})
            .unwrap();
        assert_eq!(f32s(&graph, value(&graph, "cb")), held);
    }

    #[test]
    fn every_optimiser_keeps_masked_weights_at_zero_and_moves_the_rest() {
        let configs = [
            OptimizerConfig::Sgd(SgdConfig {
                weight_decay: 1e-2,
                ..SgdConfig::default()
            }),
            OptimizerConfig::Adam(AdamConfig::default()),
            OptimizerConfig::Rls(RlsConfig::default()),
        ];
        let data = data();
        for optimizer in configs {
            let mut graph = graph();
            let before = graph.clone();
            let masks = masks(&graph);
            let mut masked = Masked::new(optimizer.build(&graph), masks.clone(), &mut graph);
            let config = TrainConfig {
                epochs: 3,
                batch_size: 4,
                seed: 7,
                loss: Loss::CrossEntropy.into(),
                optimizer: optimizer.clone(),
                batchnorm_training: true,
                max_grad_norm: Some(5.0),
            };
            let mut steps = TrainingLoop::new(&graph, &data, config).unwrap();
            steps.run(&mut graph, &mut masked, 6, &mut |_| {}).unwrap();
            for (v, mask) in masks.iter() {
                let (w, w0) = (f32s(&graph, v), f32s(&before, v));
                for (&w, &m) in w.iter().zip(mask) {
                    if m == 0.0 {
                        assert_eq!(w, 0.0, "{optimizer:?}: a masked entry moved");
                    } else {
                        assert!(w.is_finite());
                    }
                }
                let moved = w
                    .iter()
                    .zip(&w0)
                    .zip(mask)
                    .any(|((a, b), &m)| m == 1.0 && a != b);
                assert!(moved, "{optimizer:?}: no kept entry of {v:?} was trained");
            }
        }
    }
}
