//! Helpers shared by the end-to-end tests (included with `mod common;`): where the shipped models and data are, and how to run
//! the `compress` binary.

#![allow(dead_code)] // each test target uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    // These tests are targets of crates/cli.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
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

/// Runs `compress` with the given arguments from the workspace root.
pub fn compress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_compress"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("compress runs")
}

/// tract's outputs on `graph` written to `dir/name`, for the batch `x`.
pub fn tract_outputs(
    graph: &pare_ir::Graph,
    dir: &Path,
    name: &str,
    x: &ndarray::Array4<f32>,
) -> ndarray::Array2<f32> {
    let path = dir.join(name);
    pare_onnx::write_model(&path, &pare_ir::export(graph)).unwrap();
    pare_verify::TractModel::load(&path, x.shape())
        .unwrap()
        .run(x.view())
        .unwrap()
}

/// Asserts a clean failure: exit status 1, one line on stderr naming `names`, no panic.
pub fn assert_clean_error(o: &Output, names: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for name in names {
        assert!(err.contains(name), "'{name}' missing from: {err}");
    }
    err
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The shipped LeNet-5 with its image dimensions left open, as a Paddle or TensorFlow converter
/// writes its input (`N×1×?×?`), and every intermediate declaration dropped.
pub fn open_lenet(dir: &Path) -> PathBuf {
    use pare_onnx::proto::tensor_shape_proto::dimension::Value;
    use pare_onnx::proto::type_proto;
    let mut model = pare_onnx::read_model(&root().join("models/lenet5_opset17.onnx")).unwrap();
    let graph = model.graph.as_mut().unwrap();
    graph.value_info.clear();
    let Some(type_proto::Value::TensorType(t)) = graph.input[0]
        .r#type
        .as_mut()
        .and_then(|t| t.value.as_mut())
    else {
        panic!("LeNet's input is a tensor")
    };
    for d in &mut t.shape.as_mut().unwrap().dim[2..] {
        d.value = Some(Value::DimParam("?".into()));
    }
    let path = dir.join("open_lenet.onnx");
    pare_onnx::write_model(&path, &model).unwrap();
    path
}
