//! Training over pare's IR: forward and backward passes per op (mapped onto pare-kernels),
//! losses, optimisers (SGD, Adam, RLS) and the training loop.
//!
//! The graph's initializers are the parameters; training updates them in place, so exporting the
//! graph afterwards writes the tuned model. This crate does not read files or talk to tract.

// deny rather than forbid: ndarray's `s!` expands to an `allow(unsafe_code)` of its own.
#![deny(unsafe_code)]

mod error;
pub mod executor;
pub mod init;
pub mod loss;
pub mod optim;
mod schedule;
mod trainer;

pub use error::TrainError;
pub use executor::{backward, forward, Gradients, Mode, Tape};
pub use loss::{DistillForm, Distillation, Loss, Objective};
pub use optim::{AdamConfig, OptimizerConfig, RlsConfig, SgdConfig};
pub use schedule::Schedule;
pub use trainer::{
    evaluate, predict, reestimate_batchnorm, scores_value, train, train_step, BatchProgress,
    BatchStream, EpochReport, Evaluation, StepReport, TrainConfig, TrainingLoop,
};
