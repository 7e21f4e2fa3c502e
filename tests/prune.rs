//! Channel groups and surgery. The property: zero what a random subset of channels feeds into
//! (the consumers' input slices), so those channels carry nothing; pruning exactly them must not
//! change tract's outputs on the exported file.

mod common;
mod properties;

use common::shipped_models;
use pare_ir::{Graph, Op};
use pare_onnx::proto::ModelProto;
use pare_onnx::{attr, GraphBuilder};
use pare_prune::{analyze, PruningPlan};
use properties::{check_surgery, image, weights};

#[test]
fn surgery_on_every_shipped_model_changes_nothing_that_carried_nothing() {
    let test = pare_data::load_dir(&common::mnist()).unwrap().test.head(16);
    for path in shipped_models() {
        let graph = pare_ir::import(&pare_onnx::read_model(&path).unwrap()).unwrap();
        let prunable = check_surgery(&path.display().to_string(), &graph, &test.images, 3, 1e-5);
        assert!(
            prunable >= 2,
            "{}: only {prunable} prunable groups",
            path.display()
        );
    }
}

#[test]
fn shipped_models_have_the_expected_groups() {
    let load = |name: &str| {
        pare_ir::import(&pare_onnx::read_model(&common::root().join("models").join(name)).unwrap())
            .unwrap()
    };
    let prunable = |g: &Graph| {
        analyze(g)
            .groups
            .iter()
            .filter(|g| g.prunable())
            .map(|g| g.channels)
            .collect::<Vec<_>>()
    };
    // LeNet-5: conv1 (6), conv2 (16, flattened into fc1 as 16 blocks of 25), fc1 (120), fc2 (84).
    assert_eq!(prunable(&load("lenet5_opset17.onnx")), vec![6, 16, 120, 84]);
    assert_eq!(
        prunable(&load("lenet5_dynamo_extdata_opset18.onnx")),
        vec![6, 16, 120, 84]
    );
    assert_eq!(
        prunable(&load("vggbn_keepbn_opset17.onnx")),
        vec![32, 64, 128, 128]
    );
    // ResNet-20: the stem and stage-1 residual stream (16), 3 block-internal groups per stage,
    // and the streams of stages 2 and 3 (32, 64) joined through their projections.
    let mut resnet = prunable(&load("resnet20_opset17.onnx"));
    resnet.sort_unstable();
    assert_eq!(resnet, vec![16, 16, 16, 16, 32, 32, 32, 32, 64, 64, 64, 64]);
    // The logits' group reaches the graph output.
    let lenet = load("lenet5_opset17.onnx");
    let groups = analyze(&lenet);
    let last = groups.groups.iter().find(|g| g.channels == 10).unwrap();
    assert!(
        last.frozen.iter().any(|f| f.contains("graph output")),
        "{:?}",
        last.frozen
    );
}

#[allow(clippy::too_many_arguments)] // a test helper that reads like the layer it adds
fn conv(
    b: &mut GraphBuilder,
    name: &str,
    input: &str,
    out: &str,
    c_out: i64,
    c_in: i64,
    k: i64,
    group: i64,
    seed: f32,
) {
    let w = format!("{name}.w");
    let bias = format!("{name}.b");
    b.initializer(attr::tensor_f32(
        &w,
        &[c_out, c_in / group, k, k],
        weights((c_out * c_in / group * k * k) as usize, seed),
    ));
    b.initializer(attr::tensor_f32(
        &bias,
        &[c_out],
        weights(c_out as usize, seed + 0.5),
    ));
    b.node(
        "Conv",
        &[input, &w, &bias],
        &[out],
        vec![attr::ints("pads", &[k / 2; 4]), attr::int("group", group)],
    );
}

fn head(b: &mut GraphBuilder, input: &str, c: i64) {
    b.node("GlobalAveragePool", &[input], &["gap"], vec![]);
    b.node("Flatten", &["gap"], &["flat"], vec![]);
    b.initializer(attr::tensor_f32(
        "fc.w",
        &[4, c],
        weights(4 * c as usize, 9.0),
    ));
    b.node(
        "Gemm",
        &["flat", "fc.w"],
        &["y"],
        vec![attr::int("transB", 1)],
    );
    b.output(
        "y",
        ["N".into(), 4.into()]
            .into_iter()
            .collect::<Vec<pare_onnx::DimSpec>>(),
    );
}

fn input(b: &mut GraphBuilder) {
    b.input(
        "x",
        ["N".into(), 3.into(), 8.into(), 8.into()]
            .into_iter()
            .collect::<Vec<pare_onnx::DimSpec>>(),
    );
}

/// MobileNet-style: conv → BN → ReLU6 → depthwise conv → ReLU6 → 1×1 conv → head.
fn depthwise_graph() -> ModelProto {
    let mut b = GraphBuilder::new("depthwise", 17);
    input(&mut b);
    conv(&mut b, "c1", "x", "c1", 8, 3, 3, 1, 1.0);
    for (n, v) in [
        ("g", vec![1.0; 8]),
        ("be", weights(8, 2.0)),
        ("m", weights(8, 3.0)),
        ("v", vec![1.5; 8]),
    ] {
        b.initializer(attr::tensor_f32(n, &[8], v));
    }
    b.node(
        "BatchNormalization",
        &["c1", "g", "be", "m", "v"],
        &["bn"],
        vec![],
    );
    b.initializer(attr::tensor_f32("zero", &[], vec![0.0]));
    b.initializer(attr::tensor_f32("six", &[], vec![6.0]));
    b.node("Clip", &["bn", "zero", "six"], &["r1"], vec![]);
    conv(&mut b, "dw", "r1", "dw", 8, 8, 3, 8, 4.0);
    b.node("Clip", &["dw", "zero", "six"], &["r2"], vec![]);
    conv(&mut b, "pw", "r2", "pw", 6, 8, 1, 1, 5.0);
    head(&mut b, "pw", 6);
    b.build()
}

/// Inception-style: two branches concatenated on channels, per-channel Mul, then a conv.
fn concat_graph() -> ModelProto {
    let mut b = GraphBuilder::new("concat", 17);
    input(&mut b);
    conv(&mut b, "a", "x", "a", 5, 3, 3, 1, 1.0);
    conv(&mut b, "b", "x", "b", 7, 3, 1, 1, 2.0);
    b.node("Relu", &["a"], &["ra"], vec![]);
    b.node("Relu", &["b"], &["rb"], vec![]);
    b.node(
        "Concat",
        &["ra", "rb"],
        &["cat"],
        vec![attr::int("axis", 1)],
    );
    conv(&mut b, "c", "cat", "c", 6, 12, 3, 1, 3.0);
    b.initializer(attr::tensor_f32("scale", &[1, 6, 1, 1], weights(6, 4.0)));
    b.node("Mul", &["c", "scale"], &["s"], vec![]);
    b.node("Relu", &["s"], &["rs"], vec![]);
    head(&mut b, "rs", 6);
    b.build()
}

/// Squeeze-and-excitation with a residual Add.
fn se_graph() -> ModelProto {
    let mut b = GraphBuilder::new("se", 17);
    input(&mut b);
    conv(&mut b, "stem", "x", "stem", 8, 3, 3, 1, 1.0);
    b.node("Relu", &["stem"], &["s"], vec![]);
    conv(&mut b, "body", "s", "body", 8, 8, 3, 1, 2.0);
    b.node("GlobalAveragePool", &["body"], &["sq"], vec![]);
    conv(&mut b, "reduce", "sq", "red", 3, 8, 1, 1, 3.0);
    b.node("Relu", &["red"], &["rr"], vec![]);
    conv(&mut b, "expand", "rr", "exp", 8, 3, 1, 1, 4.0);
    b.node("HardSigmoid", &["exp"], &["gate"], vec![]);
    b.node("Mul", &["body", "gate"], &["scaled"], vec![]);
    b.node("Add", &["scaled", "s"], &["res"], vec![]);
    b.node("Relu", &["res"], &["out"], vec![]);
    head(&mut b, "out", 8);
    b.build()
}

#[test]
fn depthwise_concat_and_se_graphs_group_and_prune_correctly() {
    let x = image(2, 3, 8);
    // Depthwise: c1, BN, both ReLU6 and the depthwise conv share one group of 8.
    let g = pare_ir::import(&depthwise_graph()).unwrap();
    let groups = analyze(&g);
    let eight: Vec<_> = groups
        .groups
        .iter()
        .filter(|g| g.prunable() && g.channels == 8)
        .collect();
    assert_eq!(eight.len(), 1, "one group spans the depthwise conv");
    assert_eq!(groups.depthwise.len(), 1);
    check_surgery("depthwise", &g, &x, 4, 1e-5);
    let mut plan = PruningPlan::default();
    plan.drop_channels(eight[0].id, [1, 4, 6]);
    let mut pruned = g.clone();
    plan.apply(&mut pruned, &groups).unwrap();
    let dwnode = pruned
        .nodes
        .iter()
        .find(|n| n.name.starts_with("Conv") && matches!(&n.op, Op::Conv(c) if c.group > 1))
        .unwrap();
    let Op::Conv(c) = &dwnode.op else {
        unreachable!()
    };
    assert_eq!(
        c.group, 5,
        "the depthwise group attribute follows the channels"
    );

    // Concat: the last conv reads two groups at offsets 0 and 5.
    let g = pare_ir::import(&concat_graph()).unwrap();
    let groups = analyze(&g);
    let two_segment = groups
        .slices
        .iter()
        .find(|s| s.segments.len() == 2)
        .expect("a slice across the concat");
    assert_eq!(
        two_segment
            .segments
            .iter()
            .map(|s| s.len)
            .collect::<Vec<_>>(),
        vec![5, 7]
    );
    assert!(groups
        .slices
        .iter()
        .any(|s| s.role.contains("per-channel constant")));
    check_surgery("concat", &g, &x, 4, 1e-5);

    // SE: the expand conv's output, the body and the residual stream are one group.
    let g = pare_ir::import(&se_graph()).unwrap();
    let groups = analyze(&g);
    let stream = groups
        .groups
        .iter()
        .filter(|g| g.prunable() && g.channels == 8)
        .count();
    assert_eq!(stream, 1, "body, gate and residual are united");
    assert!(
        groups
            .groups
            .iter()
            .any(|g| g.prunable() && g.channels == 3),
        "the squeeze width is its own group"
    );
    check_surgery("se", &g, &x, 4, 1e-5);
}

#[test]
fn frozen_groups_say_why_and_refuse_plans() {
    // A Softmax over channels, a Reshape that hard-codes channels and an op pare does not model.
    let mut b = GraphBuilder::new("frozen", 17);
    input(&mut b);
    conv(&mut b, "a", "x", "a", 4, 3, 3, 1, 1.0);
    b.node("Softmax", &["a"], &["sm"], vec![attr::int("axis", 1)]);
    conv(&mut b, "b", "sm", "b", 4, 4, 3, 1, 2.0);
    b.node("Relu", &["b"], &["t"], vec![]);
    conv(&mut b, "c", "t", "c", 6, 4, 3, 1, 3.0);
    b.initializer(attr::tensor_i64("shape", &[4], vec![-1, 3, 2, 64]));
    b.node("Reshape", &["c", "shape"], &["r"], vec![]);
    b.node("Tanh", &["r"], &["y"], vec![]);
    b.output(
        "y",
        ["N".into(), 3.into(), 2.into(), 64.into()]
            .into_iter()
            .collect::<Vec<pare_onnx::DimSpec>>(),
    );
    let g = pare_ir::import(&b.build()).unwrap();
    let groups = analyze(&g);
    let reasons: Vec<String> = groups
        .groups
        .iter()
        .flat_map(|g| g.frozen.clone())
        .collect();
    for expected in [
        "normalises over channels",
        "not modelled",
        "hard-codes the channel count",
        "graph input",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected} missing from {reasons:?}"
        );
    }
    let frozen = groups
        .groups
        .iter()
        .find(|g| !g.frozen.is_empty() && g.channels == 4)
        .unwrap();
    let mut plan = PruningPlan::default();
    plan.drop_channels(frozen.id, [0]);
    assert!(plan.apply(&mut g.clone(), &groups).is_err());
    let mut everything = PruningPlan::default();
    let open = groups.groups.iter().find(|g| g.prunable());
    if let Some(open) = open {
        everything.drop_channels(open.id, 0..open.channels);
        assert!(everything
            .apply(&mut g.clone(), &groups)
            .unwrap_err()
            .to_string()
            .contains("at least one"));
    }
}

/// The strategies on the graphs the shipped models lack: RLS's P must follow every surgery
/// through depthwise convs, Concat offsets and SE gates, and the result must run in tract with
/// our forward pass's outputs.
#[test]
fn strategies_prune_the_depthwise_concat_and_se_graphs() {
    use pare_prune::strategy::Event;
    use pare_prune::{CompressConfig, Criterion, Strategy, Target};
    let data = |n: usize, seed: usize| {
        pare_data::Dataset::new(
            image(n + seed, 3, 8).slice_move(ndarray::s![seed.., .., .., ..]),
            (0..n).map(|i| (i * 7 + seed) % 4).collect(),
        )
    };
    let (train, val) = (data(96, 0), data(32, 5));
    let dir = tempfile::tempdir().unwrap();
    for (name, proto) in [
        ("depthwise", depthwise_graph()),
        ("concat", concat_graph()),
        ("se", se_graph()),
    ] {
        for (strategy, criterion) in [
            (Strategy::Rls, Criterion::Rls),
            (Strategy::Oneshot, Criterion::Rls),
            (Strategy::Oneshot, Criterion::Taylor),
        ] {
            let mut graph = pare_ir::import(&proto).unwrap();
            let config = CompressConfig {
                strategy,
                criterion,
                target: Some(Target::Macs(0.7)),
                epochs: 3,
                batch_size: 16,
                ratio: 0.2,
                // Random labels never recover for real: accept every check, so that every
                // prune event (and P's downdate through it) happens.
                accuracy_tolerance: 100.0,
                ..CompressConfig::default()
            };
            let outcome = pare_prune::compress(&mut graph, &train, &val, &config, &mut |_| {})
                .unwrap_or_else(|e| panic!("{name} {strategy:?}: {e}"));
            assert_eq!(outcome.target_met, Some(true), "{name} {strategy:?}");
            assert!(outcome
                .history
                .iter()
                .any(|h| matches!(h.event, Event::Prune { .. })));
            let x = image(4, 3, 8);
            let ours = pare_train::forward(
                &graph,
                x.clone().into_dyn(),
                pare_train::Mode::Eval,
                false,
                None,
            )
            .unwrap();
            let out = ours.value(graph.outputs[0]).unwrap().clone();
            let tract = common::tract_outputs(&graph, dir.path(), "pruned.onnx", &x);
            let diff = out
                .iter()
                .zip(tract.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff <= 1e-4,
                "{name} {strategy:?}: ours and tract differ by {diff}"
            );
        }
    }
}
