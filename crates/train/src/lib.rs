//! Training over pare's IR: forward and backward kernels per op, losses, optimisers (SGD, Adam,
//! RLS) and the training loop.
//!
//! The graph's initializers are the parameters; training updates them in place, so exporting the
//! graph afterwards writes the tuned model. This crate does not read files or talk to tract.

mod error;
pub mod executor;
pub mod gemm;
pub mod init;
pub mod kernels;
pub mod loss;
pub mod memory;
pub mod optim;
mod schedule;
mod scratch;
mod sums;
mod trainer;

pub use error::TrainError;
pub use executor::{backward, forward, Gradients, Mode, Tape};
pub use loss::Loss;
pub use optim::{AdamConfig, OptimizerConfig, RlsConfig, SgdConfig};
pub use schedule::Schedule;
pub use trainer::{
    evaluate, scores_value, train, train_step, BatchProgress, BatchStream, EpochReport, Evaluation,
    StepReport, TrainConfig, TrainingLoop,
};
