//! Runs a Graph forward on a batch, keeping what the backward pass needs (the tape), and runs
//! it backward from the gradient of one output.
//!
//! Reads parameters straight from the graph's initializers and never changes the graph; the
//! optimisers do that. Opaque ops cannot be trained through and are refused by name.
//!
//! Layout: `tape` holds what a pass keeps, `node` reads a node's inputs and attributes, `fusion`
//! decides which nodes run inside their producer's kernel; `forward` and `backward` build on
//! those three and never on each other.

mod backward;
mod forward;
mod fusion;
mod node;
mod tape;

pub use node::window_2d;
pub use tape::{Mode, Tape};

use crate::error::graph_name;
use crate::TrainError;
use ndarray::ArrayD;
use pare_ir::{Graph, PerValue, ValueId};

/// Runs the graph on `input` (the first graph input). `mean_inputs` records the RLS input means.
/// With `dropout: Some(seed)` Dropout nodes drop as in training, with masks drawn from the seed;
/// with None they are the identity, as at inference.
pub fn forward(
    graph: &Graph,
    input: ArrayD<f32>,
    mode: Mode,
    mean_inputs: bool,
    dropout: Option<u64>,
) -> Result<Tape, TrainError> {
    let first = *graph.inputs.first().ok_or_else(|| TrainError::NoInput {
        graph: graph_name(graph),
    })?;
    forward::run(graph, first, input, mode, mean_inputs, dropout)
}

/// Gradients of every float value that received one, indexed by ValueId. Initializers among
/// them are the parameter gradients.
pub struct Gradients(PerValue<Option<ArrayD<f32>>>);

impl Gradients {
    pub fn of(&self, v: ValueId) -> Option<&ArrayD<f32>> {
        self.0[v].as_ref()
    }

    pub fn of_mut(&mut self, v: ValueId) -> Option<&mut ArrayD<f32>> {
        self.0[v].as_mut()
    }
}

/// Back-propagates `grad` of value `from` through every node before it.
pub fn backward(
    graph: &Graph,
    tape: &Tape,
    from: ValueId,
    grad: ArrayD<f32>,
) -> Result<Gradients, TrainError> {
    backward::run(graph, tape, from, grad).map(Gradients)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    #[test]
    fn a_graph_without_input_is_refused_by_name() {
        let mut graph = Graph::default();
        graph.meta.graph_name = Some("torch_jit".into());
        let batch = ArrayD::zeros(IxDyn(&[1, 3, 8, 8]));
        let err = forward(&graph, batch, Mode::Eval, false, None)
            .err()
            .expect("no input to feed");
        assert!(matches!(&err, TrainError::NoInput { graph } if graph == "torch_jit"));
        let message = err.to_string();
        assert!(message.contains("'torch_jit'"), "{message}");
        assert!(message.contains("has no input"), "{message}");
    }
}
