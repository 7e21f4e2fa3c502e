//! `cargo xtask bench prune`: the quality of `compress` on the shipped fixtures, as a user would
//! measure it. Each run is the release `compress` binary on models/mnist5k with a 10-epoch
//! budget; the figures come from its `--report`, i.e. from tract on the files as written.
//!
//! RLS prune-and-recover runs beside one-shot group-L2 pruning fine-tuned by Adam for the same
//! epochs, at the same MACs targets. Prints a Markdown table for docs/BENCHMARKS.md.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub const MODELS: [(&str, &str); 3] = [
    ("LeNet-5", "lenet5_opset17.onnx"),
    ("VGG-style, BN folded", "vggbn_opset17.onnx"),
    ("ResNet-20", "resnet20_opset17.onnx"),
];
const TARGETS: [&str; 2] = ["0.5", "0.25"];
pub const STRATEGIES: [(&str, &[&str]); 2] = [
    ("rls (default)", &[]),
    (
        "oneshot l2 + Adam",
        &[
            "--strategy",
            "oneshot",
            "--criterion",
            "l2",
            "--optimizer",
            "adam",
        ],
    ),
];

/// Builds the `compress` binary (release, or debug for a smoke test) and returns its path.
pub fn compress_binary(root: &Path, release: bool) -> Result<PathBuf> {
    let mut args = vec!["build", "-p", "pare-cli"];
    if release {
        args.push("--release");
    }
    let status = Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(root)
        .status()
        .context("building compress")?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    Ok(target_dir
        .join(if release { "release" } else { "debug" })
        .join("compress"))
}

/// Runs every model × target × strategy whose model file name contains `filter`.
pub fn quality(filter: Option<&str>) -> Result<()> {
    let root = crate::proto::workspace_root();
    let binary = compress_binary(&root, true)?;
    let out = tempfile::tempdir()?;
    println!("| model | MACs target | strategy | MACs | params | test acc (orig → new) | latency b1 (orig → new, ratio) | prunes | wall s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, file) in MODELS {
        if filter.is_some_and(|f| !file.contains(f)) {
            continue;
        }
        for target in TARGETS {
            for (name, extra) in STRATEGIES {
                let report = out.path().join("report.json");
                let start = Instant::now();
                let o = Command::new(&binary)
                    .arg(Path::new("models").join(file))
                    .args([
                        "--data",
                        "models/mnist5k",
                        "--epochs",
                        "10",
                        "--force",
                        "-q",
                    ])
                    .args(["--target-macs", target])
                    .args(extra)
                    .arg("-o")
                    .arg(out.path().join("small.onnx"))
                    .arg("--report")
                    .arg(&report)
                    .current_dir(&root)
                    .output()?;
                if !o.status.success() {
                    bail!("{file} {name}: {}", String::from_utf8_lossy(&o.stderr));
                }
                let wall = start.elapsed().as_secs_f64();
                let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
                let frac = |k: &str| {
                    r["compressed"][k].as_f64().unwrap_or(0.0)
                        / r["original"][k].as_f64().unwrap_or(1.0)
                };
                let lat = |m: &str| r[m]["latency"]["median_ms"].as_f64().unwrap_or(0.0);
                let prunes = r["history"]
                    .as_array()
                    .map_or(0, |h| h.iter().filter(|e| e["kind"] == "prune").count());
                println!(
                    "| {label} | {target} | {name} | {:.1}% | {:.1}% | {:.1} → {:.1} | {:.3} → {:.3} ms ({:.2}×) | {prunes} | {wall:.0} |",
                    100.0 * frac("macs"),
                    100.0 * frac("params"),
                    r["original"]["test_accuracy"].as_f64().unwrap_or(0.0),
                    r["compressed"]["test_accuracy"].as_f64().unwrap_or(0.0),
                    lat("original"),
                    lat("compressed"),
                    lat("compressed") / lat("original").max(f64::MIN_POSITIVE),
                );
            }
        }
    }
    Ok(())
}
