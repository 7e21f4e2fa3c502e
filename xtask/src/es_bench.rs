//! `cargo xtask bench es`: does the evolution strategy find better channel sets than a saliency?
//! Each model is searched with `compress --strategy es --target-macs 0.5 --front-dir`; then, at
//! the MACs of each of the front's three models, RLS prune-and-recover and one-shot group L2 +
//! Adam run with the search's whole training budget (every candidate's short fine-tune and the
//! final fine-tunes, in epochs). All accuracies are tract's, on the written files. Prints Markdown
//! tables for docs/BENCHMARKS.md; front.svg stays in the output folder for the page.

use crate::prune_bench::{compress_to, release_compress, STRATEGIES};
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

const MODELS: [(&str, &str); 2] = [
    ("LeNet-5", "lenet5_opset17.onnx"),
    ("VGG-style, BN folded", "vggbn_opset17.onnx"),
];

/// What to run: the defaults of `compress` unless given.
#[derive(clap::Args)]
pub struct Settings {
    /// Keep only the models whose file name contains this (lenet5, vggbn).
    model: Option<String>,
    /// Use this `compress` instead of building the release one (e.g. a debug build for a smoke
    /// run; its figures mean nothing).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Where the front folders go (default: a temporary folder, removed at the end).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    population: Option<usize>,
    #[arg(long)]
    generations: Option<usize>,
    #[arg(long)]
    eval_batches: Option<usize>,
    /// The final fine-tune of each front model.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
}

/// A number of a report, 0 when absent.
fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Runs the search and its comparisons on every selected model.
pub fn compare(settings: &Settings) -> Result<()> {
    let binary = match &settings.binary {
        Some(b) => b.clone(),
        None => release_compress()?,
    };
    let temporary = tempfile::tempdir()?;
    let out = settings.out.as_deref().unwrap_or(temporary.path());
    let mut accuracy_rows = Vec::new();
    let mut cost_rows = Vec::new();
    for (label, file) in MODELS {
        if settings.model.as_deref().is_some_and(|f| !file.contains(f)) {
            continue;
        }
        let dir = out.join(file.trim_end_matches(".onnx"));
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let (es, es_wall) = search(&binary, file, settings, &dir)?;
        let budget = training_epochs(&es, &dir, settings.epochs)?;
        let original = &es["original"];
        let picks = es["front"]
            .as_array()
            .context("the report lists no front")?;
        let mut baseline_wall = 0.0;
        for pick in picks {
            let fraction = num(&pick["macs"]) / num(&original["macs"]).max(1.0);
            let mut row = vec![
                label.to_string(),
                pick["role"].as_str().unwrap_or("?").to_string(),
                format!("{:.1}%", 100.0 * fraction),
                format!(
                    "{:.1}%",
                    100.0 * num(&pick["params"]) / num(&original["params"]).max(1.0)
                ),
                format!("{:.1}", num(&pick["test_accuracy"])),
            ];
            // A hair above the pick's MACs, so rounding in the text cannot put it out of reach.
            let target = format!("{:.6}", fraction + 1e-6);
            for (_, extra) in STRATEGIES {
                let epochs = budget.to_string();
                let args = [&["--epochs", &epochs, "--target-macs", &target], extra].concat();
                let (r, wall) = compress_into(&binary, file, &args, &dir)?;
                baseline_wall += wall;
                let macs = num(&r["compressed"]["macs"]) / num(&r["original"]["macs"]).max(1.0);
                row.push(format!(
                    "{:.1} ({:.1}%)",
                    num(&r["compressed"]["test_accuracy"]),
                    100.0 * macs
                ));
            }
            accuracy_rows.push(row);
        }
        cost_rows.push(format!(
            "| {label} | {:.1} | {} | {budget} | {es_wall:.0} | {baseline_wall:.0} |",
            num(&original["test_accuracy"]),
            count_candidates(&dir)?,
        ));
    }
    let baselines: String = STRATEGIES
        .iter()
        .map(|(name, _)| format!(" {name}: test acc (MACs) |"))
        .collect();
    println!("| model | front model | MACs | params | es test acc |{baselines}");
    println!("|---|---|---|---|---|{}", "---|".repeat(STRATEGIES.len()));
    for row in accuracy_rows {
        println!("| {} |", row.join(" | "));
    }
    println!();
    println!("| model | original test acc | candidates scored | training budget (epochs) | es wall s | rls + oneshot wall s (all three MACs) |");
    println!("|---|---|---|---|---|---|");
    for row in cost_rows {
        println!("{row}");
    }
    if settings.out.is_some() {
        println!(
            "\nfront.svg and front.json are in {}/<model>/front/",
            out.display()
        );
    }
    Ok(())
}

/// The search itself, writing its front into `dir`/front; its report and wall time.
fn search(binary: &Path, file: &str, settings: &Settings, dir: &Path) -> Result<(Value, f64)> {
    let front = dir.join("front");
    let epochs = settings.epochs.to_string();
    let mut args: Vec<String> = [
        "--strategy",
        "es",
        "--target-macs",
        "0.5",
        "--epochs",
        &epochs,
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--front-dir".into(), front.display().to_string()]);
    for (flag, value) in [
        ("--population", settings.population),
        ("--generations", settings.generations),
        ("--eval-batches", settings.eval_batches),
    ] {
        if let Some(v) = value {
            args.extend([flag.to_string(), v.to_string()]);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    compress_into(binary, file, &args, dir)
}

/// Candidates the search scored (repeats reuse a score and cost nothing).
fn count_candidates(dir: &Path) -> Result<usize> {
    let front: Value = serde_json::from_slice(&std::fs::read(dir.join("front/front.json"))?)?;
    let individuals = front["individuals"]
        .as_array()
        .context("front.json lists no individuals")?;
    Ok(individuals.iter().filter(|i| i["repeat"] != true).count())
}

/// The search's whole training in epochs, rounded up: every scored candidate's short fine-tune
/// and the final fine-tunes of the distinct front models.
fn training_epochs(report: &Value, dir: &Path, epochs: usize) -> Result<usize> {
    // The run's last history entry is at the end of the output model's fine-tune.
    let last = report["history"]
        .as_array()
        .and_then(|h| h.last())
        .context("the report has no history")?;
    let steps_per_epoch = (num(&last["step"]) / epochs as f64).max(1.0);
    let batches = match &report["config"]["es"]["evaluation"] {
        v if v.get("batches").is_some() => num(&v["batches"]),
        v => num(&v["epochs"]) * steps_per_epoch,
    };
    let front: Value = serde_json::from_slice(&std::fs::read(dir.join("front/front.json"))?)?;
    let mut finals: Vec<u64> = front["picks"]
        .as_array()
        .context("front.json lists no picks")?
        .iter()
        .map(|p| p["individual"].as_u64().unwrap_or(0))
        .chain(front["output"].as_u64())
        .collect();
    finals.sort_unstable();
    finals.dedup();
    let search = count_candidates(dir)? as f64 * batches / steps_per_epoch;
    Ok((search + (finals.len() * epochs) as f64).ceil() as usize)
}

/// Runs `binary` (a `compress`) on models/`file` with models/mnist5k and `args`, writing the
/// model into the folder `out`; returns its `--report` and the wall time in seconds.
fn compress_into(
    binary: &Path,
    file: &str,
    args: &[&str],
    out: &Path,
) -> Result<(serde_json::Value, f64)> {
    let model = format!("models/{file}");
    let mut all = vec![model.as_str(), "--data", "models/mnist5k"];
    all.extend_from_slice(args);
    compress_to(binary, &all, &out.join("small.onnx"))
}
