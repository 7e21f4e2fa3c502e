//! Stochastic gradient descent with momentum and L2 weight decay, as PyTorch defines them.

use super::{param_mut, parameters, Optimizer};
use crate::executor::{Gradients, Tape};
use ndarray::{ArrayD, Zip};
use pare_ir::{Graph, ValueId};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0,
        }
    }
}

#[derive(Clone)]
pub struct Sgd {
    config: SgdConfig,
    velocity: HashMap<ValueId, ArrayD<f32>>,
    lr_scale: f32,
}

impl Sgd {
    pub fn new(config: SgdConfig) -> Self {
        Sgd {
            config,
            velocity: HashMap::new(),
            lr_scale: 1.0,
        }
    }

    /// Steps the given parameters only (RLS hands its non-matrix parameters here).
    pub fn step_params(&mut self, graph: &mut Graph, grads: &Gradients, params: &[ValueId]) {
        let c = &self.config;
        for &v in params {
            let g = grads.of(v).expect("parameters have gradients");
            let w = param_mut(graph, v);
            // g' = g + wd·w; v = μ·v + g'; w -= lr·v (the first step sets v = g').
            let mut d = g.clone();
            if c.weight_decay != 0.0 {
                d.scaled_add(c.weight_decay, w);
            }
            if c.momentum != 0.0 {
                // A parameter resized by pruning starts its momentum again.
                d = match self
                    .velocity
                    .remove(&v)
                    .filter(|vel| vel.shape() == d.shape())
                {
                    Some(mut vel) => {
                        Zip::from(&mut vel)
                            .and(&d)
                            .for_each(|a, &b| *a = c.momentum * *a + b);
                        vel
                    }
                    None => d,
                };
                self.velocity.insert(v, d.clone());
            }
            w.scaled_add(-c.lr * self.lr_scale, &d);
        }
    }
}

impl Optimizer for Sgd {
    fn set_step_scale(&mut self, scale: f64) {
        self.lr_scale = scale as f32;
    }

    fn step(&mut self, graph: &mut Graph, _tape: &Tape, grads: &Gradients) {
        let params = parameters(graph, grads);
        self.step_params(graph, grads, &params);
    }
}
