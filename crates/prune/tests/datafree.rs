//! The no-data pieces on a real model with its BatchNorms kept (vggbn_keepbn, MNIST): pruned by
//! group L2 without fine-tuning, it keeps more accuracy with bias compensation than without, and
//! its first BatchNorm gives the synthetic inputs.

use ndarray::Axis;
use pare_data::{load_dir, Dataset};
use pare_ir::Graph;
use pare_prune::criteria::{score, Evidence};
use pare_prune::selection::{DropOrder, WidthRule};
use pare_prune::{
    analyze, compensate_removed, synthetic_inputs, ChannelGroups, Criterion, PruningPlan, Ranking,
    SyntheticSource,
};
use pare_train::{evaluate, forward, Loss, Mode};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vggbn() -> Graph {
    let path = root().join("models/vggbn_keepbn_opset17.onnx");
    pare_ir::import(&pare_onnx::read_model(&path).unwrap()).unwrap()
}

/// The first `n` test images of MNIST-5k.
fn test_images(n: usize) -> Dataset {
    load_dir(&root().join("models/mnist5k"))
        .unwrap()
        .test
        .head(n)
}

fn accuracy(graph: &Graph, data: &Dataset) -> f64 {
    let e = evaluate(graph, data, 100, &Loss::CrossEntropy.into()).unwrap();
    e.correct as f64 / e.total as f64
}

/// 30% of the channels of `graph` (analysed as `groups`), lowest group L2 first, the same
/// share of every group.
fn l2_plan(graph: &Graph, groups: &ChannelGroups) -> PruningPlan {
    let evidence = Evidence {
        rls: None,
        gradients: None,
        seed: 0,
    };
    let scores = score(Criterion::L2, graph, groups, &evidence).unwrap();
    let order = DropOrder::new(
        &scores,
        Ranking::Local,
        |_, width| width,
        |_| 1,
        WidthRule::multiples(1),
    );
    order.plan(order.len() * 3 / 10)
}

#[test]
fn compensation_keeps_more_accuracy_after_pruning_without_data() {
    let graph = vggbn();
    let data = test_images(300);
    let groups = analyze(&graph);
    let plan = l2_plan(&graph, &groups);

    let mut plain = graph.clone();
    plan.apply(&mut plain, &groups).unwrap();
    let mut compensated = graph.clone();
    let mut cgroups = groups.clone();
    let report = compensate_removed(&mut compensated, &mut cgroups, &plan).unwrap();
    plan.apply(&mut compensated, &cgroups).unwrap();

    let (before, without, with) = (
        accuracy(&graph, &data),
        accuracy(&plain, &data),
        accuracy(&compensated, &data),
    );
    eprintln!(
        "accuracy: unpruned {before:.3}, pruned {without:.3}, pruned and compensated {with:.3}; {report:?}");
    assert!(
        report.compensated > 0 && report.compensated == report.reads,
        "{report:?}"
    );
    assert!(
        with > without,
        "compensated {with} is not above plain {without}"
    );
}

#[test]
fn the_first_batchnorm_shapes_the_synthetic_inputs() {
    let graph = vggbn();
    let (images, source) = synthetic_inputs(&graph, 32, 5).unwrap();
    let SyntheticSource::FirstBatchNorm {
        conv, mean, std, ..
    } = &source
    else {
        panic!("{source:?}")
    };
    // MNIST's pixels (scaled to 0..1) have mean 0.1307 and standard deviation 0.3081: the fit
    // to the first BatchNorm finds a Gaussian close to them.
    assert!((mean[0] - 0.1307).abs() < 0.01, "{source:?}");
    assert!((std[0] - 0.3081).abs() < 0.05, "{source:?}");
    // The first Conv's outputs on the synthetic images have the BatchNorm's running means.
    let conv = graph
        .node_ids()
        .find(|&n| &graph.node(n).name == conv)
        .unwrap();
    let bn = graph
        .node_ids()
        .find(|&n| graph.node(n).op.op_type() == "BatchNormalization")
        .unwrap();
    let tape = forward(&graph, images.into_dyn(), Mode::Eval, false, None).unwrap();
    let out = tape.value(graph.node(conv).outputs[0]).unwrap();
    let running_mean = graph.const_input(bn, 3).unwrap().as_f32().unwrap();
    let running_var = graph.const_input(bn, 4).unwrap().as_f32().unwrap();
    for (c, channel) in out.axis_iter(Axis(1)).enumerate() {
        let n = channel.len() as f64;
        let m = channel.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let (want, spread) = (
            f64::from(running_mean[[c]]),
            f64::from(running_var[[c]]).sqrt(),
        );
        assert!(
            (m - want).abs() < 0.1 * spread,
            "channel {c}: mean {m}, running mean {want}"
        );
    }
}

/// Drops 30% of each prunable group's channels by group L2; returns the compensation report.
fn compensate_l2(model: &str) -> pare_prune::Compensation {
    let path = root().join(model);
    let mut graph = pare_ir::import(&pare_onnx::read_model(&path).unwrap()).unwrap();
    let mut groups = analyze(&graph);
    let plan = l2_plan(&graph, &groups);
    let report = compensate_removed(&mut graph, &mut groups, &plan).unwrap();
    plan.apply(&mut graph, &groups).unwrap();
    report
}

#[test]
fn with_batchnorm_folded_nothing_is_compensated_and_every_read_says_why() {
    for model in [
        "models/resnet20_opset17.onnx",
        "models/mobile/mobile_se_opset13.onnx",
    ] {
        let report = compensate_l2(model);
        eprintln!("{model}: {report:?}");
        let skipped: usize = report.skipped.values().sum();
        assert!(report.reads > 0, "{model}: {report:?}");
        assert_eq!(
            report.reads,
            report.compensated + skipped,
            "{model}: {report:?}"
        );
    }
    let report = compensate_l2("models/resnet20_opset17.onnx");
    assert_eq!(report.compensated, 0, "{report:?}");
}
