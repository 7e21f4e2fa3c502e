//! `compress inspect`: what a model is made of, layer by layer.

use crate::{model, table};
use anyhow::Result;
use pare_ir::{node_costs, Graph};
use serde::Serialize;
use std::path::PathBuf;

/// Print a per-layer table of a model (name, op, output shape, parameters, MACs) and its channel
/// groups (width, members, whether each can be pruned and why not).
///
/// MACs count the multiply-accumulates of Conv, Gemm and MatMul for one sample (batch 1).
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to inspect.
    model: PathBuf,
    /// Print JSON instead of a table, for pipelines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    shape: model::InputShapeArg,
}

#[derive(Serialize)]
struct Layer {
    name: String,
    op: String,
    output_shape: Option<String>,
    params: usize,
    /// Of a weight layer's weight and bias, the entries that are not exactly zero.
    nonzero: Option<u64>,
    macs: u64,
}

#[derive(Serialize)]
struct GroupReport {
    id: u32,
    channels: usize,
    prunable: bool,
    frozen_because: Vec<String>,
    members: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    model: PathBuf,
    opset: i64,
    producer: Option<String>,
    layers: Vec<Layer>,
    total_params: usize,
    total_macs: u64,
    groups: Vec<GroupReport>,
}

/// Groups that some weight reads or writes (the image input's is left out), in graph order.
fn groups(graph: &Graph) -> Vec<GroupReport> {
    let analysis = pare_prune::analyze(graph);
    analysis
        .groups
        .iter()
        .filter(|g| !g.slices.is_empty())
        .map(|g| GroupReport {
            id: g.id.0,
            channels: g.channels,
            prunable: g.prunable(),
            frozen_because: g.frozen.clone(),
            members: g
                .slices
                .iter()
                .map(|&i| analysis.slices[i].role.clone())
                .collect(),
        })
        .collect()
}

fn report(path: PathBuf, graph: &Graph) -> Report {
    let sparsity = pare_prune::layer_sparsity(graph);
    let layers: Vec<Layer> = graph
        .node_ids()
        .zip(node_costs(graph))
        .map(|(id, cost)| (graph.node(id), id, cost))
        .map(|(node, id, cost)| Layer {
            name: node.name.clone(),
            op: node.op.op_type().to_string(),
            output_shape: node
                .outputs
                .first()
                .and_then(|&o| graph.value(o).shape.as_ref())
                .map(|s| s.to_string()),
            params: cost.params,
            nonzero: sparsity.iter().find(|s| s.node == id).map(|s| s.nonzero),
            macs: cost.macs,
        })
        .collect();
    Report {
        model: path,
        opset: graph.meta.opset(),
        producer: graph.meta.producer_name.clone(),
        total_params: layers.iter().map(|l| l.params).sum(),
        total_macs: layers.iter().map(|l| l.macs).sum(),
        layers,
        groups: groups(graph),
    }
}

pub fn run(args: Args) -> Result<()> {
    let graph = model::load(&args.model, &args.shape, &mut Default::default())?;
    let report = report(args.model, &graph);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    // The nonzero share only when masks (or anything else) left exact zeros in a weight layer.
    let zeros = report
        .layers
        .iter()
        .any(|l| l.nonzero.is_some_and(|n| n < l.params as u64));
    let mut rows: Vec<Vec<String>> = report
        .layers
        .iter()
        .map(|l| {
            let mut row = vec![
                l.name.clone(),
                l.op.clone(),
                l.output_shape.clone().unwrap_or_else(|| "?".into()),
                table::thousands(l.params as u64),
                table::thousands(l.macs),
            ];
            let share = |n: u64| format!("{:.1}%", 100.0 * n as f64 / l.params.max(1) as f64);
            row.extend(zeros.then(|| l.nonzero.map(share).unwrap_or_default()));
            row
        })
        .collect();
    let mut total = vec![
        "total".into(),
        String::new(),
        String::new(),
        table::thousands(report.total_params as u64),
        table::thousands(report.total_macs),
    ];
    total.extend(zeros.then(String::new));
    rows.push(total);
    let mut header = vec!["name", "op", "output shape", "params", "MACs"];
    header.extend(zeros.then_some("nonzero"));
    println!(
        "{} (opset {}, {} nodes)\n",
        report.model.display(),
        report.opset,
        report.layers.len()
    );
    print!("{}", table::render(&header, &rows));
    let rows: Vec<Vec<String>> = report
        .groups
        .iter()
        .map(|g| {
            let prunable = if g.prunable {
                "yes".to_string()
            } else {
                format!("no: {}", g.frozen_because.join("; "))
            };
            vec![
                g.id.to_string(),
                g.channels.to_string(),
                prunable,
                g.members.join(", "),
            ]
        })
        .collect();
    println!("\nchannel groups\n");
    print!(
        "{}",
        table::render(&["group", "channels", "prunable", "members"], &rows)
    );
    Ok(())
}
