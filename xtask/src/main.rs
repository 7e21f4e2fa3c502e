//! Project chores, run as `cargo xtask <task>` (see .cargo/config.toml).
//!
//! - `gen-proto`: regenerate `crates/onnx/src/generated/onnx.rs` from `proto/onnx.proto` with protox,
//!   so no protoc is needed. A test below fails when the committed file is stale.
//! - `bench train`: training images per second (SGD and RLS, beside PyTorch when it is installed).
//! - `bench convergence`: LeNet-5 from scratch with RLS, Adam and SGD, test accuracy per epoch.
//! - `bench kernels [layer]`: the convolution kernels alone, per layer of the VGG-style net and
//!   LeNet-5, and GEMM.
//! - `bench prune [model]`: `compress` at 50% and 25% of the MACs, RLS beside one-shot L2.
//!
//! This crate is for maintainers; nothing in the tool depends on it.

#![forbid(unsafe_code)]

mod bench;
mod kernel_bench;
mod proto;
mod prune_bench;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen-proto") => {
            let path = proto::write_committed()?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Some("bench") if args.get(1).is_some_and(|a| a == "prune") => {
            prune_bench::quality(args.get(2).map(String::as_str))
        }
        Some("bench") if args.get(1).is_some_and(|a| a == "kernels") => {
            bench::with_pool(|| kernel_bench::conv_speed(args.get(2).map(String::as_str)))
        }
        Some("bench") => bench::run(args.get(1).map(String::as_str)),
        _ => bail!("usage: cargo xtask gen-proto | {}", bench::USAGE),
    }
}
