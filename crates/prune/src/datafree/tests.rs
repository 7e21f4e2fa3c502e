//! Bias compensation on hand-built graphs, run with pare's own forward pass: a removed channel
//! that BatchNorm makes constant (gamma 0) is compensated exactly, so the pruned graph computes
//! what the unpruned one did.

use super::*;
use crate::groups::analyze;
use crate::{GroupId, PruneError, PruningPlan};
use ndarray::{ArrayD, IxDyn};
use pare_ir::{Graph, Tensor};
use pare_onnx::attr::{self, tensor_f32};
use pare_onnx::GraphBuilder;
use pare_train::{forward, Mode};

fn wave(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 + seed) * 0.7123).sin()).collect()
}

/// A BatchNorm `name` over `channels` whose scale and shift are `gamma` and `beta`.
fn batchnorm(b: &mut GraphBuilder, name: &str, input: &str, gamma: &[f32], beta: &[f32]) {
    let n = gamma.len() as i64;
    let var: Vec<f32> = (0..gamma.len()).map(|i| 0.5 + i as f32).collect();
    b.initializer(tensor_f32(&format!("{name}.g"), &[n], gamma.to_vec()));
    b.initializer(tensor_f32(&format!("{name}.b"), &[n], beta.to_vec()));
    b.initializer(tensor_f32(
        &format!("{name}.m"),
        &[n],
        wave(gamma.len(), 5.0),
    ));
    b.initializer(tensor_f32(&format!("{name}.v"), &[n], var));
    let inputs = ["g", "b", "m", "v"].map(|p| format!("{name}.{p}"));
    b.node(
        "BatchNormalization",
        &[input, &inputs[0], &inputs[1], &inputs[2], &inputs[3]],
        &[name],
        vec![],
    );
}

fn outputs(graph: &Graph) -> Vec<ArrayD<f32>> {
    let shape = graph.value(graph.inputs[0]).shape.as_ref().unwrap();
    let dims = shape.to_known().unwrap();
    let n: usize = dims.iter().product();
    let x = ArrayD::from_shape_vec(IxDyn(&dims), wave(n, 0.3)).unwrap();
    let tape = forward(graph, x, Mode::Eval, false, None).unwrap();
    graph
        .outputs
        .iter()
        .map(|&v| tape.value(v).unwrap().clone())
        .collect()
}

fn max_difference(a: &[ArrayD<f32>], b: &[ArrayD<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            assert_eq!(a.shape(), b.shape());
            (a - b).iter().fold(0.0f32, |m, d| m.max(d.abs()))
        })
        .fold(0.0, f32::max)
}

/// Prunes `plan` from a copy of `graph` with and without compensation; returns the largest
/// output difference to the unpruned graph of each, and the compensation.
/// The largest output difference to the unpruned `graph` after pruning `plan` with and without
/// compensation, and the compensation's report.
fn prune_both_ways(graph: &Graph, plan: &PruningPlan) -> (f32, f32, Compensation) {
    let before = outputs(graph);
    let groups = analyze(graph);
    let mut plain = graph.clone();
    plan.apply(&mut plain, &groups).unwrap();
    let mut compensated = graph.clone();
    let mut cgroups = groups.clone();
    let report = compensate_removed(&mut compensated, &mut cgroups, plan).unwrap();
    plan.apply(&mut compensated, &cgroups).unwrap();
    (
        max_difference(&before, &outputs(&compensated)),
        max_difference(&before, &outputs(&plain)),
        report,
    )
}

/// Asserts that only the compensated prune keeps the unpruned outputs (to 1e-5; the plain one
/// differs by more than 1e-2); returns the report. `case` names the graph in failures.
fn compensated_exactly(graph: &Graph, plan: &PruningPlan, case: &str) -> Compensation {
    let (exact, lost, report) = prune_both_ways(graph, plan);
    assert!(
        exact < 1e-5,
        "{case}: compensated outputs differ by {exact}: {report:?}"
    );
    assert!(
        lost > 1e-2,
        "{case}: without compensation they differ by only {lost}"
    );
    report
}

fn only_prunable(graph: &Graph) -> Vec<GroupId> {
    analyze(graph)
        .groups
        .iter()
        .filter(|g| g.prunable())
        .map(|g| g.id)
        .collect()
}

/// x[2,2,8,8] → Conv(3, 3×3, pad 1) → BN (channel 1: gamma 0, beta 0.7) → Relu → [MaxPool 2×2]
/// → p; p → Conv(2, 3×3, no pad, no bias) → y1; p → Flatten → Gemm(4, alpha 0.5, beta 2) → y2.
fn conv_and_gemm(pool: bool, trans_b: bool, gemm_bias: bool) -> Graph {
    let side = if pool { 4 } else { 8 };
    let features = 3 * side * side;
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [2i64, 2, 8, 8]);
    b.initializer(tensor_f32("w1", &[3, 2, 3, 3], wave(54, 1.0)));
    b.initializer(tensor_f32("b1", &[3], wave(3, 2.0)));
    b.node(
        "Conv",
        &["x", "w1", "b1"],
        &["c1"],
        vec![attr::ints("pads", &[1, 1, 1, 1])],
    );
    batchnorm(&mut b, "bn", "c1", &[1.2, 0.0, 0.8], &[0.1, 0.7, -0.2]);
    b.node("Relu", &["bn"], &["r"], vec![]);
    if pool {
        let window = vec![
            attr::ints("kernel_shape", &[2, 2]),
            attr::ints("strides", &[2, 2]),
        ];
        b.node("MaxPool", &["r"], &["p"], window);
    } else {
        b.node("Identity", &["r"], &["p"], vec![]);
    }
    b.initializer(tensor_f32("w2", &[2, 3, 3, 3], wave(54, 3.0)));
    b.node("Conv", &["p", "w2"], &["y1"], vec![]);
    let fc_dims = if trans_b {
        [4, features as i64]
    } else {
        [features as i64, 4]
    };
    b.initializer(tensor_f32(
        "fc",
        &fc_dims,
        wave(4 * features, 4.0).iter().map(|w| 0.1 * w).collect(),
    ));
    b.node("Flatten", &["p"], &["f"], vec![]);
    let gemm_attrs = vec![
        attr::float("alpha", 0.5),
        attr::float("beta", 2.0),
        attr::int("transB", i64::from(trans_b)),
    ];
    if gemm_bias {
        b.initializer(tensor_f32("fcb", &[4], wave(4, 6.0)));
        b.node("Gemm", &["f", "fc", "fcb"], &["y2"], gemm_attrs);
    } else {
        b.node("Gemm", &["f", "fc"], &["y2"], gemm_attrs);
    }
    b.output("y1", [2i64, 2, side as i64 - 2, side as i64 - 2]);
    b.output("y2", [2i64, 4]);
    pare_ir::import(&b.build()).unwrap()
}

#[test]
fn a_constant_channel_is_compensated_exactly_in_convs_and_gemms() {
    for (pool, trans_b, gemm_bias) in [
        (true, true, true),
        (false, false, false),
        (true, false, false),
        (false, true, true),
    ] {
        let graph = conv_and_gemm(pool, trans_b, gemm_bias);
        let [group] = only_prunable(&graph)[..] else {
            panic!("one prunable group")
        };
        let mut plan = PruningPlan::default();
        plan.drop_channels(group, [1]);
        let case = format!("pool {pool}, transB {trans_b}, Gemm bias {gemm_bias}");
        let report = compensated_exactly(&graph, &plan, &case);
        assert_eq!(
            (report.reads, report.compensated, report.unknown),
            (2, 2, 0),
            "{case}"
        );
        assert_eq!(report.biases_added, if gemm_bias { 1 } else { 2 }, "{case}");
    }
}

/// x[1,2,5,5] → three 1×1 Convs and BNs a (2 channels), b and c (3 each); r = Relu(b + c);
/// Concat(a, r) → Conv(2, 1×1, bias) → y. Channel 0 of a and channel 2 of b and c are constant.
fn concat_of_sums() -> Graph {
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1i64, 2, 5, 5]);
    for (name, channels, gamma, beta) in [
        ("a", 2, vec![0.0, 0.9], vec![0.3, -0.1]),
        ("b", 3, vec![1.1, 0.6, 0.0], vec![0.2, 0.4, 0.5]),
        ("c", 3, vec![0.7, 1.3, 0.0], vec![-0.3, 0.1, 0.25]),
    ] {
        b.initializer(tensor_f32(
            &format!("w{name}"),
            &[channels, 2, 1, 1],
            wave(2 * channels as usize, channels as f32),
        ));
        b.node(
            "Conv",
            &["x", &format!("w{name}")],
            &[&format!("conv{name}")],
            vec![],
        );
        batchnorm(&mut b, name, &format!("conv{name}"), &gamma, &beta);
    }
    b.node("Add", &["b", "c"], &["s"], vec![]);
    b.node("Relu", &["s"], &["r"], vec![]);
    b.node("Concat", &["a", "r"], &["cat"], vec![attr::int("axis", 1)]);
    b.initializer(tensor_f32("w", &[2, 5, 1, 1], wave(10, 7.0)));
    b.initializer(tensor_f32("bias", &[2], vec![0.5, -0.5]));
    b.node("Conv", &["cat", "w", "bias"], &["y"], vec![]);
    b.output("y", [1i64, 2, 5, 5]);
    pare_ir::import(&b.build()).unwrap()
}

#[test]
fn compensation_reads_channels_at_their_concat_offsets_and_through_sums() {
    let graph = concat_of_sums();
    let groups = analyze(&graph);
    let width = |id: &GroupId| groups.group(*id).channels;
    let prunable = only_prunable(&graph);
    let a = *prunable.iter().find(|g| width(g) == 2).unwrap();
    let bc = *prunable.iter().find(|g| width(g) == 3).unwrap();
    let mut plan = PruningPlan::default();
    plan.drop_channels(a, [0]);
    plan.drop_channels(bc, [2]);
    let report = compensated_exactly(&graph, &plan, "");
    assert_eq!(
        (report.reads, report.compensated, report.biases_added),
        (2, 2, 0)
    );
}

/// x → Conv(3) → BN1 → Relu → Conv(4, 1×1, no bias) → BN2 → Relu → Conv(2, 1×1) → y, with a
/// constant channel in each BatchNorm.
fn chain() -> Graph {
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1i64, 2, 4, 4]);
    b.initializer(tensor_f32("w1", &[3, 2, 1, 1], wave(6, 1.0)));
    b.node("Conv", &["x", "w1"], &["c1"], vec![]);
    batchnorm(&mut b, "bn1", "c1", &[1.0, 0.0, 0.5], &[0.0, 0.4, 0.1]);
    b.node("Relu", &["bn1"], &["r1"], vec![]);
    b.initializer(tensor_f32("w2", &[4, 3, 1, 1], wave(12, 2.0)));
    b.node("Conv", &["r1", "w2"], &["c2"], vec![]);
    batchnorm(
        &mut b,
        "bn2",
        "c2",
        &[0.9, 1.1, 0.0, 0.7],
        &[0.0, 0.2, 0.6, -0.1],
    );
    b.node("Relu", &["bn2"], &["r2"], vec![]);
    b.initializer(tensor_f32("w3", &[2, 4, 1, 1], wave(8, 3.0)));
    b.node("Conv", &["r2", "w3"], &["y"], vec![]);
    b.output("y", [1i64, 2, 4, 4]);
    pare_ir::import(&b.build()).unwrap()
}

#[test]
fn a_bias_added_to_a_layer_is_cut_with_the_layer_s_pruned_outputs() {
    let graph = chain();
    let groups = analyze(&graph);
    let prunable = only_prunable(&graph);
    let first = *prunable
        .iter()
        .find(|g| groups.group(**g).channels == 3)
        .unwrap();
    let second = *prunable
        .iter()
        .find(|g| groups.group(**g).channels == 4)
        .unwrap();
    let mut plan = PruningPlan::default();
    plan.drop_channels(first, [1]);
    plan.drop_channels(second, [2]);
    let report = compensated_exactly(&graph, &plan, "");
    assert_eq!((report.compensated, report.biases_added), (2, 2));
}

/// x → Conv(3, pad 1) → BN → Relu → r; r → depthwise Conv → Conv(2, 1×1, bias) → y1;
/// r → GlobalAveragePool → Flatten → MatMul → y2.
fn unknown_and_matmul() -> Graph {
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1i64, 2, 4, 4]);
    b.initializer(tensor_f32("w1", &[3, 2, 3, 3], wave(54, 1.0)));
    b.node(
        "Conv",
        &["x", "w1"],
        &["c1"],
        vec![attr::ints("pads", &[1, 1, 1, 1])],
    );
    batchnorm(&mut b, "bn", "c1", &[1.0, 0.0, 0.5], &[0.0, 0.4, 0.1]);
    b.node("Relu", &["bn"], &["r"], vec![]);
    b.initializer(tensor_f32("dw", &[3, 1, 3, 3], wave(27, 2.0)));
    b.node(
        "Conv",
        &["r", "dw"],
        &["d"],
        vec![attr::ints("pads", &[1, 1, 1, 1]), attr::int("group", 3)],
    );
    b.initializer(tensor_f32("w2", &[2, 3, 1, 1], wave(6, 3.0)));
    b.initializer(tensor_f32("b2", &[2], vec![0.25, -0.75]));
    b.node("Conv", &["d", "w2", "b2"], &["y1"], vec![]);
    b.node("GlobalAveragePool", &["r"], &["g"], vec![]);
    b.node("Flatten", &["g"], &["f"], vec![]);
    b.initializer(tensor_f32("m", &[3, 4], wave(12, 4.0)));
    b.node("MatMul", &["f", "m"], &["y2"], vec![]);
    b.output("y1", [1i64, 2, 4, 4]);
    b.output("y2", [1i64, 4]);
    pare_ir::import(&b.build()).unwrap()
}

#[test]
fn a_trace_through_an_op_it_cannot_follow_leaves_the_graph_alone_and_says_why() {
    let graph = unknown_and_matmul();
    let [group] = only_prunable(&graph)[..] else {
        panic!("one prunable group")
    };
    let mut plan = PruningPlan::default();
    plan.drop_channels(group, [1]);
    let mut copy = graph.clone();
    let mut groups = analyze(&graph);
    let report = compensate_removed(&mut copy, &mut groups, &plan).unwrap();
    assert_eq!(copy, graph, "no bias changed and none added");
    assert_eq!(
        (
            report.reads,
            report.compensated,
            report.unknown,
            report.consumers_skipped
        ),
        (2, 0, 1, 1),
        "{report:?}"
    );
    let why: Vec<&String> = report.skipped.keys().collect();
    assert!(
        why.iter().any(|w| w.contains("Conv before any BatchNorm")),
        "{why:?}"
    );
    assert!(
        why.iter()
            .any(|w| w.contains("MatMul") && w.contains("no bias")),
        "{why:?}"
    );
    // The bias the Conv has kept its values.
    let b2 = graph.find_value("b2").unwrap();
    assert!(
        matches!(copy.value(b2).initializer(), Some(Tensor::F32(t)) if t.as_slice() == Some(&[0.25, -0.75][..]))
    );
}

#[test]
fn a_refused_plan_changes_nothing() {
    let graph = chain();
    let groups = analyze(&graph);
    let frozen = groups
        .groups
        .iter()
        .find(|g| !g.frozen.is_empty())
        .unwrap()
        .id;
    let mut plan = PruningPlan::default();
    plan.drop_channels(frozen, [0]);
    let mut copy = graph.clone();
    let err = compensate_removed(&mut copy, &mut groups.clone(), &plan).unwrap_err();
    assert!(matches!(err, PruneError::Frozen(..)), "{err}");
    assert_eq!(copy, graph);
}

/// x → Conv(3, 1×1) → BN (channel 1 constant at −0.7) → `op` → Conv(2, 1×1) → y.
fn activation(op: &str, attributes: Vec<pare_onnx::proto::AttributeProto>) -> Graph {
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1i64, 2, 3, 3]);
    b.initializer(tensor_f32("w1", &[3, 2, 1, 1], wave(6, 1.0)));
    b.node("Conv", &["x", "w1"], &["c1"], vec![]);
    batchnorm(&mut b, "bn", "c1", &[1.0, 0.0, 0.5], &[0.2, -0.7, 0.1]);
    if op == "Clip" {
        b.initializer(tensor_f32("lo", &[], vec![0.1]));
        b.initializer(tensor_f32("hi", &[], vec![0.5]));
        b.node(op, &["bn", "lo", "hi"], &["a"], attributes);
    } else {
        b.node(op, &["bn"], &["a"], attributes);
    }
    b.initializer(tensor_f32("w2", &[2, 3, 1, 1], wave(6, 3.0)));
    b.node("Conv", &["a", "w2"], &["y"], vec![]);
    b.output("y", [1i64, 2, 3, 3]);
    pare_ir::import(&b.build()).unwrap()
}

#[test]
fn every_traced_activation_computes_what_the_executor_computes() {
    for (op, attributes) in [
        ("Relu", vec![]),
        ("LeakyRelu", vec![attr::float("alpha", 0.1)]),
        ("Sigmoid", vec![]),
        (
            "HardSigmoid",
            vec![attr::float("alpha", 0.3), attr::float("beta", 0.4)],
        ),
        ("HardSwish", vec![]),
        ("Clip", vec![]),
    ] {
        let graph = activation(op, attributes);
        let [group] = only_prunable(&graph)[..] else {
            panic!("one prunable group")
        };
        let mut plan = PruningPlan::default();
        plan.drop_channels(group, [1]);
        let (compensated, _, report) = prune_both_ways(&graph, &plan);
        assert!(
            compensated < 1e-6,
            "{op}: compensated outputs differ by {compensated}"
        );
        assert_eq!(report.compensated, 1, "{op}: {report:?}");
    }
}

#[test]
fn a_trace_that_would_branch_without_end_stops_at_its_budget() {
    // s0 = BN(Conv(x)), s_{i+1} = s_i + s_i forty times: followed naively, 2⁴⁰ walks.
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1i64, 2, 3, 3]);
    b.initializer(tensor_f32("w1", &[3, 2, 1, 1], wave(6, 1.0)));
    b.node("Conv", &["x", "w1"], &["c1"], vec![]);
    batchnorm(&mut b, "s0", "c1", &[1.0, 0.0, 0.5], &[0.2, -0.7, 0.1]);
    for i in 0..40 {
        let (from, to) = (format!("s{i}"), format!("s{}", i + 1));
        b.node("Add", &[&from, &from], &[&to], vec![]);
    }
    b.initializer(tensor_f32("w2", &[2, 3, 1, 1], wave(6, 3.0)));
    b.node("Conv", &["s40", "w2"], &["y"], vec![]);
    b.output("y", [1i64, 2, 3, 3]);
    let graph = pare_ir::import(&b.build()).unwrap();
    let [group] = only_prunable(&graph)[..] else {
        panic!("one prunable group")
    };
    let mut plan = PruningPlan::default();
    plan.drop_channels(group, [1]);
    let mut groups = analyze(&graph);
    let report = compensate_removed(&mut graph.clone(), &mut groups, &plan).unwrap();
    assert_eq!(report.unknown, 1, "{report:?}");
    assert!(
        report.skipped.keys().any(|w| w.contains("512")),
        "{report:?}"
    );
}
