//! pare's graph IR: a topologically ordered list of typed nodes over named values, imported from
//! and exported to ONNX, with shapes inferred and shape subgraphs folded.
//!
//! Invariants (see docs/ARCHITECTURE.md): nodes are in topological order; every value has one
//! source; an op the IR does not model is `Op::Opaque` and exported untouched; exporting an
//! unmodified graph gives a model with the same outputs. This crate does not run models (tract and
//! the train crate do) and does not read files (pare-onnx does).

#![forbid(unsafe_code)]

mod check;
mod cost;
mod error;
mod export;
mod fold;
mod fold_const;
mod graph;
mod id_vec;
mod idioms;
mod import;
mod infer;
mod op;
mod settle;
mod shape;
mod tensor;

pub use cost::{node_costs, NodeCost};
pub use error::IrError;
pub use export::export;
pub use graph::{Graph, ModelMeta, Node, NodeId, Value, ValueId, ValueSource};
pub use id_vec::{Id, IdVec, PerNode, PerValue};
pub use import::import;
pub use infer::infer_shapes;
pub use op::{Conv, Gemm, Op, Padding, Pool, Window};
pub use settle::{fix_input_shape, input_shape_is_open};
pub use shape::{Dim, Shape};
pub use tensor::Tensor;
