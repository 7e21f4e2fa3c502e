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
    // The data must fit the sample shape the graph was inferred for (the batch may differ), or a
    // kernel would meet operands whose sizes disagree.
    if let Some(declared) = &graph.value(first).shape {
        let fits = declared.rank() == input.ndim()
            && declared.0[1..]
                .iter()
                .zip(&input.shape()[1..])
                .all(|(d, &n)| d.known().is_none_or(|k| k == n));
        if !fits {
            return Err(TrainError::InputShape {
                model: declared.0.iter().map(|d| d.to_string()).collect(),
                data: input.shape().to_vec(),
            });
        }
    }
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

    /// x [N, 4] → Flatten(axis 0) → Gemm with B [4, 2]: import cannot tell K (it holds the batch),
    /// so the mismatch shows only when a batch of 2 runs.
    fn flatten_all_then_gemm() -> Graph {
        use pare_onnx::attr::{self, tensor_f32};
        let mut b = pare_onnx::GraphBuilder::new("t", 17);
        b.input("x", [pare_onnx::DimSpec::from("N"), 4.into()]);
        b.output("y", [1, 2]);
        b.initializer(tensor_f32("b", &[4, 2], vec![0.5; 8]));
        b.node("Flatten", &["x"], &["f"], vec![attr::int("axis", 0)]);
        b.node("Gemm", &["f", "b"], &["y"], vec![]);
        pare_ir::import(&b.build()).unwrap()
    }

    #[test]
    fn data_or_operands_that_contradict_the_model_are_refused_by_name() {
        let graph = flatten_all_then_gemm();
        let run = |g: &Graph, dims: &[usize]| {
            forward(g, ArrayD::zeros(IxDyn(dims)), Mode::Eval, false, None)
                .err()
                .map(|e| e.to_string())
        };
        // One sample fits; two make Gemm's K 8 against B's 4.
        assert_eq!(run(&graph, &[1, 4]), None);
        let e = run(&graph, &[2, 4]).unwrap();
        assert!(e.contains("Gemm_1") && e.contains("[1, 8]"), "{e}");
        // A sample of the wrong shape.
        let e = run(&graph, &[1, 5]).unwrap();
        assert!(e.contains("per sample") && e.contains("[1, 5]"), "{e}");
        // An output whose run disagrees with the inferred shape stops at that node.
        let mut wrong = graph.clone();
        let f = wrong.nodes[0].outputs[0];
        wrong.value_mut(f).shape = Some(pare_ir::Shape::known(&[1, 3]));
        let e = run(&wrong, &[1, 4]).unwrap();
        assert!(e.contains("Flatten_0") && e.contains("[1, 3]"), "{e}");
    }
}
