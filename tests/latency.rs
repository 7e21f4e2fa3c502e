//! `compress --target-latency`: a latency model measured in tract drives the prune, and the
//! target is met only when tract measures the compressed model within it. Latency is noisy on
//! a shared machine, so a run that lands just over its target, or whose noisy table let the
//! prune miss its predicted aim, is retried with a slightly harder one, a bounded number of
//! times; nothing asserts on a wall time.

mod common;

use common::{assert_clean_error, compress, mnist, path_str};
use std::path::Path;

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `compress` one-shot on LeNet-5 for one epoch with `flags`, writing to `dir`; returns the
/// process output.
fn run_lenet(dir: &Path, flags: &[&str]) -> std::process::Output {
    run_lenet_with(dir, "oneshot", flags)
}

/// `compress --strategy strategy` on LeNet-5 for one epoch with `flags`, writing to `dir`.
fn run_lenet_with(dir: &Path, strategy: &str, flags: &[&str]) -> std::process::Output {
    let (out, json, data) = (dir.join("small.onnx"), dir.join("r.json"), mnist());
    let base = [
        "models/lenet5_opset17.onnx",
        "--data",
        path_str(&data),
        "-o",
        path_str(&out),
        "--strategy",
        strategy,
        "--epochs",
        "1",
        "--max-drop",
        "100",
        "--report",
        path_str(&json),
    ];
    compress(&[&base[..], flags].concat())
}

#[test]
fn a_latency_target_on_lenet_ends_at_or_under_it_as_measured() {
    let dir = tempfile::tempdir().unwrap();
    let mut attempts = Vec::new();
    // At most three tries, each 0.05 harder: enough for noise, not for a wrong model.
    for goal in [0.7, 0.65, 0.6] {
        let o = run_lenet(dir.path(), &["--target-latency", &goal.to_string()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains("efficiency (MACs/latency)"), "{stdout}");
        assert!(
            stdout.contains("latency target 70%") || goal != 0.7,
            "{stdout}"
        );
        let r = report(&dir.path().join("r.json"));
        let t = &r["latency_target"];
        let (predicted, measured) = (
            t["predicted_fraction"].as_f64().unwrap(),
            t["measured_fraction"].as_f64().unwrap(),
        );
        assert_eq!(t["probes"].as_array().map(Vec::len), Some(2), "{t}");
        assert!(r["compressed"]["macs"].as_u64() < r["original"]["macs"].as_u64());
        // The report's verdict is tract's measurement, not the prediction.
        assert_eq!(t["met"].as_bool(), Some(measured <= goal), "{t}");
        assert_eq!(r["target_met"], t["met"]);
        assert!(!t["model"]["groups"].as_array().unwrap().is_empty());
        // A try counts when the prune met the fraction it aimed at, as the model predicts it
        // (probes of the one-shot plan in tract moved the aim from the goal), and tract then
        // measured the goal met. Both rest on timings: a table measured under load can predict
        // the floors slower than a wider plan, so no plan meets the aim; that try is retried.
        let aimed = t["aimed_fraction"].as_f64().unwrap();
        attempts.push((goal, aimed, predicted, measured));
        if predicted <= aimed + 1e-9 && t["met"].as_bool() == Some(true) {
            return;
        }
    }
    panic!("no try both reached its predicted aim and measured within the target (goal, aimed, predicted, measured): {attempts:?}");
}

#[test]
fn a_latency_model_in_an_earlier_report_is_reused_for_the_same_model_only() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_lenet(dir.path(), &["--target-latency", "0.8"]);
    assert!(first.status.success());
    assert!(String::from_utf8_lossy(&first.stderr).contains("measuring the latency model"));
    let saved = dir.path().join("saved.json");
    std::fs::copy(dir.path().join("r.json"), &saved).unwrap();

    let reusing = |model: &Path| {
        run_lenet(
            dir.path(),
            &[
                "--target-latency",
                "0.8",
                "--latency-model",
                path_str(model),
            ],
        )
    };
    let again = reusing(&saved);
    assert!(again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!stderr.contains("measuring the latency model"), "{stderr}");
    let (a, b) = (report(&saved), report(&dir.path().join("r.json")));
    assert_eq!(a["latency_target"]["model"], b["latency_target"]["model"]);

    // A model measured on another file is not used.
    let mut other = a.clone();
    other["latency_target"]["model"]["cache_key"] = "0000000000000000-1".into();
    let other_path = dir.path().join("other.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    let o = reusing(&other_path);
    assert!(o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("measured on another model; measuring again"),
        "{stderr}"
    );
}

#[test]
fn a_target_in_milliseconds_the_original_meets_prunes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_lenet(dir.path(), &["--target-latency-ms", "10000"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already runs in"));
    let r = report(&dir.path().join("r.json"));
    assert_eq!(r["compressed"]["macs"], r["original"]["macs"]);
    assert_eq!(r["latency_target"]["ms"].as_f64(), Some(10000.0));
    assert_eq!(r["latency_target"]["met"].as_bool(), Some(true));
}

#[test]
fn bad_latency_flags_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, names) in [
        (&["--target-latency", "1.5"][..], &["--target-latency"][..]),
        (&["--target-latency", "0"], &["--target-latency"]),
        (&["--target-latency-ms=-3"], &["--target-latency-ms"]),
    ] {
        let o = run_lenet(dir.path(), flags);
        assert_clean_error(&o, names);
    }
    // Relief takes no target: refused before the latency model is measured.
    let o = run_lenet_with(dir.path(), "relief", &["--target-latency", "0.5"]);
    assert_clean_error(&o, &["--strategy relief", "--target-latency"]);
    // Two targets: a usage error from the argument parser.
    let o = run_lenet(
        dir.path(),
        &["--target-latency", "0.5", "--target-macs", "0.5"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("'--target-latency <TARGET_LATENCY>' cannot be used with '--target-macs"));
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    let missing = dir.path().join("missing.json");
    let no_model = dir.path().join("no_model.json");
    std::fs::write(&no_model, "{\"latency_target\": 3}").unwrap();
    for path in [&garbage, &missing, &no_model] {
        let o = run_lenet(
            dir.path(),
            &["--target-latency", "0.8", "--latency-model", path_str(path)],
        );
        assert_clean_error(&o, &[path_str(path)]);
    }
    assert!(!dir.path().join("small.onnx").exists());
}
