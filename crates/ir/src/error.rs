//! The error type of the IR crate.

/// What can go wrong turning a ModelProto into a Graph or working on one. Variants name the node
/// or tensor at fault; callers add the file.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    #[error("the model has no graph")]
    NoGraph,
    #[error("tensor '{tensor}': {problem}")]
    Tensor { tensor: String, problem: String },
    #[error("node '{node}' ({op}): {problem}")]
    Node {
        node: String,
        op: String,
        problem: String,
    },
    #[error("graph {what} '{name}' is not defined by any input, initializer or node")]
    Undefined { what: &'static str, name: String },
    #[error("value '{name}' is produced twice (by {first} and {second}); ONNX requires single assignment")]
    Reassigned {
        name: String,
        first: String,
        second: String,
    },
    #[error("the model imports ONNX opset {opset}; pare knows opsets 1 to {max}: convert the model to opset {max} or older (onnx.version_converter)")]
    Opset { opset: i64, max: i64 },
    #[error("graph input '{name}' has an initializer of the same name, so the model has no input left to feed: rename the initializer, or drop it if the input is meant to be fed")]
    InputIsInitializer { name: String },
    #[error("cannot fix the input shape: {problem}")]
    InputShape { problem: String },
    #[error("the graph has a cycle through node '{node}'")]
    Cycle { node: String },
}
