//! Bad model files and outputs, end to end: empty, truncated or random files, external data that
//! is missing, short or outside the model's folder, and outputs that would replace an input or a
//! device. Each must give a one-line error naming the file, exit status 1, and change nothing.

use pare_onnx::proto::{tensor_proto::DataLocation, StringStringEntryProto, TensorProto};
use pare_onnx::GraphBuilder;
mod common;
use common::{assert_clean_error, compress, path_str, root};
use std::path::Path;

/// Writes `model`, whose one weight lives in external data at `location`.
fn write_model_with_external_weight(model: &Path, location: &str) {
    let mut b = GraphBuilder::new("g", 17);
    b.input("x", [1i64, 4]);
    b.initializer(TensorProto {
        name: Some("w".into()),
        dims: vec![4],
        data_type: Some(1),
        data_location: Some(DataLocation::External as i32),
        external_data: vec![StringStringEntryProto {
            key: Some("location".into()),
            value: Some(location.into()),
        }],
        ..Default::default()
    });
    b.node("Add", &["x", "w"], &["y"], vec![]);
    b.output("y", [1i64, 4]);
    pare_onnx::write_model(model, &b.build()).unwrap();
}

#[test]
fn no_output_replaces_an_external_data_file_or_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    let weights = dir.path().join("weights.bin");
    std::fs::write(&weights, [0u8; 16]).unwrap();
    write_model_with_external_weight(&model, "weights.bin");
    let o = compress(&["convert", path_str(&model), "-o", path_str(&weights)]);
    assert_clean_error(&o, &["weights.bin", "overwrite", "external data"]);
    assert_eq!(std::fs::read(&weights).unwrap(), [0u8; 16]);

    // A FIFO stands in for a device node (/dev/null): it must stay what it is.
    let fifo = dir.path().join("null");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let o = compress(&["convert", path_str(&model), "-o", path_str(&fifo)]);
    assert_clean_error(&o, &["null", "not a regular file"]);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    let o = compress(&["inspect", path_str(&fifo)]);
    assert_clean_error(&o, &["null", "a pipe"]);
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["m.onnx", "null", "weights.bin"],
        "no temporary files"
    );
}

#[test]
fn empty_random_and_truncated_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    assert_clean_error(
        &compress(&["inspect", path_str(&empty)]),
        &["empty.onnx", "empty"],
    );

    let random = dir.path().join("random.onnx");
    let noise: Vec<u8> = (0..10_000u64)
        .map(|i| (i.wrapping_mul(6364136223846793005) >> 56) as u8)
        .collect();
    std::fs::write(&random, noise).unwrap();
    assert_clean_error(&compress(&["inspect", path_str(&random)]), &["random.onnx"]);

    let truncated = dir.path().join("truncated.onnx");
    let full = std::fs::read(root().join("models/lenet5_opset17.onnx")).unwrap();
    for cut in [full.len() / 2, full.len() - 1, 100] {
        std::fs::write(&truncated, &full[..cut]).unwrap();
        assert_clean_error(
            &compress(&["inspect", path_str(&truncated)]),
            &["truncated.onnx"],
        );
    }
}

#[test]
fn missing_or_short_external_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let name = "lenet5_dynamo_extdata_opset18.onnx";
    let model = dir.path().join(name);
    std::fs::copy(root().join("models").join(name), &model).unwrap();
    let err = assert_clean_error(
        &compress(&["inspect", path_str(&model)]),
        &[name, "external data file"],
    );
    assert!(err.contains(".onnx.data"), "{err}");

    let data = std::fs::read(root().join("models").join(format!("{name}.data"))).unwrap();
    std::fs::write(
        dir.path().join(format!("{name}.data")),
        &data[..data.len() - 100],
    )
    .unwrap();
    assert_clean_error(
        &compress(&["inspect", path_str(&model)]),
        &[name, "truncated"],
    );
}

#[test]
fn external_data_outside_the_model_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(dir.path().join("w.data"), [0u8; 16]).unwrap();
    for location in ["../w.data", path_str(&dir.path().join("w.data"))] {
        let model = inner.join("escape.onnx");
        write_model_with_external_weight(&model, location);
        assert_clean_error(
            &compress(&["inspect", path_str(&model)]),
            &["escape.onnx", "leaves the model's folder"],
        );
    }
}

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_compress"))
        .args([
            "inspect",
            path_str(&root().join("models/vggbn_opset17.onnx")),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before a line is printed
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(o.status.signal(), Some(13), "{:?}: {stderr}", o.status); // SIGPIPE
}
