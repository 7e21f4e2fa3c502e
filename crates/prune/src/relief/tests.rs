//! Scores and the keep rule against values worked out by hand.

use super::*;
use ndarray::{Array4, IxDyn};
use pare_onnx::{attr, GraphBuilder};

fn value(graph: &Graph, name: &str) -> ValueId {
    graph
        .value_ids()
        .find(|&v| graph.value(v).name == name)
        .unwrap()
}

fn close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
}

/// x[N,1,1,3] → Flatten → Gemm(B [3,2] without transB, C [2]).
fn gemm() -> (Graph, Dataset) {
    let mut b = GraphBuilder::new("fc", 17);
    b.input("x", [-1i64, 1, 1, 3]);
    // Unit 0 reads [0.5, -3, 4] with bias 1; unit 1 reads [1, 1, 1] with bias -0.5.
    b.initializer(attr::tensor_f32(
        "B",
        &[3, 2],
        vec![0.5, 1.0, -3.0, 1.0, 4.0, 1.0],
    ));
    b.initializer(attr::tensor_f32("C", &[2], vec![1.0, -0.5]));
    b.node("Flatten", &["x"], &["f"], vec![]);
    b.node("Gemm", &["f", "B", "C"], &["y"], vec![]);
    b.output("y", [-1i64, 2]);
    let graph = pare_ir::import(&b.build()).unwrap();
    // mean |x| = [2, 1, 0].
    let images = Array4::from_shape_vec((2, 1, 1, 3), vec![1.0, -2.0, 0.0, 3.0, 0.0, 0.0]).unwrap();
    let data = Dataset::new(images, vec![0, 1]);
    (graph, data)
}

#[test]
fn gemm_scores_are_weight_times_mean_input_and_bias_magnitude() {
    let (graph, data) = gemm();
    let scores = score(&graph, &data, ScoreForm::PerSample, 1).unwrap();
    let [s] = scores.as_slice() else {
        panic!("one layer")
    };
    let want = [[1.0, 3.0, 0.0], [2.0, 1.0, 0.0]];
    for ((j, c), &got) in s.connections.indexed_iter() {
        close(got, want[j][c]);
    }
    close(s.bias[0], 1.0);
    close(s.bias[1], 0.5);
}

#[test]
fn the_keep_rule_keeps_the_smallest_set_carrying_alpha_with_its_ties() {
    // Unit 0's entries [w0, w1, w2, bias] = [1, 3, 0, 1], total 5.
    let unit = [1.0, 3.0, 0.0, 1.0];
    // 3 < 4.75, 3 + 1 < 4.75, 5 ≥ 4.75: the three nonzero entries.
    assert_eq!(kept_entries(&unit, 0.95), [true, true, false, true]);
    // 3 < 3.5 ≤ 4 after the next 1; its tie, the bias, is kept too.
    assert_eq!(kept_entries(&unit, 0.7), [true, true, false, true]);
    // 3 ≥ 2.5 at once: the bias falls outside the kept set.
    assert_eq!(kept_entries(&unit, 0.5), [false, true, false, false]);
    // alpha = 1 keeps every entry that carries anything, and nothing that carries nothing.
    assert_eq!(kept_entries(&unit, 1.0), [true, true, false, true]);
    assert_eq!(kept_entries(&[0.1, 0.2, 0.3], 1.0), [true; 3]);
    // A unit with no signal keeps nothing.
    assert_eq!(kept_entries(&[0.0, 0.0], 0.9), [false, false]);
}

#[test]
fn gemm_masks_follow_the_weight_layout_and_mask_the_bias() {
    let (graph, data) = gemm();
    let scores = score(&graph, &data, ScoreForm::PerSample, 2).unwrap();
    let settings = ReliefSettings {
        alpha_fc: 0.5,
        ..ReliefSettings::default()
    };
    let mut masks = Masks::default();
    mask_layers(&graph, &scores, &settings, &mut masks);
    // Unit 0 keeps w1 only (bias out); unit 1 (entries [2, 1, 0, 0.5], 2 ≥ 1.75) keeps w0.
    let b = masks.get(value(&graph, "B")).unwrap().clone();
    assert_eq!(b.as_slice().unwrap(), [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
    let c = masks.get(value(&graph, "C")).unwrap();
    assert_eq!(c.as_slice().unwrap(), [0.0, 0.0]);
    // A second pass never revives a masked entry.
    let settings = ReliefSettings {
        alpha_fc: 1.0,
        ..settings
    };
    mask_layers(&graph, &scores, &settings, &mut masks);
    assert_eq!(masks.get(value(&graph, "B")).unwrap(), &b);
}

/// x[2,2,2,2] → Conv(2 filters, 1×1 kernels, bias).
fn conv() -> (Graph, Dataset) {
    let mut b = GraphBuilder::new("conv", 17);
    b.input("x", [-1i64, 2, 2, 2]);
    // Filter 0: kernels 1 and 2, bias 0.5; filter 1: kernels 0 and -1, bias 0.
    b.initializer(attr::tensor_f32(
        "W",
        &[2, 2, 1, 1],
        vec![1.0, 2.0, 0.0, -1.0],
    ));
    b.initializer(attr::tensor_f32("b", &[2], vec![0.5, 0.0]));
    b.node("Conv", &["x", "W", "b"], &["y"], vec![]);
    b.output("y", [-1i64, 2, 2, 2]);
    let graph = pare_ir::import(&b.build()).unwrap();
    // Channel 0: [[3,0],[0,4]] then [[4,0],[0,3]] (norms 5 and 5, mean map norm 3.5·√2);
    // channel 1: all 1 then all −1 (norms 2 and 2, mean |x| map norm 2).
    let images = Array4::from_shape_vec(
        (2, 2, 2, 2),
        vec![
            3.0, 0.0, 0.0, 4.0, 1.0, 1.0, 1.0, 1.0, //
            4.0, 0.0, 0.0, 3.0, -1.0, -1.0, -1.0, -1.0,
        ],
    )
    .unwrap();
    let data = Dataset::new(images, vec![0, 1]);
    (graph, data)
}

#[test]
fn conv_scores_per_sample_and_of_the_mean_input() {
    let (graph, data) = conv();
    let per_sample = score(&graph, &data, ScoreForm::PerSample, 1).unwrap();
    let s = &per_sample[0];
    close(s.connections[[0, 0]], 5.0);
    close(s.connections[[0, 1]], 2.0 * 2.0);
    close(s.connections[[1, 0]], 0.0);
    close(s.connections[[1, 1]], 2.0);
    // The bias is a constant map: |b|·√(ho·wo).
    close(s.bias[0], 0.5 * 2.0);
    close(s.bias[1], 0.0);
    let mean_input = score(&graph, &data, ScoreForm::MeanInput, 2).unwrap();
    let m = &mean_input[0];
    close(m.connections[[0, 0]], 3.5 * 2f64.sqrt());
    close(m.connections[[0, 1]], 2.0 * 2.0);
    close(m.connections[[1, 1]], 2.0);
    close(m.bias[0], 1.0);
}

#[test]
fn conv_masks_whole_kernels() {
    let (graph, data) = conv();
    let scores = score(&graph, &data, ScoreForm::PerSample, 2).unwrap();
    let mut masks = Masks::default();
    mask_layers(&graph, &scores, &ReliefSettings::default(), &mut masks);
    // Filter 0: [5, 4, bias 1], 5 + 4 ≥ 9: both kernels, no bias. Filter 1: [0, 2, 0]: kernel 1.
    let w = masks.get(value(&graph, "W")).unwrap();
    assert_eq!(
        w,
        &ArrayD::from_shape_vec(IxDyn(&[2, 2, 1, 1]), vec![1.0, 1.0, 0.0, 1.0]).unwrap()
    );
    assert_eq!(
        masks.get(value(&graph, "b")).unwrap().as_slice().unwrap(),
        [0.0, 0.0]
    );
}

#[test]
fn the_pruning_set_is_drawn_by_the_seed() {
    let (_, data) = conv();
    let a = pruning_set(&data, 1, 3);
    assert_eq!(a.len(), 1);
    assert_eq!(a.images, pruning_set(&data, 1, 3).images);
    assert_eq!(pruning_set(&data, 10, 3).len(), 2);
}
