//! Adam (Kingma and Ba), with PyTorch's L2 weight decay and bias correction.

use super::{param_mut, parameters, Optimizer};
use crate::executor::{Gradients, Tape};
use ndarray::{ArrayD, Zip};
use pare_ir::{Graph, ValueId};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

pub struct Adam {
    config: AdamConfig,
    moments: HashMap<ValueId, (ArrayD<f32>, ArrayD<f32>)>,
    t: i32,
    lr_scale: f32,
}

impl Adam {
    pub fn new(config: AdamConfig) -> Self {
        Adam {
            config,
            moments: HashMap::new(),
            t: 0,
            lr_scale: 1.0,
        }
    }
}

impl Optimizer for Adam {
    fn set_step_scale(&mut self, scale: f64) {
        self.lr_scale = scale as f32;
    }

    fn step(&mut self, graph: &mut Graph, _tape: &Tape, grads: &Gradients) {
        self.t += 1;
        let c = self.config.clone();
        let (bc1, bc2) = (1.0 - c.beta1.powi(self.t), 1.0 - c.beta2.powi(self.t));
        let lr = c.lr * self.lr_scale;
        for v in parameters(graph, grads) {
            let g = grads.of(v).expect("parameters have gradients");
            let w = param_mut(graph, v);
            // A parameter resized by pruning starts its moments again.
            let fresh = || (ArrayD::zeros(g.raw_dim()), ArrayD::zeros(g.raw_dim()));
            let moments = self.moments.entry(v).or_insert_with(fresh);
            if moments.0.shape() != g.shape() {
                *moments = fresh();
            }
            let (m, s) = moments;
            Zip::from(w).and(m).and(s).and(g).for_each(|w, m, s, &g| {
                let g = g + c.weight_decay * *w;
                *m = c.beta1 * *m + (1.0 - c.beta1) * g;
                *s = c.beta2 * *s + (1.0 - c.beta2) * g * g;
                *w -= lr * (*m / bc1) / ((*s / bc2).sqrt() + c.eps);
            });
        }
    }
}
