//! The `compress` binary, end to end: reports on the shipped models, and bad input that must
//! give a one-line error naming the file, a non-zero exit and no panic.

use pare_onnx::{attr, GraphBuilder};
mod common;
use common::{assert_clean_error, compress, mnist, path_str, root};
use std::path::Path;
use std::process::Output;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn inspect_prints_a_per_layer_table_with_totals() {
    let o = compress(&["inspect", "models/lenet5_opset17.onnx"]);
    assert!(o.status.success());
    insta::assert_snapshot!("inspect_lenet5", stdout(&o));
}

#[test]
fn inspect_json_has_the_same_figures() {
    let o = compress(&["inspect", "models/vggbn_keepbn_opset17.onnx", "--json"]);
    assert!(o.status.success());
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The fixtures' README gives PyTorch's count: 252,138 parameters.
    assert_eq!(report["total_params"], 252_138);
    let layers = report["layers"].as_array().unwrap();
    let macs: u64 = layers.iter().map(|l| l["macs"].as_u64().unwrap()).sum();
    assert_eq!(report["total_macs"].as_u64().unwrap(), macs);
    assert!(layers.iter().any(|l| l["op"] == "BatchNormalization"));
}

#[test]
fn eval_reports_accuracy_and_latency_from_tract() {
    let o = compress(&[
        "eval",
        "models/lenet5_opset17.onnx",
        "--data",
        "models/mnist5k",
        "--runs",
        "5",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The fixtures' README: 96.2% measured with onnxruntime on the 1000 test images.
    assert_eq!(report["correct"], 962);
    assert_eq!(report["total"], 1000);
    assert!(report["latency"]["median_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(report["latency"]["runs"], 5);
}

#[test]
fn convert_writes_a_model_eval_accepts_and_refuses_to_overwrite_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lenet.onnx");
    let model = root().join("models/lenet5_dynamo_extdata_opset18.onnx");
    let o = compress(&["convert", path_str(&model), "-o", path_str(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = mnist();
    let o = compress(&[
        "eval",
        path_str(&out),
        "--data",
        path_str(&data),
        "--runs",
        "1",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["correct"], 962);

    let before = std::fs::read(&out).unwrap();
    let o = compress(&["convert", path_str(&out), "-o", path_str(&out)]);
    assert_clean_error(&o, &["lenet.onnx", "overwrite"]);
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

#[test]
fn a_dataset_of_another_image_size_is_refused() {
    let o = compress(&[
        "eval",
        "models/lenet5_opset17.onnx",
        "--data",
        "models/digits8x8",
    ]);
    assert_clean_error(&o, &["digits8x8", "[1, 8, 8]", "[1, 28, 28]"]);
}

/// Writes an MNIST-style folder of `n` blank 28×28 images with the given labels.
fn write_idx_dataset(dir: &Path, labels: &[u8]) {
    write_idx_splits(dir, labels, labels);
}

/// An MNIST-shaped IDX dataset of black images with these labels in each split.
fn write_idx_splits(dir: &Path, train: &[u8], test: &[u8]) {
    for (split, labels) in [("train", train), ("t10k", test)] {
        let n = labels.len() as u32;
        let mut images = vec![0, 0, 8, 3];
        for d in [n, 28, 28] {
            images.extend(d.to_be_bytes());
        }
        images.extend(vec![0u8; (n * 28 * 28) as usize]);
        let mut label_file = vec![0, 0, 8, 1];
        label_file.extend(n.to_be_bytes());
        label_file.extend(labels);
        std::fs::write(dir.join(format!("{split}-images-idx3-ubyte")), &images).unwrap();
        std::fs::write(dir.join(format!("{split}-labels-idx1-ubyte")), &label_file).unwrap();
    }
}

#[test]
fn labels_beyond_the_models_classes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_dataset(dir.path(), &[3, 1, 12]);
    let o = compress(&[
        "eval",
        "models/lenet5_opset17.onnx",
        "--data",
        path_str(dir.path()),
    ]);
    assert_clean_error(&o, &["sample 2", "label 12", "10 classes"]);
}

#[test]
fn eval_refuses_an_empty_test_split_and_absurd_run_counts() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_dataset(dir.path(), &[]);
    let data = path_str(dir.path());
    let o = compress(&["eval", "models/lenet5_opset17.onnx", "--data", data]);
    assert_clean_error(&o, &[data, "test split has no images"]);
    let o = compress(&[
        "eval",
        "models/lenet5_opset17.onnx",
        "--data",
        "models/mnist5k",
        "--runs",
        "18446744073709551615",
    ]);
    assert_clean_error(&o, &["--runs", "at most"]);
}

#[test]
fn training_budgets_and_run_counts_past_any_real_run_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let max = "18446744073709551615";
    let model = "models/lenet5_opset17.onnx";
    for (args, flag) in [
        (vec!["finetune", model, "--epochs", max], "--epochs"),
        (vec![model, "--epochs", max], "--epochs"),
        (vec![model, "--latency-runs", max], "--latency-runs"),
    ] {
        let mut args = args;
        args.extend(["--data", "models/mnist5k", "-o", path_str(&out)]);
        let o = compress(&args);
        assert_clean_error(&o, &[flag, "between 1 and"]);
        assert!(!out.exists(), "nothing written");
    }
}

#[test]
fn eval_with_a_batch_beyond_the_data_measures_every_image_once() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_dataset(dir.path(), &[3, 1, 4]);
    let o = compress(&[
        "eval",
        "models/lenet5_opset17.onnx",
        "--data",
        path_str(dir.path()),
        "--batch",
        "1000000000000",
        "--runs",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["total"], 3);
}

#[test]
fn a_missing_dataset_folder_or_model_is_named() {
    let o = compress(&[
        "eval",
        "models/lenet5_opset17.onnx",
        "--data",
        "no/such/dir",
    ]);
    assert_clean_error(&o, &["no/such/dir"]);
    let o = compress(&["inspect", "no/such/model.onnx"]);
    assert_clean_error(&o, &["no/such/model.onnx"]);
}

#[test]
fn a_model_with_a_cycle_or_undefined_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = GraphBuilder::new("g", 17);
    b.input("x", [1i64, 4]);
    b.node(
        "Relu",
        &["x", "nowhere"],
        &["y"],
        vec![attr::int("unused", 0)],
    );
    b.output("y", [1i64, 4]);
    let model = dir.path().join("undefined.onnx");
    pare_onnx::write_model(&model, &b.build()).unwrap();
    assert_clean_error(
        &compress(&["inspect", path_str(&model)]),
        &["undefined.onnx", "nowhere"],
    );
}

#[test]
fn finetune_is_repeatable_bit_for_bit_and_verified_by_tract() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str, optimizer: &str| {
        let out = dir.path().join(name);
        let o = compress(&[
            "finetune",
            "models/lenet5_opset17.onnx",
            "--data",
            "models/mnist5k",
            "-o",
            path_str(&out),
            "--optimizer",
            optimizer,
            "--seed",
            seed,
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (std::fs::read(&out).unwrap(), report)
    };
    let (a, report) = run("a.onnx", "7", "rls");
    let (b, _) = run("b.onnx", "7", "rls");
    let (c, _) = run("c.onnx", "8", "rls");
    assert!(a == b, "the same seed gives the same file");
    assert!(a != c, "another seed gives another batch order");
    assert_eq!(report["test_accuracy_before"], 96.2);
    let after = report["test_accuracy_after"].as_f64().unwrap();
    assert!(
        after >= 95.0,
        "one epoch of RLS on a pretrained LeNet-5 keeps it accurate: {after}"
    );
    let epochs = report["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 1);
    assert_eq!(epochs[0]["train"]["total"], 4000);
    for optimizer in ["sgd", "adam"] {
        let (_, report) = run(&format!("{optimizer}.onnx"), "1", optimizer);
        assert!(
            report["test_accuracy_after"].as_f64().unwrap() >= 94.0,
            "{optimizer}: {report}"
        );
    }
}

#[test]
fn finetune_refuses_bad_settings_and_its_own_input() {
    let model = root().join("models/lenet5_opset17.onnx");
    let o = compress(&[
        "finetune",
        path_str(&model),
        "--data",
        "models/mnist5k",
        "-o",
        path_str(&model),
    ]);
    assert_clean_error(&o, &["overwrite"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let o = compress(&[
        "finetune",
        "models/lenet5_opset17.onnx",
        "--data",
        "models/mnist5k",
        "-o",
        path_str(&out),
        "--lambda",
        "1.5",
    ]);
    assert_clean_error(&o, &["--lambda"]);
    assert!(!out.exists(), "nothing is written after a refusal");
}

#[test]
fn finetune_refuses_an_empty_train_split_and_non_finite_weights() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_splits(dir.path(), &[], &[1, 2]);
    let out = dir.path().join("o.onnx");
    let finetune = |model: &Path, data: &Path| {
        compress(&[
            "finetune",
            path_str(model),
            "--data",
            path_str(data),
            "-o",
            path_str(&out),
            "--epochs",
            "1",
        ])
    };
    let lenet = root().join("models/lenet5_opset17.onnx");
    let o = finetune(&lenet, dir.path());
    assert_clean_error(&o, &[path_str(dir.path()), "train split has no images"]);
    assert!(!out.exists());

    // One NaN in the first float weight: ReLU would hide it from the loss, not from the model.
    let mut proto = pare_onnx::read_model(&lenet).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let weight = graph
        .initializer
        .iter_mut()
        .find(|t| t.data_type == Some(1) && t.dims.len() == 4)
        .unwrap();
    let name = weight.name.clone().unwrap();
    match weight.raw_data.as_mut() {
        Some(raw) => raw[4..8].copy_from_slice(&f32::NAN.to_le_bytes()),
        None => weight.float_data[1] = f32::NAN,
    }
    let broken = dir.path().join("nan.onnx");
    pare_onnx::write_model(&broken, &proto).unwrap();
    let o = finetune(&broken, &root().join("models/mnist5k"));
    assert_clean_error(
        &o,
        &["nan.onnx", &format!("weight '{name}' holds NaN at index 1")],
    );
    assert!(!out.exists());
}

#[test]
fn compress_writes_a_smaller_verified_model_and_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("small.onnx"), dir.path().join("r.json"));
    let o = compress(&[
        "models/lenet5_opset17.onnx",
        "--data",
        "models/mnist5k",
        "-o",
        path_str(&out),
        "--target-macs",
        "0.8",
        "--epochs",
        "2",
        "--report",
        path_str(&report),
        "--latency-runs",
        "5",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["written"], true);
    assert_eq!(r["target_met"], true);
    let macs = |m: &str| r[m]["macs"].as_f64().unwrap();
    assert!(macs("compressed") <= 0.8 * macs("original"));
    assert_eq!(r["original"]["test_accuracy"], 96.2);
    assert!(r["compressed"]["test_accuracy"].as_f64().unwrap() >= 95.2);
    assert_eq!(
        r["compressed"]["file_bytes"].as_u64().unwrap(),
        std::fs::metadata(&out).unwrap().len()
    );
    assert_eq!(r["layers"].as_array().unwrap().len(), 5);
    let history = r["history"].as_array().unwrap();
    assert!(history.iter().any(|h| h["kind"] == "prune"), "{history:?}");
    // The written file is what tract verified: evaluating it again gives the same accuracy.
    let e = compress(&["eval", path_str(&out), "--data", "models/mnist5k"]);
    assert!(stdout(&e).contains(&format!("{}%", r["compressed"]["test_accuracy"])));
    insta::with_settings!({filters => vec![
        (r"latency, batch 1 \(median ms\) .*", "[latency]"),
        (r"efficiency \(MACs/latency\) .*", "[efficiency]"),
        (r"(?m) +(\d+\.\d{3}|-) +(\d+\.\d{3}|-)$", " [ms]"),
        (r"wrote .*", "wrote [output]"),
    ]}, {
        insta::assert_snapshot!("compress_lenet5", stdout(&o));
    });
}

#[test]
fn compress_keeps_a_model_that_loses_too_much_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small.onnx");
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "models/lenet5_opset17.onnx",
            "--data",
            "models/mnist5k",
            "--target-params",
            "0.9",
            "--epochs",
            "1",
            "--strategy",
            "oneshot",
            "--latency-runs",
            "1",
            // Any change at all counts as too much.
            "--max-drop=-100",
        ];
        a.extend_from_slice(extra);
        a
    };
    let mut refused = args(&["-o"]);
    refused.push(path_str(&out));
    let o = compress(&refused);
    let err = assert_clean_error(&o, &["--max-drop", "--force"]);
    assert!(err.contains("was not written"), "{err}");
    assert!(!out.exists());
    // A separate validation set (here the test split, as a user may choose) replaces the split.
    let mut forced = args(&["--force", "--val", "models/mnist5k", "-o"]);
    forced.push(path_str(&out));
    let o = compress(&forced);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.exists());
    assert!(
        stdout(&o).contains("validation: models/mnist5k (1000 images)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn compress_refuses_bad_settings_and_its_own_input() {
    let base = ["models/lenet5_opset17.onnx", "--data", "models/mnist5k"];
    for (extra, expected) in [
        (vec!["-o", "models/lenet5_opset17.onnx"], "input"),
        (
            vec!["-o", "x.onnx", "--strategy", "oneshot"],
            "--target-macs",
        ),
        (vec!["-o", "x.onnx", "--target-macs", "1.5"], "fraction"),
        (
            vec!["-o", "x.onnx", "--optimizer", "adam"],
            "--strategy rls trains with RLS",
        ),
        (vec!["-o", "x.onnx", "--report", "x.onnx"], "another path"),
        (
            vec!["-o", "models/mnist5k/t10k-labels-idx1-ubyte.gz"],
            "overwrite the --data dataset",
        ),
        (
            vec![
                "-o",
                "x.onnx",
                "--report",
                "models/mnist5k/t10k-labels-idx1-ubyte.gz",
            ],
            "overwrite the --data dataset",
        ),
        (vec!["-o", "x.onnx", "--tolerance", "NaN"], "--tolerance"),
        (vec!["-o", "x.onnx", "--tolerance=-1"], "--tolerance"),
        (vec!["-o", "x.onnx", "--max-drop", "inf"], "--max-drop"),
        (
            vec!["-o", "x.onnx", "--max-grad-norm", "nan"],
            "--max-grad-norm",
        ),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra).collect();
        let o = compress(&args);
        let err = assert_clean_error(&o, &[]);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!root().join("x.onnx").exists());
    }
}
