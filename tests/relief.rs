//! Relief's structural removals: a unit whose outgoing connections are all masked, or whose
//! value is zero on the whole pruning set, is removed, and tract's outputs on the written file
//! equal the masked dense model's.

use ndarray::{Array4, ArrayD, Axis};
use pare_data::Dataset;
use pare_ir::{Graph, Tensor, ValueId};
use pare_onnx::{attr, GraphBuilder};
use pare_prune::relief::remove_units;
use pare_train::optim::Masks;
use pare_verify::{max_abs_diff, TractModel};

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

fn run(graph: &Graph, dir: &std::path::Path, name: &str, x: &Array4<f32>) -> ndarray::Array2<f32> {
    let path = dir.join(name);
    pare_onnx::write_model(&path, &pare_ir::export(graph)).unwrap();
    TractModel::load(&path, x.shape())
        .unwrap()
        .run(x.view())
        .unwrap()
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
    let dense = run(&graph, dir.path(), "dense.onnx", &x);

    let plans = remove_units(&mut graph, &mut masks, None).unwrap();
    assert!(!plans.is_empty());
    assert_eq!(filters(&graph, "w1"), 3, "conv1 lost its unread channel");
    assert_eq!(filters(&graph, "w2"), 2, "conv2 lost its unread channel");
    let pruned = run(&graph, dir.path(), "pruned.onnx", &x);
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
    if let pare_ir::ValueSource::Initializer(Tensor::F32(b)) = &mut graph.value_mut(b1).source {
        b[[3]] = -1.0;
    }
    let data = Dataset {
        images: images(),
        labels: vec![0; 6],
    };
    let x = images();
    let dir = tempfile::tempdir().unwrap();
    let dense = run(&graph, dir.path(), "dense.onnx", &x);
    // Without data the filter is still read (its weights downstream are not zero).
    assert!(remove_units(&mut graph.clone(), &mut masks.clone(), None)
        .unwrap()
        .is_empty());
    remove_units(&mut graph, &mut masks, Some((&data, 4))).unwrap();
    assert_eq!(filters(&graph, "w1"), 3);
    assert_eq!(masks.get(w1).unwrap().shape(), [3, 2, 3, 3]);
    let pruned = run(&graph, dir.path(), "pruned.onnx", &x);
    assert!(max_abs_diff(&dense, &pruned) <= 1e-5);
}
