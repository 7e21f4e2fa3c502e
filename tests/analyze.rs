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

/// Runs `compress` on LeNet-5 for one epoch with `extra` flags and returns its JSON report.
fn compress_lenet5(extra: &[&str]) -> (Output, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("small.onnx"), dir.path().join("r.json"));
    let mut args = vec![
        "models/lenet5_opset17.onnx",
        "--data",
        "models/mnist5k",
        "-o",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--epochs",
        "1",
        "--analysis-batches",
        "4",
        "--latency-runs",
        "2",
        "--force",
    ];
    args.extend_from_slice(extra);
    let o = compress(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (o, r)
}

/// Per analysed group, its r_g and the width the compressed layer that writes it has.
fn kept_against_caps(r: &serde_json::Value) -> Vec<(u64, u64)> {
    let layers = r["layers"].as_array().unwrap();
    r["analysis"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let name = g["name"].as_str().unwrap();
            let layer = layers
                .iter()
                .find(|l| name.contains(&format!("'{}'", l["name"].as_str().unwrap())))
                .unwrap_or_else(|| panic!("a layer writes {name}"));
            (
                g["effective"].as_u64().unwrap(),
                layer["outputs_after"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn hierarchical_clamps_a_target_beyond_the_caps_and_says_so() {
    let (o, r) = compress_lenet5(&["--strategy", "hierarchical", "--target-macs", "0.2"]);
    let text = stdout(&o);
    assert!(text.contains("pruned to the caps instead"), "{text}");
    assert!(text.contains("R_max:"), "{text}");
    assert_eq!(r["target_clamped"], true);
    assert_eq!(r["target_met"], false);
    assert_eq!(r["config"]["strategy"], "hierarchical");
    assert_eq!(r["analysis"]["settings"]["epsilon"], 2e-2);
    // Every group at exactly its cap; the MACs those widths give are the analysis's own.
    for (effective, kept) in kept_against_caps(&r) {
        assert_eq!(effective, kept, "{}", r["analysis"]);
    }
    assert_eq!(r["compressed"]["macs"], r["analysis"]["at_caps"]["macs"]);
}

/// Validation loss right after the prune, before any fine-tuning.
fn loss_after_prune(r: &serde_json::Value) -> f64 {
    let history = r["history"].as_array().unwrap();
    let prune = history.iter().find(|e| e["kind"] == "prune").unwrap();
    prune["validation_loss"].as_f64().unwrap()
}

#[test]
fn hierarchical_refits_the_layers_that_read_removed_channels() {
    let target = ["--strategy", "hierarchical", "--target-macs", "0.6"];
    let (o, refit) = compress_lenet5(&[&target[..], &["--refit"]].concat());
    assert!(stdout(&o).contains("refit: "), "{}", stdout(&o));
    let layers = refit["refit"]["layers"].as_u64().unwrap();
    let explained = refit["refit"]["explained"].as_f64().unwrap();
    assert!(layers >= 2, "{}", refit["refit"]);
    assert!((0.0..=1.0).contains(&explained), "{}", refit["refit"]);
    let (_, plain) = compress_lenet5(&target);
    assert!(plain.get("refit").is_none());
    // The same channels go either way; folding them into the kept ones loses less.
    for figure in ["macs", "params"] {
        assert_eq!(refit["compressed"][figure], plain["compressed"][figure]);
    }
    let (with, without) = (loss_after_prune(&refit), loss_after_prune(&plain));
    assert!(with < without, "refit {with} against {without}");
}

#[test]
fn oneshot_with_analysis_caps_keeps_every_group_at_or_above_its_rank() {
    let (_, r) = compress_lenet5(&[
        "--strategy",
        "oneshot",
        "--target-macs",
        "0.3",
        "--caps",
        "analysis",
    ]);
    assert_eq!(r["target_clamped"], false, "only hierarchical clamps");
    for (effective, kept) in kept_against_caps(&r) {
        assert!(kept >= effective, "{}", r["analysis"]);
    }
}
