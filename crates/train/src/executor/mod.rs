//! Runs a Graph forward on a batch, keeping what the backward pass needs (the tape), and runs
//! it backward from the gradient of one output.

mod forward;

pub use forward::{backward, forward, Gradients, Mode, Tape};
