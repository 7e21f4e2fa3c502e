//! `--strategy es` end to end on LeNet-5 with a tiny search: the front's three models, front.json
//! and front.svg are written, the same seed writes the same front, and front.json's structure is
//! reviewed as an insta snapshot (floats rounded, so another CPU's last bits do not show).

mod common;
use common::{compress, mnist, root};
use serde_json::Value;
use std::path::Path;

/// Runs a tiny search on LeNet-5 writing into `dir`; returns front.json.
fn search(dir: &Path, seed: &str) -> Value {
    let out = dir.join("small.onnx");
    let front = dir.join("front");
    let (model, data) = (root().join("models/lenet5_opset17.onnx"), mnist());
    #[rustfmt::skip]
    let args = [
        model.to_str().unwrap(), "--data", data.to_str().unwrap(), "-o", out.to_str().unwrap(),
        "--strategy", "es", "--population", "5", "--generations", "2", "--eval-batches", "3",
        "--epochs", "1", "--seed", seed, "--latency-runs", "3", "--force", "--quiet",
        "--front-dir", front.to_str().unwrap(),
    ];
    let run = compress(&args);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("front (fine-tuned"), "{stdout}");
    assert!(out.exists());
    for name in ["heavy.onnx", "knee.onnx", "light.onnx"] {
        let model = pare_onnx::read_model(&front.join(name)).unwrap();
        pare_ir::import(&model).unwrap();
    }
    let svg = std::fs::read_to_string(front.join("front.svg")).unwrap();
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(front.join("front.json")).unwrap()).unwrap();
    check_svg(&svg, json["individuals"].as_array().unwrap().len());
    json
}

/// One document, every element closed, a point per individual and a marker per pick.
fn check_svg(svg: &str, individuals: usize) {
    assert!(svg.trim_start().starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<svg").count(), 1);
    let opened = svg.matches('<').count();
    let closed = svg.matches("/>").count() + 2 * svg.matches("</").count();
    assert_eq!(opened, closed, "every element closes");
    // The legend draws one more point per generation.
    assert!(svg.matches("<circle").count() >= individuals, "{svg}");
    // Every pick is named in a label (two picks on one individual share one).
    let labels: String = svg
        .split("<text")
        .skip(1)
        .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0))
        .collect();
    for role in ["heavy", "knee", "light"] {
        assert!(labels.contains(role), "{labels}");
    }
}

/// front.json with every float rounded to 3 decimals and files by name only.
fn rounded(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = (n.as_f64().unwrap() * 1000.0).round() / 1000.0;
            serde_json::json!(x)
        }
        Value::String(s) if s.ends_with(".onnx") => {
            Value::String(Path::new(s).file_name().unwrap().to_string_lossy().into())
        }
        Value::Array(a) => Value::Array(a.iter().map(rounded).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), rounded(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn a_tiny_search_writes_the_front_and_repeats_by_seed() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = search(a.path(), "1");
    let again = search(b.path(), "1");
    assert_eq!(
        first["individuals"], again["individuals"],
        "the same seed, the same search"
    );
    assert_eq!(first["picks"], again["picks"]);
    let individuals = first["individuals"].as_array().unwrap();
    assert_eq!(
        individuals.len(),
        5 + 2,
        "5 offspring, then 2 beside the three parents"
    );
    assert!(individuals.iter().any(|i| i["on_front"] == true));
    insta::assert_json_snapshot!("es_front_lenet5", rounded(&first));
}

#[test]
fn settings_the_search_cannot_use_are_refused_by_name() {
    let out = tempfile::tempdir().unwrap();
    let small = out.path().join("small.onnx");
    let data = mnist();
    let refused = |extra: &[&str], says: &str| {
        let mut args = vec![
            "models/lenet5_opset17.onnx",
            "--data",
            data.to_str().unwrap(),
            "-o",
            small.to_str().unwrap(),
        ];
        args.extend(extra);
        let run = compress(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && stderr.contains(says),
            "{extra:?}: {stderr}"
        );
    };
    let front = out.path().join("front");
    let front = front.to_str().unwrap();
    refused(
        &["--front-dir", front],
        "--front-dir writes the front of --strategy es",
    );
    refused(
        &["--strategy", "es", "--criterion", "l2"],
        "needs no --criterion",
    );
    refused(
        &["--strategy", "es", "--knee-weights", "1"],
        "--knee-weights 1: give two numbers",
    );
    refused(
        &["--strategy", "es", "--knee-weights", "0,0"],
        "knee weights must be",
    );
    refused(
        &["--strategy", "es", "--population", "3"],
        "population must be between 4",
    );
    refused(
        &["--strategy", "es", "--mutation", "0"],
        "mutation rate must be in (0, 1]",
    );
    refused(
        &[
            "--strategy",
            "es",
            "--eval-epochs",
            "1",
            "--eval-batches",
            "2",
        ],
        "cannot be used with",
    );
    assert!(!small.exists());
}
