//! Helpers shared by the end-to-end tests: where the shipped models and data are, and how to run
//! the `compress` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// Every ONNX model shipped in models/.
pub fn shipped_models() -> Vec<PathBuf> {
    let mut models: Vec<PathBuf> = std::fs::read_dir(root().join("models"))
        .expect("models/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    assert!(models.len() >= 6, "models/ lost its fixtures: {models:?}");
    models
}

pub fn mnist() -> PathBuf {
    root().join("models/mnist5k")
}

/// The `compress` binary cargo built beside this test (target/<profile>/compress).
pub fn compress_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = dir.join(format!("compress{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p pare-cli` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// Runs `compress` with the given arguments from the workspace root.
pub fn compress(args: &[&str]) -> Output {
    Command::new(compress_bin())
        .args(args)
        .current_dir(root())
        .output()
        .expect("compress runs")
}
