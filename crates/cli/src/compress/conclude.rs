//! The end of every `compress` run, with data or without: tract measures both models (quality on
//! the test images, latency), the gate decides whether the output is written, the front of
//! `--strategy es` is verified, and the table and `--report` are written.

use super::report::{figures, layer_report, render, NoData, Report};
use super::supervision::Supervision;
use super::Args;
use crate::front;
use crate::latency_args::LatencySetup;
use crate::sparsity::Zeros;
use anyhow::{bail, Result};
use pare_data::{Dataset, Preprocess};
use pare_ir::Graph;
use pare_prune::{CompressConfig, LayerWidth, Outcome, Target};
use pare_verify::{NodeTime, Source, Subject};
use std::path::Path;

/// What a run hands over to be verified and reported.
pub(super) struct Finished<'a> {
    pub model_path: &'a Path,
    pub output: &'a Path,
    /// Where the test images came from, for messages: the dataset, or the model (synthetic).
    pub data: &'a Path,
    pub config: CompressConfig,
    pub preprocess: Option<Preprocess>,
    pub before: &'a Graph,
    pub graph: &'a Graph,
    pub original: &'a Subject<'a>,
    pub test: &'a Dataset,
    pub test_shape: &'a [usize],
    pub supervision: Supervision,
    pub validation: String,
    pub validation_held_out: bool,
    pub outcome: Outcome,
    /// The latency model a latency target (or the search's objective) was predicted with.
    pub latency: Option<LatencySetup>,
    pub no_data: Option<NoData>,
}

/// Verifies the compressed model against the original in tract, writes it if the gate passes
/// (or --force), prints the table and writes --report; fails when the gate refused the model.
pub(super) fn conclude(args: &Args, run: Finished) -> Result<()> {
    let bytes = pare_onnx::encode(&pare_ir::export(run.graph));
    let compressed = Subject::load(
        Source::Bytes {
            path: run.output,
            bytes: &bytes,
        },
        run.test_shape,
    )?;
    let comparison = pare_verify::compare(run.original, &compressed, run.data, run.test)?;
    let timings =
        pare_verify::compare_latency(run.original, &compressed, run.test, 10, args.latency_runs)?;
    let (lat_before, lat_after) = (timings.before, timings.after);
    let (layers_before, layers_after) = (
        pare_prune::layer_widths(run.before),
        pare_prune::layer_widths(run.graph),
    );
    let layer_ms = |nodes: &[NodeTime], layers: &[LayerWidth]| {
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        pare_verify::layer_times(nodes, &names)
    };
    let (ms_before, ms_after) = (
        layer_ms(&timings.nodes_before, &layers_before),
        layer_ms(&timings.nodes_after, &layers_after),
    );
    let max_drop = args.max_drop.or(run.supervision.default_max_drop());
    let write = max_drop.is_none_or(|m| comparison.within(m)) || args.force;
    if write {
        pare_onnx::write_atomic(run.output, &bytes)?;
    }
    let mut outcome = run.outcome;
    // A latency target is met when tract measures it so, whatever the model predicted.
    let latency_target = match (run.config.target, run.latency) {
        (Some(Target::Latency(aimed)), Some(setup)) => args.latency.outcome(
            setup,
            aimed,
            run.graph,
            lat_before.median_ms,
            lat_after.median_ms,
        ),
        _ => None,
    };
    if let Some(target) = &latency_target {
        outcome.target_met = Some(target.met);
    }
    let picks = match &outcome.front {
        Some(found) => {
            let dir = args.es.front_dir.as_deref();
            let picks = front::verify(
                found,
                comparison.before,
                run.test_shape,
                run.data,
                run.test,
                dir,
                max_drop.unwrap_or_default(),
                args.force,
            )?;
            if let Some(dir) = dir {
                front::write(dir, found, &picks)?;
            }
            Some(picks)
        }
        None => None,
    };
    let original_bytes = std::fs::metadata(run.model_path)
        .map(|m| m.len())
        .unwrap_or(0);
    let report = Report {
        model: run.model_path.into(),
        output: run.output.into(),
        written: write,
        config: run.config,
        preprocess: run.preprocess,
        validation: run.validation,
        validation_held_out: run.validation_held_out,
        supervision: run.supervision,
        test_images: run.test.len(),
        original: figures(
            outcome.original,
            original_bytes,
            Zeros::of(run.before, &pare_onnx::encode(&pare_ir::export(run.before))),
            comparison.before,
            lat_before,
        ),
        compressed: figures(
            outcome.compressed,
            bytes.len() as u64,
            Zeros::of(run.graph, &bytes),
            comparison.after,
            lat_after,
        ),
        target_met: outcome.target_met,
        target_clamped: outcome.target_clamped,
        latency_target,
        analysis: outcome.analysis,
        refit: outcome.refit,
        front: picks,
        layers: layer_report(&layers_before, &layers_after, &ms_before, &ms_after),
        sparsity: pare_prune::layer_sparsity(run.graph),
        history: outcome.history,
        no_data: run.no_data,
    };
    if let Some(path) = &args.report {
        pare_onnx::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    print!("{}", render(&report));
    if !write {
        bail!(
            "{} fell by {:.1} points (more than --max-drop {}); {} was not written (use --force to write it anyway)",
            run.supervision.measure(),
            comparison.accuracy_drop(),
            max_drop.unwrap_or_default(),
            run.output.display()
        );
    }
    Ok(())
}
