//! Relief's structural removals: a unit whose outgoing connections are all masked, or whose
//! value is zero on the whole pruning set, is removed, and tract's outputs on the written file
//! equal the masked dense model's.

use ndarray::{Array4, ArrayD, Axis};
use pare_data::Dataset;
use pare_ir::{Graph, Tensor, ValueId, ValueSource};
use pare_onnx::{attr, GraphBuilder};
mod common;

use pare_prune::relief::{
    gate_residuals, mask_layers, remove_units, score, ReliefSettings, ScoreForm,
};
use pare_train::optim::{Masked, Masks};
use pare_train::{Loss, Mode, OptimizerConfig, SgdConfig, TrainConfig, TrainingLoop};
use pare_verify::max_abs_diff;

fn wave(n: usize, seed: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + seed) * 0.6173).sin() * 0.5)
        .collect()
}

/// x[N,2,6,6] → Conv(4, 3×3) → Relu → Conv(3, 3×3) → Relu → Flatten → Gemm(12→5, transB).
fn graph() -> Graph {
    let mut b = GraphBuilder::new("relief", 17);
    b.input("x", [-1i64, 2, 6, 6]);
    b.initializer(attr::tensor_f32("w1", &[4, 2, 3, 3], wave(72, 1.0)));
    b.initializer(attr::tensor_f32("b1", &[4], vec![0.1, 0.2, 0.1, 0.3]));
    b.initializer(attr::tensor_f32("w2", &[3, 4, 3, 3], wave(108, 2.0)));
    b.initializer(attr::tensor_f32("b2", &[3], wave(3, 3.0)));
    b.initializer(attr::tensor_f32("fc", &[5, 12], wave(60, 4.0)));
    b.initializer(attr::tensor_f32("fcb", &[5], wave(5, 5.0)));
    b.node("Conv", &["x", "w1", "b1"], &["c1"], vec![]);
    b.node("Relu", &["c1"], &["r1"], vec![]);
    b.node("Conv", &["r1", "w2", "b2"], &["c2"], vec![]);
    b.node("Relu", &["c2"], &["r2"], vec![]);
    b.node("Flatten", &["r2"], &["f"], vec![]);
    b.node(
        "Gemm",
        &["f", "fc", "fcb"],
        &["y"],
        vec![attr::int("transB", 1)],
    );
    b.output("y", [-1i64, 5]);
    pare_ir::import(&b.build()).unwrap()
}

fn value(graph: &Graph, name: &str) -> ValueId {
    graph
        .value_ids()
        .find(|&v| graph.value(v).name == name)
        .unwrap()
}

fn ones(graph: &Graph, name: &str) -> ArrayD<f32> {
    match graph.value(value(graph, name)).initializer() {
        Some(Tensor::F32(t)) => ArrayD::ones(t.raw_dim()),
        _ => unreachable!("a float initializer"),
    }
}

/// The filters of a Conv weight.
fn filters(graph: &Graph, name: &str) -> usize {
    match graph.value(value(graph, name)).initializer() {
        Some(Tensor::F32(t)) => t.shape()[0],
        _ => unreachable!("a float initializer"),
    }
}

fn images() -> Array4<f32> {
    Array4::from_shape_fn((6, 2, 6, 6), |(n, c, y, x)| {
        ((n * 131 + c * 31 + y * 7 + x) as f32 * 0.377).sin()
    })
}

#[test]
fn units_no_one_reads_are_removed_and_tract_sees_no_difference() {
    let mut graph = graph();
    let mut masks = Masks::default();
    // Channel 2 of conv1: every kernel conv2 reads it through is masked.
    let mut w2 = ones(&graph, "w2");
    w2.index_axis_mut(Axis(1), 2).fill(0.0);
    masks.insert(value(&graph, "w2"), w2);
    // Channel 1 of conv2: every Gemm weight over its 4 positions (through Flatten) is masked,
    // and a few other weights, which stay.
    let mut fc = ones(&graph, "fc");
    fc.slice_mut(ndarray::s![.., 4..8]).fill(0.0);
    fc[[0, 3]] = 0.0;
    masks.insert(value(&graph, "fc"), fc);
    masks.apply_to_weights(&mut graph);
    let x = images();
    let dir = tempfile::tempdir().unwrap();
    let dense = common::tract_outputs(&graph, dir.path(), "dense.onnx", &x);

    let plans = remove_units(&mut graph, &mut masks, None).unwrap();
    assert!(!plans.is_empty());
    assert_eq!(filters(&graph, "w1"), 3, "conv1 lost its unread channel");
    assert_eq!(filters(&graph, "w2"), 2, "conv2 lost its unread channel");
    let pruned = common::tract_outputs(&graph, dir.path(), "pruned.onnx", &x);
    let diff = max_abs_diff(&dense, &pruned);
    assert!(diff <= 1e-5, "outputs differ by {diff}");
    // The masks followed the surgery, and the weight they left masked stays zero.
    let fc = masks.get(value(&graph, "fc")).unwrap();
    assert_eq!(fc.shape(), [5, 8]);
    assert_eq!(fc[[0, 3]], 0.0);
}

#[test]
fn a_unit_dead_on_the_pruning_set_is_removed() {
    let mut graph = graph();
    let w1 = value(&graph, "w1");
    let b1 = value(&graph, "b1");
    // Filter 3 of conv1: no kernel, a negative bias: Relu gives 0 on every image.
    let mut masks = Masks::default();
    let mut mask = ones(&graph, "w1");
    mask.index_axis_mut(Axis(0), 3).fill(0.0);
    masks.insert(w1, mask);
    masks.apply_to_weights(&mut graph);
    if let ValueSource::Initializer(Tensor::F32(b)) = &mut graph.value_mut(b1).source {
        b[[3]] = -1.0;
    }
    let data = Dataset::new(images(), vec![0; 6]);
    let x = images();
    let dir = tempfile::tempdir().unwrap();
    let dense = common::tract_outputs(&graph, dir.path(), "dense.onnx", &x);
    // Without data the filter is still read (its weights downstream are not zero).
    assert!(remove_units(&mut graph.clone(), &mut masks.clone(), None)
        .unwrap()
        .is_empty());
    remove_units(&mut graph, &mut masks, Some((&data, 4))).unwrap();
    assert_eq!(filters(&graph, "w1"), 3);
    assert_eq!(masks.get(w1).unwrap().shape(), [3, 2, 3, 3]);
    let pruned = common::tract_outputs(&graph, dir.path(), "pruned.onnx", &x);
    assert!(max_abs_diff(&dense, &pruned) <= 1e-5);
}

/// x[N,2,6,6] → Conv a(4) → Relu → Conv b(4) → BatchNorm → Add(·, Relu output) → Relu →
/// GlobalAveragePool → Flatten → Gemm(4→3). Filter 1 of b is tiny (its main branch carries
/// almost nothing), and so is filter 3 of a (the shortcut's channel 3).
fn residual_graph() -> Graph {
    let mut wa = wave(72, 1.0);
    wa[54..].iter_mut().for_each(|w| *w *= 1e-4);
    let mut wb = wave(144, 2.0);
    wb[36..72].iter_mut().for_each(|w| *w *= 1e-4);
    let mut b = GraphBuilder::new("residual", 17);
    b.input("x", [-1i64, 2, 6, 6]);
    b.initializer(attr::tensor_f32("wa", &[4, 2, 3, 3], wa));
    b.initializer(attr::tensor_f32("ba", &[4], vec![0.1, 0.2, 0.1, 0.0]));
    b.initializer(attr::tensor_f32("wb", &[4, 4, 3, 3], wb));
    b.initializer(attr::tensor_f32("bb", &[4], vec![0.1, 0.0, 0.1, 0.2]));
    b.initializer(attr::tensor_f32("gamma", &[4], vec![1.0; 4]));
    b.initializer(attr::tensor_f32("beta", &[4], vec![0.0; 4]));
    b.initializer(attr::tensor_f32("mean", &[4], vec![0.0; 4]));
    b.initializer(attr::tensor_f32("var", &[4], vec![1.0; 4]));
    b.initializer(attr::tensor_f32("fc", &[3, 4], wave(12, 3.0)));
    b.initializer(attr::tensor_f32("fcb", &[3], wave(3, 4.0)));
    let pads = || vec![attr::ints("pads", &[1, 1, 1, 1])];
    b.node("Conv", &["x", "wa", "ba"], &["ca"], pads());
    b.node("Relu", &["ca"], &["ra"], vec![]);
    b.node("Conv", &["ra", "wb", "bb"], &["cb"], pads());
    b.node(
        "BatchNormalization",
        &["cb", "gamma", "beta", "mean", "var"],
        &["bn"],
        vec![],
    );
    b.node("Add", &["bn", "ra"], &["sum"], vec![]);
    b.node("Relu", &["sum"], &["out"], vec![]);
    b.node("GlobalAveragePool", &["out"], &["gap"], vec![]);
    b.node("Flatten", &["gap"], &["f"], vec![]);
    b.node(
        "Gemm",
        &["f", "fc", "fcb"],
        &["y"],
        vec![attr::int("transB", 1)],
    );
    b.output("y", [-1i64, 3]);
    pare_ir::import(&b.build()).unwrap()
}

fn pare_outputs(graph: &Graph, x: &Array4<f32>) -> ndarray::Array2<f32> {
    let tape = pare_train::forward(graph, x.clone().into_dyn(), Mode::Eval, false, None).unwrap();
    let y = tape.value(graph.outputs[0]).unwrap();
    y.clone().into_dimensionality().unwrap()
}

#[test]
fn a_residual_add_switches_off_the_weak_side_and_the_gate_runs_in_tract() {
    let mut graph = residual_graph();
    let data = Dataset::new(images(), vec![0, 1, 2, 0, 1, 2]);
    let mut masks = Masks::default();
    let switched = gate_residuals(&mut graph, &data, 4, 0.9, &mut masks).unwrap();
    assert_eq!(switched, 2);
    // The main branch's filter 1 goes (Conv weight and bias, BatchNorm scale and shift)...
    let wb = masks.get(value(&graph, "wb")).unwrap();
    for f in 0..4 {
        let open = wb.index_axis(Axis(0), f).iter().all(|&m| m == 1.0);
        assert_eq!(open, f != 1, "filter {f}");
    }
    for name in ["bb", "gamma", "beta"] {
        assert_eq!(
            masks.get(value(&graph, name)).unwrap().as_slice().unwrap(),
            [1.0, 0.0, 1.0, 1.0]
        );
    }
    // ...and the identity shortcut's channel 3 is gated by a constant Mul.
    let gate = value(&graph, "ra_relief_gate");
    assert!(masks.is_held(gate));
    assert_eq!(
        masks.get(gate).unwrap().as_slice().unwrap(),
        [1.0, 1.0, 1.0, 0.0]
    );
    masks.apply_to_weights(&mut graph);

    // Training holds the gate and the masks.
    let sgd = OptimizerConfig::Sgd(SgdConfig::default());
    let mut optimizer = Masked::new(sgd.build(&graph), masks.clone(), &mut graph);
    let config = TrainConfig {
        epochs: 1,
        batch_size: 3,
        seed: 1,
        loss: Loss::CrossEntropy.into(),
        optimizer: sgd,
        batchnorm_training: true,
        max_grad_norm: None,
    };
    TrainingLoop::new(&graph, &data, config)
        .unwrap()
        .run(&mut graph, &mut optimizer, 2, &mut |_| {})
        .unwrap();
    match graph.value(gate).initializer() {
        Some(Tensor::F32(g)) => assert_eq!(g.as_slice().unwrap(), [1.0, 1.0, 1.0, 0.0]),
        _ => unreachable!("the gate is a constant"),
    }

    // The exported graph, gate included, runs in tract as in pare.
    let x = images();
    let dir = tempfile::tempdir().unwrap();
    let theirs = common::tract_outputs(&graph, dir.path(), "gated.onnx", &x);
    assert!(max_abs_diff(&pare_outputs(&graph, &x), &theirs) <= 1e-4);
    let model = pare_ir::export(&graph);
    let onnx = model.graph.as_ref().unwrap();
    assert!(onnx
        .node
        .iter()
        .any(|n| n.op_type.as_deref() == Some("Mul")));
    // Channel surgery still works around the gate.
    let mut pruned = graph.clone();
    let mut plan = pare_prune::PruningPlan::default();
    let groups = pare_prune::analyze(&pruned);
    let stream = groups
        .groups
        .iter()
        .find(|g| g.prunable() && g.values.contains(&value(&pruned, "sum")))
        .unwrap();
    plan.drop_channels(stream.id, [1]);
    plan.apply_with_masks(&mut pruned, &groups, &mut masks)
        .unwrap();
    assert_eq!(masks.get(gate).unwrap().shape(), [1, 3, 1, 1]);
    common::tract_outputs(&pruned, dir.path(), "pruned.onnx", &x);
}

#[test]
fn one_relief_pass_on_every_shipped_model_keeps_tract_and_pare_in_agreement() {
    let test = pare_data::load_dir(&common::mnist()).unwrap().test.head(16);
    let settings = ReliefSettings::default();
    let dir = tempfile::tempdir().unwrap();
    for path in common::shipped_models() {
        let name = path.display().to_string();
        let mut graph = pare_ir::import(&pare_onnx::read_model(&path).unwrap()).unwrap();
        let params = pare_prune::nonzero_params(&graph);
        let scores = score(&graph, &test, ScoreForm::PerSample, 8).unwrap();
        let mut masks = Masks::default();
        mask_layers(&graph, &scores, &settings, &mut masks);
        gate_residuals(&mut graph, &test, 8, settings.alpha_conv, &mut masks).unwrap();
        masks.apply_to_weights(&mut graph);
        let masked = common::tract_outputs(&graph, dir.path(), "masked.onnx", &test.images);
        remove_units(&mut graph, &mut masks, Some((&test, 8))).unwrap();
        let pruned = common::tract_outputs(&graph, dir.path(), "pruned.onnx", &test.images);
        let diff = max_abs_diff(&masked, &pruned);
        assert!(
            diff <= 1e-4,
            "{name}: removing units changed outputs by {diff}"
        );
        let ours = max_abs_diff(&pare_outputs(&graph, &test.images), &pruned);
        assert!(ours <= 1e-3, "{name}: pare and tract differ by {ours}");
        assert!(
            pare_prune::nonzero_params(&graph) < params,
            "{name}: nothing masked"
        );
    }
}

#[test]
fn inspect_shows_the_nonzero_share_of_a_model_with_exact_zeros() {
    let path = common::root().join("models/lenet5_opset17.onnx");
    let mut graph = pare_ir::import(&pare_onnx::read_model(&path).unwrap()).unwrap();
    // Half of fc3's 840 weights (its first 5 of 10 rows) set to zero: 430 of 850 left.
    let fc3 = graph
        .node_ids()
        .find(|&n| graph.node(n).name == "/fc3/Gemm")
        .unwrap();
    let weight = graph.node(fc3).inputs[1].unwrap();
    if let ValueSource::Initializer(Tensor::F32(w)) = &mut graph.value_mut(weight).source {
        w.slice_mut(ndarray::s![..5, ..]).fill(0.0);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sparse.onnx");
    pare_onnx::write_model(&file, &pare_ir::export(&graph)).unwrap();
    let out = common::compress(&["inspect", file.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("nonzero"), "{text}");
    let line = text.lines().find(|l| l.starts_with("/fc3/Gemm")).unwrap();
    assert!(line.trim_end().ends_with("50.6%"), "{line}");
    let line = text.lines().find(|l| l.starts_with("/fc2/Gemm")).unwrap();
    assert!(line.trim_end().ends_with("100.0%"), "{line}");
}
