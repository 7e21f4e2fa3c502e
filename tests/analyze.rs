//! `compress analyze` end to end: the effective-filter table on LeNet-5, its JSON, and bad
//! settings refused by name.

mod common;
use common::compress;
use std::process::Output;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn analyze_prints_each_groups_cap_and_the_models_limit() {
    let o = compress(&[
        "analyze",
        "models/lenet5_opset17.onnx",
        "--data",
        "models/mnist5k",
        "--batches",
        "8",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    insta::assert_snapshot!("analyze_lenet5", stdout(&o));
}

#[test]
fn analyze_json_agrees_with_itself_and_both_grams_run() {
    for gram in ["gradients", "activations"] {
        let o = compress(&[
            "analyze",
            "models/lenet5_opset17.onnx",
            "--data",
            "models/mnist5k",
            "--batches",
            "4",
            "--gram",
            gram,
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["settings"]["gram"], gram);
        assert_eq!(r["settings"]["batches"], 4);
        let macs = |k: &str| r[k]["macs"].as_f64().unwrap();
        let r_max = r["r_max_macs"].as_f64().unwrap();
        assert!((r_max - (1.0 - macs("at_caps") / macs("original"))).abs() < 1e-12);
        let groups = r["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 4, "LeNet-5's four prunable groups");
        for g in groups {
            let (n, r_g) = (
                g["channels"].as_u64().unwrap(),
                g["effective"].as_u64().unwrap(),
            );
            assert!((1..=n).contains(&r_g), "{g}");
        }
    }
}

#[test]
fn analyze_refuses_bad_settings_by_name() {
    for (flag, value) in [
        ("--epsilon", "1.5"),
        ("--batches", "0"),
        ("--min-keep", "1"),
    ] {
        let o = compress(&[
            "analyze",
            "models/lenet5_opset17.onnx",
            "--data",
            "models/mnist5k",
            flag,
            value,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{flag}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        let name = flag.trim_start_matches('-');
        assert!(
            err.contains(flag) || err.contains(name) || err.contains("epsilon"),
            "{err}"
        );
    }
}
