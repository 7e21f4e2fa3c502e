//! Project chores, run as `cargo xtask <task>` (see .cargo/config.toml) or, for benchmarks,
//! `cargo run --release -p xtask -- bench <which>`. `--help` lists them.
//!
//! This crate is for maintainers; nothing in the tool depends on it.

#![forbid(unsafe_code)]

mod bench;
mod distill_bench;
mod epoch_bench;
mod es_bench;
mod fuzz;
mod hierarchical_bench;
mod kernel_bench;
mod latency_bench;
mod latency_target_bench;
mod proto;
mod prune_bench;
mod redundancy_bench;
mod relief_bench;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "pare's maintainer chores: ONNX bindings, fuzzing and benchmarks"
)]
enum Task {
    /// Regenerate crates/onnx/src/generated/onnx.rs from proto/onnx.proto with protox (no protoc
    /// needed). A test fails when the committed file is stale.
    GenProto,
    /// Structured mutation fuzzing of read, import, groups, surgery and export over the shipped
    /// models; lists panics and broken invariants with the command that replays each.
    Fuzz(fuzz::Options),
    /// Run a benchmark (build with --release: a debug build's figures mean nothing).
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Training speed: SGD and RLS step times per model, beside PyTorch when it is importable.
    Train,
    /// LeNet-5 trained from scratch with RLS, Adam and SGD: tract test accuracy per epoch.
    Convergence,
    /// One training epoch of torchvision's MobileNetV2 on 1,000 224×224 images, pare beside
    /// PyTorch (needs torch and torchvision).
    Epoch,
    /// The convolution kernels alone, per layer of the VGG-style net and LeNet-5, and GEMM.
    Kernels {
        /// Keep only the layers whose label contains this (e.g. conv2).
        layer: Option<String>,
    },
    /// `compress` at 50% and 25% of the MACs, RLS beside one-shot L2, from its --report.
    Prune {
        /// Keep only the models whose file name contains this (lenet5, vggbn, resnet20).
        model: Option<String>,
    },
    /// Effective-filter analysis tested: R_max against ε and T, then accuracy against MACs for
    /// hierarchical, rls and oneshot-l2, with an SVG per model.
    Redundancy(redundancy_bench::Options),
    /// Hierarchical against one-shot L2 at one MACs target over seeds 1..N, paired by seed.
    HierarchicalTarget(hierarchical_bench::Settings),
    /// `compress --strategy es` at 50% of the MACs: its front's three models beside RLS and
    /// one-shot L2 at the same MACs and the same total training, and the search's wall time.
    Es(es_bench::Settings),
    /// `compress --strategy relief` per pass (nonzero params, structural MACs, validation), then
    /// beside rls and one-shot L2 at the same structural MACs, from its --report.
    Relief(relief_bench::Settings),
    /// `compress` at 50% of the MACs three ways: labelled, distilled from the original on the same
    /// images without labels, and without data; test accuracy of each by tract.
    Distill(distill_bench::Settings),
    /// pare-latency's model of tract latency: measured per group at a ladder of widths, then its
    /// predictions against tract's measured latency on 20 random plans per model.
    LatencyModel {
        /// Keep only the models whose file name contains this (lenet5, vggbn, resnet20, mobile).
        model: Option<String>,
    },
    /// `compress --target-latency` against `--target-macs` runs of the same measured latency:
    /// MACs kept, efficiency and test accuracy side by side.
    LatencyTarget(latency_target_bench::Settings),
}

fn main() -> Result<()> {
    match Task::parse() {
        Task::GenProto => {
            let path = proto::write_committed()?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Task::Fuzz(options) => fuzz::run(&options),
        Task::Bench { which } => match which {
            Bench::Train => bench::with_pool(bench::train_speed),
            Bench::Convergence => bench::with_pool(bench::convergence),
            Bench::Epoch => bench::with_pool(epoch_bench::mobilenet_v2_epoch),
            Bench::Kernels { layer } => {
                bench::with_pool(|| kernel_bench::conv_speed(layer.as_deref()))
            }
            Bench::Prune { model } => prune_bench::quality(model.as_deref()),
            Bench::Redundancy(options) => redundancy_bench::run(options),
            Bench::HierarchicalTarget(settings) => hierarchical_bench::compare(&settings),
            Bench::Es(settings) => es_bench::compare(&settings),
            Bench::Relief(settings) => relief_bench::relief(&settings),
            Bench::Distill(settings) => distill_bench::distill(&settings),
            Bench::LatencyTarget(settings) => latency_target_bench::compare(&settings),
            Bench::LatencyModel { model } => {
                bench::with_pool(|| latency_bench::latency_model(model.as_deref()))
            }
        },
    }
}
