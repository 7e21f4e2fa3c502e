//! `compress` on unlabeled images: the original model labels and scores them, training distils
//! from its scores, and the final check is top-1 agreement with it on held-out images; and
//! `--distill` on labelled data.

mod common;

use common::{assert_clean_error, compress, mnist, path_str};
use std::path::Path;

/// The first `count` MNIST training images as PNG files directly in `dir` (no class folders).
fn unlabeled_folder(dir: &Path, count: usize) {
    let images = pare_data::load_dir(&mnist()).unwrap().train.images;
    for n in 0..count {
        let image = image::GrayImage::from_fn(28, 28, |x, y| {
            image::Luma([(images[[n, 0, y as usize, x as usize]] * 255.0).round() as u8])
        });
        image.save(dir.join(format!("{n:04}.png"))).unwrap();
    }
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `compress` on LeNet-5 with `count` unlabeled MNIST images, `flags`, `--max-drop 100` and a
/// report; asserts it wrote the model, and returns its stdout and report.
fn compress_unlabeled(count: usize, flags: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    unlabeled_folder(&images, count);
    let (out, json) = (dir.path().join("small.onnx"), dir.path().join("r.json"));
    let base = [
        "models/lenet5_opset17.onnx",
        "--data",
        path_str(&images),
        "-o",
        path_str(&out),
        "--max-drop",
        "100",
        "--report",
        path_str(&json),
    ];
    let o = compress(&[&base[..], flags].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.is_file());
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        report(&json),
    )
}

#[test]
fn unlabeled_images_train_by_distillation_and_the_table_reports_agreement() {
    let (stdout, r) = compress_unlabeled(
        600,
        &[
            "--strategy",
            "oneshot",
            "--target-macs",
            "0.6",
            "--epochs",
            "3",
        ],
    );
    // 20% of 600 held out for the final check; the original agrees with itself.
    assert!(
        stdout.contains("top-1 agreement with the original (120 held-out images)    100.0%"),
        "{stdout}"
    );
    assert!(!stdout.contains("test accuracy"), "{stdout}");
    assert_eq!(r["supervision"], "teacher");
    assert_eq!(r["config"]["loss"]["distillation"]["weight"], 1.0);
    assert_eq!(
        r["config"]["loss"]["distillation"]["form"]["kl"]["temperature"],
        1.0
    );
    // Agreement's own default tolerance.
    assert_eq!(r["config"]["accuracy_tolerance"], 2.0);
    // Training lowered the distillation loss the prune raised, and won agreement back.
    let history = r["history"].as_array().unwrap();
    let pruned = history.iter().find(|h| h["kind"] == "prune").unwrap();
    let last = history.last().unwrap();
    let [loss_pruned, loss_last] = [pruned, last].map(|h| h["validation_loss"].as_f64().unwrap());
    let [agree_pruned, agree_last] =
        [pruned, last].map(|h| h["validation_accuracy"].as_f64().unwrap());
    assert!(
        loss_last < 0.5 * loss_pruned,
        "KL to the teacher: {loss_pruned} after the prune, {loss_last} at the end"
    );
    assert!(
        agree_last > agree_pruned && agree_last >= 90.0,
        "agreement: {agree_pruned} after the prune, {agree_last} at the end"
    );
    assert_eq!(history[0]["validation_accuracy"], 100.0);
}

#[test]
fn distill_adds_the_teacher_term_to_labelled_training() {
    let dir = tempfile::tempdir().unwrap();
    let (out, json) = (dir.path().join("small.onnx"), dir.path().join("r.json"));
    let o = compress(&[
        "models/lenet5_opset17.onnx",
        "--data",
        "models/mnist5k",
        "-o",
        path_str(&out),
        "--strategy",
        "oneshot",
        "--target-macs",
        "0.8",
        "--epochs",
        "1",
        "--distill",
        "--distill-loss",
        "mse",
        "--distill-weight",
        "0.25",
        "--max-drop",
        "100",
        "--report",
        path_str(&json),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("test accuracy (1000 images)"), "{stdout}");
    let r = report(&json);
    assert_eq!(r["supervision"], "labels");
    assert_eq!(r["config"]["loss"]["distillation"]["weight"], 0.25);
    assert_eq!(r["config"]["loss"]["distillation"]["form"], "logit-mse");
    // Label loss and teacher term together: above zero for the unpruned model.
    assert!(r["history"][0]["validation_loss"].as_f64().unwrap() > 0.0);
}

#[test]
fn unlabeled_images_are_refused_where_labels_are_needed_and_bad_distill_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    unlabeled_folder(dir.path(), 4);
    let out = dir.path().join("small.onnx");
    let o = compress(&[
        "finetune",
        "models/lenet5_opset17.onnx",
        "--data",
        path_str(dir.path()),
        "-o",
        path_str(&out),
    ]);
    assert_clean_error(&o, &["holds 4 images without labels", "distilling"]);
    let base = [
        "models/lenet5_opset17.onnx",
        "--data",
        path_str(dir.path()),
        "-o",
        path_str(&out),
    ];
    for (flags, message) in [
        (&["--temperature", "0"][..], "--temperature must be"),
        (&["--distill-weight", "1.5"], "--distill-weight must be"),
        (&["--test-fraction", "1"], "--test-fraction must be"),
        (&["--val", "models/mnist5k"], "--val: with unlabeled --data"),
    ] {
        let o = compress(&[&base[..], flags].concat());
        assert_clean_error(&o, &[message]);
    }
    assert!(!out.exists());
}

#[test]
fn without_data_the_model_is_pruned_once_compensated_and_checked_on_synthetic_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let (out, json) = (
            dir.path().join(format!("{name}.onnx")),
            dir.path().join(format!("{name}.json")),
        );
        let o = compress(
            &[
                &[
                    "models/vggbn_keepbn_opset17.onnx",
                    "-o",
                    path_str(&out),
                    "--report",
                    path_str(&json),
                ][..],
                extra,
            ]
            .concat(),
        );
        (o, out, json)
    };
    let (o, out, json) = run("a", &[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    // Not gated by default: synthetic agreement says little of accuracy.
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("no --data: pruning to 50% of the MACs"),
        "{stderr}"
    );
    assert!(stdout.contains("synthetic inputs)"), "{stdout}");
    assert!(
        stdout.contains("warning: accuracy was not measured"),
        "{stdout}"
    );
    assert!(stdout.contains("bias compensation: 104 of 104"), "{stdout}");
    let r = report(&json);
    assert_eq!(r["supervision"], "synthetic");
    assert_eq!(r["history"].as_array().unwrap().len(), 0);
    assert_eq!(r["no_data"]["criterion"], "l2");
    assert_eq!(r["no_data"]["synthetic"]["kind"], "first-batch-norm");
    let macs = r["compressed"]["macs"].as_f64().unwrap() / r["original"]["macs"].as_f64().unwrap();
    assert!(macs <= 0.5 && macs > 0.4, "{macs}");
    // tract runs the written model on real images, far above chance without any training.
    let test = pare_data::load_dir(&mnist()).unwrap().test.head(200);
    let model = pare_verify::TractModel::load(&out, &[200, 1, 28, 28]).unwrap();
    let accuracy = pare_verify::accuracy(&model, &test).unwrap().percent();
    assert!(accuracy > 50.0, "{accuracy}");
    // The same seed writes the same bytes; a gate asked for is applied.
    let (o, again, _) = run("b", &[]);
    assert!(o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    // (The target given, so stderr holds only the error.)
    let (o, gated, _) = run("c", &["--max-drop", "1", "--target-macs", "0.5"]);
    assert_clean_error(
        &o,
        &["agreement with the original on synthetic inputs fell by"],
    );
    assert!(!gated.exists());
}

#[test]
fn without_data_flags_that_need_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small.onnx");
    for (flags, message) in [
        (
            &["--strategy", "rls"][..],
            "--strategy rls trains or searches on data",
        ),
        (
            &["--criterion", "taylor"],
            "--criterion taylor scores channels from data",
        ),
        (&["--distill"], "--distill needs --data"),
        (&["--val", "models/mnist5k"], "--val needs --data"),
        (&["--target-macs", "0"], "target"),
    ] {
        let o = compress(
            &[
                &["models/lenet5_opset17.onnx", "-o", path_str(&out)][..],
                flags,
            ]
            .concat(),
        );
        assert_clean_error(&o, &[message]);
    }
    // An input left open has no size to draw synthetic images at.
    let open = common::open_lenet(dir.path());
    let o = compress(&[
        path_str(&open),
        "-o",
        path_str(&out),
        "--target-macs",
        "0.5",
    ]);
    assert_clean_error(&o, &["--input-shape"]);
    assert!(!out.exists());
}

#[test]
fn analyze_reads_unlabeled_images_as_the_models_own_classes() {
    let dir = tempfile::tempdir().unwrap();
    unlabeled_folder(dir.path(), 64);
    let o = compress(&[
        "analyze",
        "models/lenet5_opset17.onnx",
        "--data",
        path_str(dir.path()),
        "--batches",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let effective: Vec<u64> = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["effective"].as_u64().unwrap())
        .collect();
    assert!(effective.iter().all(|&e| e > 1), "{effective:?}");
}

#[test]
fn on_unlabeled_images_the_analysis_takes_gradients_of_the_teachers_labels() {
    // The teacher term's gradient is zero on the unpruned model (it is the teacher), so an
    // analysis made from it would find no effective filter anywhere.
    let (_, r) = compress_unlabeled(
        300,
        &[
            "--strategy",
            "hierarchical",
            "--target-macs",
            "0.8",
            "--epochs",
            "1",
            "--analysis-batches",
            "4",
        ],
    );
    let groups = r["analysis"]["groups"].as_array().unwrap();
    let effective: Vec<u64> = groups
        .iter()
        .map(|g| g["effective"].as_u64().unwrap())
        .collect();
    assert!(effective.iter().all(|&e| e > 1), "{effective:?}");
}
