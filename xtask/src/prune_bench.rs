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
/// The strategies `bench prune` compares (and `bench es` compares the search with).
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

/// Builds the release `compress` binary and returns its path.
pub fn release_compress() -> Result<PathBuf> {
    compress_binary(&crate::proto::workspace_root(), true)
}

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

/// Runs `binary` (a `compress`) from the workspace root with `args`, quietly; returns its stdout.
pub fn run_compress(binary: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let o = Command::new(binary)
        .args(args)
        .arg("-q")
        .current_dir(crate::proto::workspace_root())
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !o.status.success() {
        bail!(
            "compress {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(o.stdout)
}

/// Runs `binary` with `args`, `--force`, the model written to `out` and its `--report` beside it
/// (`out` with a .json extension); returns the report and the wall time in seconds.
pub fn compress_to(binary: &Path, args: &[&str], out: &Path) -> Result<(serde_json::Value, f64)> {
    let report = out.with_extension("json");
    let utf8 = |p: &Path| p.to_str().context("a UTF-8 output path").map(String::from);
    let (out, report_arg) = (utf8(out)?, utf8(&report)?);
    let mut all = args.to_vec();
    all.extend(["--force", "-o", &out, "--report", &report_arg]);
    let start = Instant::now();
    run_compress(binary, &all)?;
    let wall = start.elapsed().as_secs_f64();
    Ok((serde_json::from_slice(&std::fs::read(&report)?)?, wall))
}

/// Compresses models/`file` on models/mnist5k for `epochs` to `target` (a MACs fraction, if
/// any) with `extra` flags; returns the `--report` and the wall time in seconds.
pub fn compress_report(
    binary: &Path,
    file: &str,
    epochs: usize,
    target: Option<&str>,
    extra: &[&str],
) -> Result<(serde_json::Value, f64)> {
    let out = tempfile::tempdir()?;
    let (model, epochs) = (format!("models/{file}"), epochs.to_string());
    let mut args = vec![
        model.as_str(),
        "--data",
        "models/mnist5k",
        "--epochs",
        &epochs,
    ];
    if let Some(target) = target {
        args.extend(["--target-macs", target]);
    }
    args.extend_from_slice(extra);
    compress_to(binary, &args, &out.path().join("small.onnx"))
}

/// The mean of `values` in percent, with their range when there are several.
pub fn spread(values: &[f64]) -> String {
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    match values {
        [_, _, ..] => {
            let (lo, hi) = values
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            format!("{mean:.2}% ({lo:.1}–{hi:.1})")
        }
        _ => format!("{mean:.1}%"),
    }
}

/// Runs every model × target × strategy whose model file name contains `filter`.
pub fn quality(filter: Option<&str>) -> Result<()> {
    let binary = release_compress()?;
    println!("| model | MACs target | strategy | MACs | params | test acc (orig → new) | latency b1 (orig → new, ratio) | prunes | wall s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, file) in MODELS {
        if filter.is_some_and(|f| !file.contains(f)) {
            continue;
        }
        for target in TARGETS {
            for (name, extra) in STRATEGIES {
                let (r, wall) = compress_report(&binary, file, 10, Some(target), extra)
                    .with_context(|| format!("{file} {name}"))?;
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
