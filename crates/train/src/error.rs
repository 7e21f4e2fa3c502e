//! The error type of the training crate.

/// What can stop a forward or backward pass, or a training run. Variants name the node.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("node '{node}' ({op}): {problem}")]
    Node {
        node: String,
        op: String,
        problem: String,
    },
    #[error("the model input has shape {model:?} per sample but the data has {data:?}")]
    InputShape {
        model: Vec<String>,
        data: Vec<usize>,
    },
    #[error("the model's graph '{graph}' has no input: training feeds each batch to the first graph input; export the model with its image input declared as a graph input")]
    NoInput { graph: String },
    #[error("the model's graph '{graph}' has no output: training needs the logits as the first graph output")]
    NoOutput { graph: String },
    #[error("the model's output has shape {0:?}; training needs [batch, classes] logits")]
    OutputShape(Vec<usize>),
    #[error("sample labels reach {label} but the model scores {classes} classes")]
    Label { label: usize, classes: usize },
    #[error("distillation: {0}")]
    Teacher(String),
    #[error("no training samples: the training split is empty")]
    NoSamples,
    #[error("weight '{tensor}' holds {value} at index {index}: training needs finite weights; if the model came so, re-export it, if training made it so, lower the learning rate")]
    NonFiniteWeight {
        tensor: String,
        index: usize,
        value: f32,
    },
    #[error("training diverged: the loss became {loss} at epoch {epoch}, batch {batch}; lower the learning rate (for RLS, α·η)")]
    Diverged {
        loss: f32,
        epoch: usize,
        batch: usize,
    },
}

/// How errors name a graph: its name in the file, or "unnamed".
pub(crate) fn graph_name(graph: &pare_ir::Graph) -> String {
    graph
        .meta
        .graph_name
        .clone()
        .unwrap_or_else(|| "unnamed".into())
}
