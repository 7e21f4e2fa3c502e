//! Optimisers: SGD (momentum, weight decay), Adam, and recursive least squares (RLS).
//!
//! An optimiser updates the graph's float initializers in place from the gradients of one
//! backward pass. Which values are parameters is decided by the backward pass: every float
//! initializer that received a gradient (BatchNorm running statistics never do).

mod adam;
mod masked;
mod rls;
mod sgd;

pub use adam::{Adam, AdamConfig};
pub use masked::{Masked, Masks};
pub use rls::{Rls, RlsConfig, RlsState};
pub use sgd::{Sgd, SgdConfig};

use crate::executor::{Gradients, Tape};
use ndarray::ArrayD;
use pare_ir::{Graph, Tensor, ValueId, ValueSource};

/// One optimisation step over all parameters.
pub trait Optimizer {
    fn step(&mut self, graph: &mut Graph, tape: &Tape, grads: &Gradients);
    /// Scales every step from now on (1 is the configured step): a caller ramps it back up after
    /// changing the network, e.g. by pruning.
    fn set_step_scale(&mut self, scale: f64);
    /// Whether `step` reads the tape's mean layer inputs (only RLS does; recording them costs).
    fn needs_mean_inputs(&self) -> bool {
        false
    }
    /// Zeroes the gradients of entries that must not move, before clipping and `step` (only
    /// `Masked` has any).
    fn mask_gradients(&self, _grads: &mut Gradients) {}
}

impl<O: Optimizer + ?Sized> Optimizer for Box<O> {
    fn step(&mut self, graph: &mut Graph, tape: &Tape, grads: &Gradients) {
        (**self).step(graph, tape, grads);
    }
    fn set_step_scale(&mut self, scale: f64) {
        (**self).set_step_scale(scale);
    }
    fn needs_mean_inputs(&self) -> bool {
        (**self).needs_mean_inputs()
    }
    fn mask_gradients(&self, grads: &mut Gradients) {
        (**self).mask_gradients(grads);
    }
}

/// The parameters that received a gradient, in value order.
pub fn parameters(graph: &Graph, grads: &Gradients) -> Vec<ValueId> {
    graph
        .value_ids()
        .filter(|&v| {
            matches!(
                graph.value(v).source,
                ValueSource::Initializer(Tensor::F32(_))
            ) && grads.of(v).is_some()
        })
        .collect()
}

/// The float tensor of a parameter, for in-place updates.
pub fn param_mut(graph: &mut Graph, v: ValueId) -> &mut ArrayD<f32> {
    match &mut graph.value_mut(v).source {
        ValueSource::Initializer(Tensor::F32(a)) => a,
        _ => panic!("value {v:?} is not a float initializer"),
    }
}

/// The optimiser a run uses, with its settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum OptimizerConfig {
    Sgd(SgdConfig),
    Adam(AdamConfig),
    Rls(RlsConfig),
}

impl OptimizerConfig {
    /// Builds the optimiser for a graph.
    pub fn build(&self, graph: &Graph) -> Box<dyn Optimizer> {
        match self {
            OptimizerConfig::Sgd(c) => Box::new(Sgd::new(c.clone())),
            OptimizerConfig::Adam(c) => Box::new(Adam::new(c.clone())),
            OptimizerConfig::Rls(c) => Box::new(Rls::new(c.clone(), graph)),
        }
    }
}
