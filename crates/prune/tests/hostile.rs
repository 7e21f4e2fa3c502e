//! Odd but valid graphs that channel analysis must not mistake for prunable ones: surgery on any
//! group it calls prunable gives a graph whose shapes still infer. Cases found by
//! `cargo xtask fuzz`.

use pare_ir::import;
use pare_onnx::attr::{tensor_f32, tensor_i64};
use pare_onnx::proto::{tensor_proto::DataType, ModelProto, TensorProto};
use pare_onnx::GraphBuilder;
use pare_prune::{analyze, PruningPlan};

fn weights(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37).sin()).collect()
}

/// x [1,3,6,6] → Conv(4 channels, 3×3) → c [1,4,4,4] → Reshape(c, target) → r → Conv(2, 1×1) → y.
fn identity_reshape(target: &[i64]) -> ModelProto {
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1, 3, 6, 6]).output("y", [1, 2, 4, 4]);
    b.initializer(tensor_f32("w", &[4, 3, 3, 3], weights(108)));
    b.initializer(tensor_f32("w2", &[2, 4, 1, 1], weights(8)));
    b.initializer(tensor_i64(
        "target",
        &[target.len() as i64],
        target.to_vec(),
    ));
    b.node("Conv", &["x", "w"], &["c"], vec![]);
    b.node("Reshape", &["c", "target"], &["r"], vec![]);
    b.node("Conv", &["r", "w2"], &["y"], vec![]);
    b.build()
}

/// Drops the first channel of every prunable group and checks that surgery succeeds; returns
/// why each group that was not prunable is frozen.
fn prune_all(model: &ModelProto) -> Vec<String> {
    let mut graph = import(model).unwrap();
    let groups = analyze(&graph);
    let mut plan = PruningPlan::default();
    for g in groups.groups.iter().filter(|g| g.prunable()) {
        plan.drop_channels(g.id, [0]);
    }
    plan.apply(&mut graph, &groups).unwrap();
    groups
        .groups
        .iter()
        .flat_map(|g| g.frozen.clone())
        .collect()
}

/// Seed 1, cases 1089, 6905, 15441: an identity Reshape whose target spells out the channel
/// count passed the channels through, and surgery left the target at the old count.
#[test]
fn an_identity_reshape_that_spells_out_the_channels_freezes_them() {
    let frozen = prune_all(&identity_reshape(&[0, 4, 4, 4]));
    assert!(
        frozen
            .iter()
            .any(|why| why.contains("Reshape") && why.contains("hard-codes the channel count")),
        "{frozen:?}"
    );
    // 0 copies the channel count and -1 infers it: those follow surgery.
    for target in [[0, 0, 4, 4], [1, -1, 4, 4]] {
        let frozen = prune_all(&identity_reshape(&target));
        assert!(
            frozen.iter().all(|why| !why.contains("Reshape")),
            "{frozen:?}"
        );
    }
}

/// Seed 1, cases 8711, 14565, 18314, 19435, 29270: a flattening Reshape whose target is not an
/// int64 constant (its output shape declared) was taken for one surgery can rewrite.
#[test]
fn a_flatten_whose_target_is_not_int64_freezes_the_channels() {
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1, 3, 6, 6])
        .output("y", [1, 3])
        .output("f", [1, 64]);
    b.initializer(tensor_f32("w", &[4, 3, 3, 3], weights(108)));
    b.initializer(tensor_f32("fc", &[64, 3], weights(192)));
    b.initializer(TensorProto {
        name: Some("target".into()),
        dims: vec![2],
        data_type: Some(DataType::Int32 as i32),
        int32_data: vec![1, 64],
        ..Default::default()
    });
    b.node("Conv", &["x", "w"], &["c"], vec![]);
    b.node("Reshape", &["c", "target"], &["f"], vec![]);
    b.node("MatMul", &["f", "fc"], &["y"], vec![]);
    let mut model = b.build();
    // `f` is declared, not a graph output (an output would freeze the channels anyway).
    let graph = model.graph.as_mut().unwrap();
    let f = graph.output.remove(1);
    graph.value_info.push(f);
    let frozen = prune_all(&model);
    assert!(
        frozen
            .iter()
            .any(|why| why.contains("not a constant int64 vector")),
        "{frozen:?}"
    );
}

/// Seed 2, cases 15929, 16513: an input that leaves its channel count open (here a negative
/// dim, read as unknown) left the first Conv's output shape uninferred, so the shape from before
/// surgery stayed and the next Conv refused the pruned weight.
#[test]
fn a_conv_after_an_input_with_open_channels_follows_surgery() {
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1, -2, 6, 6])
        .output("y", [1, 2, 2, 2])
        .output("c", [1, 4, 4, 4]);
    b.initializer(tensor_f32("w", &[4, 3, 3, 3], weights(108)));
    b.initializer(tensor_f32("w2", &[2, 4, 3, 3], weights(72)));
    b.node("Conv", &["x", "w"], &["c"], vec![]);
    b.node("Relu", &["c"], &["r"], vec![]);
    b.node("Conv", &["r", "w2"], &["y"], vec![]);
    let mut model = b.build();
    // `c` is declared, as exporters declare every value.
    let graph = model.graph.as_mut().unwrap();
    let c = graph.output.remove(1);
    graph.value_info.push(c);
    let frozen = prune_all(&model);
    assert!(frozen.iter().all(|why| !why.contains("Conv")), "{frozen:?}");
}
