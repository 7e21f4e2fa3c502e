//! Project chores, run as `cargo xtask <task>` (see .cargo/config.toml).
//!
//! - `gen-proto`: regenerate `crates/onnx/src/generated/onnx.rs` from `proto/onnx.proto` with protox,
//!   so no protoc is needed. A test below fails when the committed file is stale.
//!
//! This crate is for maintainers; nothing in the tool depends on it.

mod proto;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("gen-proto") => {
            let path = proto::write_committed()?;
            println!("wrote {}", path.display());
            Ok(())
        }
        _ => bail!("usage: cargo xtask gen-proto"),
    }
}
