//! Structured mutation fuzzing of pare's model pipeline, dev-only: nothing in the tool depends on
//! it. Each case takes a shipped model, mutates it (its decoded message, its bytes, or both),
//! and runs it through decode, external data, import, cost, channel groups, a pruning plan's
//! surgery and export; every stage must return Ok or an error, never panic.
//!
//! A case is fixed by the run's seed and its index, so any finding replays exactly
//! (`cargo xtask fuzz --seed S --replay N`). `cargo test -p pare-fuzz` runs a bounded campaign;
//! `cargo xtask fuzz --cases N` a longer one.

#![forbid(unsafe_code)]

mod campaign;
mod corpus;
mod dice;
mod mutate_bytes;
mod mutate_graph;
mod mutate_tensors;
mod pipeline;

pub use campaign::{run, Finding, Summary};
pub use corpus::{Corpus, Seed};
pub use pipeline::{case_model, run_case, Outcome};
