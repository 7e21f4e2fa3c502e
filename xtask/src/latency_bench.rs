//! `cargo run --release -p xtask -- bench latency-model [model]`: how well pare-latency's
//! additive model predicts the tract latency of whole pruned networks. Per model: measure the
//! latency model, then draw random plans (every prunable group at a width drawn uniformly between
//! its floor and its full width, its last channels dropped), predict each, and time the pruned
//! model in tract at batch 1 in rounds with the unpruned one. The error compares the predicted
//! ratio to the original with the measured one, so load drifts between the measurement and the
//! check cancel; the unpaired error (predicted ms against measured ms) is shown beside it.
//! Prints Markdown tables for docs/BENCHMARKS.md.

use crate::bench::load_graph;
use anyhow::{Context, Result};
use ndarray::Array4;
use pare_kernels::rng::SplitMix64;
use pare_latency::{group_key, widths_after, LadderSettings, LatencyModel, LatencyTable};
use pare_prune::{analyze, ChannelGroups, Cost, PruningPlan};
use pare_verify::{latency_interleaved, TractModel};
use std::path::Path;

const MODELS: [(&str, &str); 4] = [
    ("LeNet-5", "lenet5_opset17.onnx"),
    ("VGG-style, BN folded", "vggbn_opset17.onnx"),
    ("ResNet-20", "resnet20_opset17.onnx"),
    ("MobileNet-style (SE)", "mobile/mobile_se_opset13.onnx"),
];
const PLANS: usize = 20;
const SEED: u64 = 0;
/// Timed runs of each pruned model (and of the unpruned one beside it), at least; fast models
/// get more, as many as the latency model's `min_timed_ms` asks.
const CHECK_RUNS: usize = 31;

/// One random plan: its MACs fraction, the predicted and measured times and ratios.
struct Check {
    macs: f64,
    predicted_ms: f64,
    measured_ms: f64,
    predicted_ratio: f64,
    measured_ratio: f64,
    /// The prediction without the pair terms, as a ratio to T0.
    additive_ratio: f64,
}

impl Check {
    /// Percent error of the predicted ratio to the original against the measured one.
    fn error(&self) -> f64 {
        100.0 * (self.predicted_ratio - self.measured_ratio) / self.measured_ratio
    }

    fn additive_error(&self) -> f64 {
        100.0 * (self.additive_ratio - self.measured_ratio) / self.measured_ratio
    }

    fn unpaired_error(&self) -> f64 {
        100.0 * (self.predicted_ms - self.measured_ms) / self.measured_ms
    }
}

/// Runs the benchmark on every model whose file name contains `filter`.
pub fn latency_model(filter: Option<&str>) -> Result<()> {
    let settings = LadderSettings::default();
    let mut summaries = Vec::new();
    let mut details = Vec::new();
    for (label, file) in MODELS {
        if filter.is_some_and(|f| !file.contains(f)) {
            continue;
        }
        let graph = load_graph(file)?;
        let groups = analyze(&graph);
        let model = LatencyModel::measure(&graph, &groups, &settings).context(file)?;
        let checks = check_plans(&graph, &groups, &model, &settings).context(file)?;
        let errors: Vec<f64> = checks.iter().map(|c| c.error().abs()).collect();
        let unpaired: Vec<f64> = checks.iter().map(|c| c.unpaired_error().abs()).collect();
        let additive: Vec<f64> = checks.iter().map(|c| c.additive_error().abs()).collect();
        let predicted: Vec<f64> = checks.iter().map(|c| c.predicted_ratio).collect();
        let measured: Vec<f64> = checks.iter().map(|c| c.measured_ratio).collect();
        summaries.push(format!(
            "| {label} | {} ({} unmeasured) | {} | {} | {:.1} | {:.3} | {:.1}% | {:.1}% | {:.2} | {:.1}% | {:.1}% |",
            model.table.groups.len() + model.table.unmeasured.len(),
            model.table.unmeasured.len(),
            model.table.pairs.len(),
            model.variants,
            model.seconds,
            model.table.baseline_ms,
            mean(&errors),
            errors.iter().copied().fold(0.0, f64::max),
            spearman(&predicted, &measured),
            mean(&unpaired),
            mean(&additive),
        ));
        details.push((label, model.table.baseline_ms, checks));
    }
    println!("| model | groups | pairs | variants measured | measuring s | T0 ms | mean \\|error\\| | max \\|error\\| | Spearman ρ | mean \\|error\\| unpaired | mean \\|error\\| without pairs |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for line in summaries {
        println!("{line}");
    }
    for (label, t0, checks) in details {
        println!(
            "\n{label}, {PLANS} random plans (T0 {t0:.3} ms, seed {SEED}, clock {:?}):\n",
            settings.clock
        );
        println!("| plan | MACs | predicted ms | measured ms | predicted ratio | measured ratio (paired) | error | error without pairs |");
        println!("|---|---|---|---|---|---|---|---|");
        for (i, c) in checks.iter().enumerate() {
            println!(
                "| {i} | {:.1}% | {:.3} | {:.3} | {:.3} | {:.3} | {:+.1}% | {:+.1}% |",
                100.0 * c.macs,
                c.predicted_ms,
                c.measured_ms,
                c.predicted_ratio,
                c.measured_ratio,
                c.error(),
                c.additive_error()
            );
        }
    }
    Ok(())
}

/// Predicts and measures `PLANS` random plans of `graph`.
fn check_plans(
    graph: &pare_ir::Graph,
    groups: &ChannelGroups,
    model: &LatencyModel,
    settings: &LadderSettings,
) -> Result<Vec<Check>> {
    let shape = &model.input_shape;
    let images = Array4::from_elem((1, shape[1], shape[2], shape[3]), 0.5f32);
    let bytes = pare_onnx::encode(&pare_ir::export(graph));
    let original = TractModel::from_bytes(Path::new("original"), &bytes, shape)?;
    let original_macs = Cost::of(graph).macs as f64;
    let runs = settings.runs_for(model.table.baseline_ms).max(CHECK_RUNS);
    let mut rng = SplitMix64::new(SEED);
    let additive = LatencyTable {
        pairs: Vec::new(),
        ..model.table.clone()
    };
    let mut checks = Vec::with_capacity(PLANS);
    for i in 0..PLANS {
        let plan = random_plan(graph, groups, settings, &mut rng);
        let widths = widths_after(graph, groups, &plan);
        let predicted_ms = model.table.predict(&widths);
        let mut pruned = graph.clone();
        plan.apply(&mut pruned, groups)?;
        let bytes = pare_onnx::encode(&pare_ir::export(&pruned));
        let label = format!("random plan {i}");
        let small = TractModel::from_bytes(Path::new(&label), &bytes, shape)?;
        let pair = [&original, &small];
        let times =
            latency_interleaved(&pair, images.view(), settings.warmup, runs, settings.clock)?;
        let (base, measured) = (times[0], times[1]);
        checks.push(Check {
            macs: Cost::of(&pruned).macs as f64 / original_macs,
            predicted_ms,
            measured_ms: measured.median_ms,
            predicted_ratio: predicted_ms / model.table.baseline_ms,
            measured_ratio: measured.median_ms / base.median_ms,
            additive_ratio: additive.predict(&widths) / model.table.baseline_ms,
        });
    }
    Ok(checks)
}

/// Every prunable group (that has a key) at a width drawn uniformly from its floor to its full
/// width, its last channels dropped.
fn random_plan(
    graph: &pare_ir::Graph,
    groups: &ChannelGroups,
    settings: &LadderSettings,
    rng: &mut SplitMix64,
) -> PruningPlan {
    let mut plan = PruningPlan::default();
    for g in groups.groups.iter().filter(|g| g.prunable()) {
        if group_key(graph, groups, g.id).is_none() {
            continue;
        }
        let floor = settings.floor(g.channels);
        let width = floor + rng.below((g.channels - floor + 1) as u64) as usize;
        plan.drop_channels(g.id, width..g.channels);
    }
    plan
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Spearman's rank correlation (ties share their mean rank).
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let (ma, mb) = (mean(&ra), mean(&rb));
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let var = |r: &[f64], m: f64| r.iter().map(|x| (x - m).powi(2)).sum::<f64>();
    cov / (var(&ra, ma) * var(&rb, mb)).sqrt().max(f64::MIN_POSITIVE)
}

fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let rank = (start + end - 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}
