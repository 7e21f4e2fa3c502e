//! `cargo xtask bench hierarchical-target`: the hierarchical strategy against one-shot L2 at one
//! MACs target over many seeds, as a user runs them (the `compress` binary, 10 epochs each).
//! Differences between the two are a few tenths of a point, about the spread of seeds on 1,000
//! test images, so the table pairs the runs by seed (the same batches and validation split) and
//! gives the mean paired difference with its standard error. Prints Markdown for
//! docs/BENCHMARKS.md.

use crate::prune_bench::{compress_report, release_compress, spread, MODELS};
use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Settings {
    /// Keep only the models whose file name contains this (lenet5, vggbn, resnet20).
    model: Option<String>,
    /// Seeds 1..=N of each strategy.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// The MACs target of every run.
    #[arg(long, default_value = "0.5")]
    target_macs: String,
    /// The training budget of every run.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Flags added to the hierarchical runs (e.g. `--hierarchical=--epsilon=0.05`).
    #[arg(long, allow_hyphen_values = true, num_args = 1)]
    hierarchical: Vec<String>,
}

/// Test accuracy (%) and MACs kept (%) of one run.
fn run(binary: &std::path::Path, file: &str, s: &Settings, flags: &[&str]) -> Result<(f64, f64)> {
    let (r, _) = compress_report(binary, file, s.epochs, Some(&s.target_macs), flags)?;
    let figure = |model: &str, key: &str| {
        r[model][key]
            .as_f64()
            .with_context(|| format!("the report of {file} has no {model}.{key}"))
    };
    Ok((
        figure("compressed", "test_accuracy")?,
        100.0 * figure("compressed", "macs")? / figure("original", "macs")?,
    ))
}

pub fn compare(settings: &Settings) -> Result<()> {
    let binary = release_compress()?;
    let hierarchical: Vec<&str> = ["--strategy", "hierarchical"]
        .into_iter()
        .chain(settings.hierarchical.iter().map(String::as_str))
        .collect();
    let oneshot = ["--strategy", "oneshot", "--criterion", "l2"];
    println!(
        "| model | hierarchical {} | oneshot-l2 | hierarchical − oneshot-l2 (± s.e.) | seeds not below | MACs kept (h / o) |",
        settings.hierarchical.join(" ")
    );
    println!("|---|---|---|---|---|---|");
    for (label, file) in MODELS {
        if settings.model.as_deref().is_some_and(|f| !file.contains(f)) {
            continue;
        }
        let (mut h, mut o, mut h_macs, mut o_macs) = (vec![], vec![], vec![], vec![]);
        for seed in 1..=settings.seeds {
            let seed = seed.to_string();
            let seeded = ["--seed", seed.as_str()];
            let (h_acc, macs) = run(
                &binary,
                file,
                settings,
                &[&hierarchical[..], &seeded].concat(),
            )?;
            h.push(h_acc);
            h_macs.push(macs);
            let (o_acc, macs) = run(&binary, file, settings, &[&oneshot[..], &seeded].concat())?;
            o.push(o_acc);
            o_macs.push(macs);
            eprintln!("{label} seed {seed}: hierarchical {h_acc:.1}, oneshot-l2 {o_acc:.1}");
        }
        let diffs: Vec<f64> = h.iter().zip(&o).map(|(h, o)| h - o).collect();
        let (mean, error) = mean_and_standard_error(&diffs);
        println!(
            "| {label} | {} | {} | {mean:+.2} ± {error:.2} | {} of {} | {} / {} |",
            spread(&h),
            spread(&o),
            diffs.iter().filter(|&&d| d >= 0.0).count(),
            diffs.len(),
            spread(&h_macs),
            spread(&o_macs),
        );
    }
    Ok(())
}

/// The mean of `values` and its standard error (0 for fewer than two values).
fn mean_and_standard_error(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (variance / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_error_of_a_known_sample() {
        // Sample variance of 1, 2, 3, 4 is 5/3; the error of the mean is sqrt(5/3 / 4).
        let (mean, error) = mean_and_standard_error(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(mean, 2.5);
        assert!((error - (5.0f64 / 12.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_and_standard_error(&[7.0]), (7.0, 0.0));
    }
}
