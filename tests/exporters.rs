//! Models as other exporters write them: open image dimensions, weights computed at run time,
//! and the idioms PyTorch, TensorFlow and Paddle converters use in place of pare's typed ops
//! (bias as a separate Add, HardSwish and HardSigmoid spelt out, MatMul + Add for Gemm, a Pad
//! before a Conv, Shape → Reshape, Squeeze before the classifier). Once the input shape is fixed
//! they must import with no Opaque node, group their channels, survive surgery in tract, train,
//! and export with the batch still open.

mod common;
mod properties;

use pare_ir::{Dim, Graph, Op};
use pare_onnx::attr::{self, tensor_f32, tensor_i64};
use pare_onnx::proto::ModelProto;
use pare_onnx::{DimSpec, GraphBuilder};
use pare_prune::analyze;
use pare_verify::TractModel;
use properties::{
    assert_forward_matches_tract, assert_one_training_step, check_surgery, image, weights,
};

/// How the exporter flattens before the classifier.
#[derive(Clone, Copy, Debug)]
enum Head {
    /// Shape → Gather → Unsqueeze → Concat([n, -1]) → Reshape, as PyTorch's `x.view(x.size(0), -1)`.
    ShapeReshape,
    /// Squeeze of the pooled spatial axes.
    Squeeze,
    /// No pooling: Flatten of the whole feature map, whose width depends on the image size.
    Flatten,
}

impl Head {
    /// Features the classifier reads from the 8 channels of a 12×12 image.
    fn features(self) -> i64 {
        match self {
            Head::ShapeReshape | Head::Squeeze => 8,
            Head::Flatten => 8 * 12 * 12,
        }
    }
}

fn scalar(b: &mut GraphBuilder, name: &str, v: f32) {
    b.initializer(tensor_f32(name, &[], vec![v]));
}

/// x [N, 3, H, W] → Pad → Conv (no bias) → Add [1,8,1,1] → HardSwish as x·Clip(x+3, 0, 6)/6 →
/// Conv (weight = raw × scale, bias from ConstantOfShape) → HardSigmoid as Clip(x/6 + 0.5, 0, 1)
/// → GlobalAveragePool (but for the Flatten head) → head → MatMul (weight = Transpose of a constant) + Add → y [N, 4].
fn foreign_model(head: Head) -> ModelProto {
    let mut b = GraphBuilder::new("foreign", 17);
    let dims = |v: &[&str]| v.iter().map(|&d| DimSpec::from(d)).collect::<Vec<_>>();
    b.input(
        "x",
        [
            DimSpec::from("N"),
            3.into(),
            "height".into(),
            "width".into(),
        ],
    );
    b.output("y", dims(&["N", "4"]));
    b.initializer(tensor_i64("pads", &[8], vec![0, 0, 1, 1, 0, 0, 1, 1]));
    b.node("Pad", &["x", "pads"], &["padded"], vec![]);
    b.initializer(tensor_f32("w1", &[8, 3, 3, 3], weights(216, 1.0)));
    b.node("Conv", &["padded", "w1"], &["c1"], vec![]);
    b.initializer(tensor_f32("b1", &[1, 8, 1, 1], weights(8, 2.0)));
    b.node("Add", &["c1", "b1"], &["a1"], vec![]);
    scalar(&mut b, "three", 3.0);
    scalar(&mut b, "zero", 0.0);
    scalar(&mut b, "six", 6.0);
    scalar(&mut b, "one", 1.0);
    scalar(&mut b, "half", 0.5);
    b.node("Add", &["a1", "three"], &["t"], vec![]);
    b.node("Clip", &["t", "zero", "six"], &["cl"], vec![]);
    b.node("Mul", &["a1", "cl"], &["m"], vec![]);
    b.node("Div", &["m", "six"], &["hs"], vec![]);
    b.initializer(tensor_f32("w2raw", &[8, 8, 3, 3], weights(576, 3.0)));
    b.initializer(tensor_f32("w2scale", &[8, 1, 1, 1], weights(8, 4.0)));
    b.node("Mul", &["w2raw", "w2scale"], &["w2"], vec![]);
    b.initializer(tensor_i64("b2shape", &[1], vec![8]));
    b.node(
        "ConstantOfShape",
        &["b2shape"],
        &["b2"],
        vec![attr::tensor("value", tensor_f32("v", &[1], vec![0.1]))],
    );
    b.node(
        "Conv",
        &["hs", "w2", "b2"],
        &["c2"],
        vec![attr::ints("pads", &[1, 1, 1, 1])],
    );
    b.node("Div", &["c2", "six"], &["d"], vec![]);
    b.node("Add", &["d", "half"], &["e"], vec![]);
    b.node("Clip", &["e", "zero", "one"], &["hsig"], vec![]);
    if !matches!(head, Head::Flatten) {
        b.node("GlobalAveragePool", &["hsig"], &["gap"], vec![]);
    }
    match head {
        Head::ShapeReshape => {
            b.node("Shape", &["gap"], &["shape"], vec![]);
            b.initializer(tensor_i64("i0", &[], vec![0]));
            b.node(
                "Gather",
                &["shape", "i0"],
                &["n"],
                vec![attr::int("axis", 0)],
            );
            b.initializer(tensor_i64("axes0", &[1], vec![0]));
            b.node("Unsqueeze", &["n", "axes0"], &["n1"], vec![]);
            b.initializer(tensor_i64("minus1", &[1], vec![-1]));
            b.node(
                "Concat",
                &["n1", "minus1"],
                &["target"],
                vec![attr::int("axis", 0)],
            );
            b.node("Reshape", &["gap", "target"], &["flat"], vec![]);
        }
        Head::Squeeze => {
            b.initializer(tensor_i64("axes23", &[2], vec![2, 3]));
            b.node("Squeeze", &["gap", "axes23"], &["flat"], vec![]);
        }
        Head::Flatten => {
            b.node("Flatten", &["hsig"], &["flat"], vec![]);
        }
    }
    let features = head.features();
    b.initializer(tensor_f32(
        "wfc_t",
        &[4, features],
        weights(4 * features as usize, 5.0),
    ));
    b.node(
        "Transpose",
        &["wfc_t"],
        &["wfc"],
        vec![attr::ints("perm", &[1, 0])],
    );
    b.node("MatMul", &["flat", "wfc"], &["mm"], vec![]);
    b.initializer(tensor_f32("bfc", &[4], weights(4, 6.0)));
    b.node("Add", &["mm", "bfc"], &["y"], vec![]);
    b.build()
}

#[test]
fn open_input_shapes_and_exporter_idioms_are_followed_once_the_shape_is_fixed() {
    for head in [Head::ShapeReshape, Head::Squeeze, Head::Flatten] {
        let name = format!("{head:?}");
        let mut graph = pare_ir::import(&foreign_model(head)).unwrap();
        // Run-time weights fold even before the input shape is known.
        assert!(
            !graph
                .nodes
                .iter()
                .any(|n| matches!(n.op.op_type(), "ConstantOfShape" | "Transpose")),
            "{name}: constant subgraphs left"
        );
        assert!(pare_ir::input_shape_is_open(&graph));
        // With the image size open, channels still flow from conv1 into conv2 and, after a
        // pool, into the classifier; a Flatten of the whole map cannot be followed (its width
        // depends on the image size), and the frozen group says why. MACs are unknown.
        let open = analyze(&graph);
        let prunable = open.groups.iter().filter(|g| g.prunable()).count();
        let expected = if matches!(head, Head::Flatten) { 1 } else { 2 };
        assert_eq!(prunable, expected, "{name}: {:?}", open.groups);
        assert!(open
            .groups
            .iter()
            .all(|g| g.prunable() || !g.frozen.is_empty()));
        let macs = |g: &Graph| pare_ir::node_costs(g).iter().map(|c| c.macs).sum::<u64>();
        let open_macs = macs(&graph);

        pare_ir::fix_input_shape(&mut graph, &[3, 12, 12]).unwrap();
        let opaque: Vec<&str> = graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Opaque(_)))
            .map(|n| n.name.as_str())
            .collect();
        assert!(opaque.is_empty(), "{name}: still opaque: {opaque:?}");
        let input = graph.value(graph.inputs[0]).shape.clone().unwrap();
        assert_eq!(
            input.0[0],
            Dim::Sym("N".into()),
            "{name}: the batch stays open"
        );
        assert_eq!(input.to_known(), None);
        assert!(macs(&graph) > open_macs, "{name}: MACs not counted");
        // Both 8-channel groups (conv1 through its bias Add and HardSwish, conv2 through its
        // HardSigmoid, pool and head into the MatMul) can be pruned.
        let groups = analyze(&graph);
        let widths: Vec<usize> = groups
            .groups
            .iter()
            .filter(|g| g.prunable())
            .map(|g| g.channels)
            .collect();
        assert_eq!(widths, vec![8, 8], "{name}: {:?}", groups.groups);

        let x = image(2, 3, 12);
        assert_forward_matches_tract(&name, &graph, &x);
        check_surgery(&name, &graph, &x, 3, 1e-5);
        assert_one_training_step(&name, &graph, &image(4, 3, 12), 4);
        // The exported model still takes any batch size.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fixed.onnx");
        pare_onnx::write_model(&path, &pare_ir::export(&graph)).unwrap();
        for batch in [1, 3] {
            let x = image(batch, 3, 12);
            let out = TractModel::load(&path, x.shape()).unwrap().run(x.view());
            assert_eq!(out.unwrap().nrows(), batch);
        }
    }
}

#[test]
fn inspect_takes_the_input_shape_and_says_why_groups_are_frozen_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.onnx");
    pare_onnx::write_model(&path, &foreign_model(Head::Flatten)).unwrap();
    let path = path.to_str().unwrap();
    let groups = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = common::compress(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["groups"].as_array().unwrap().clone()
    };
    let open = groups(&["inspect", path, "--json"]);
    let frozen: Vec<_> = open.iter().filter(|g| g["prunable"] == false).collect();
    assert!(!frozen.is_empty());
    assert!(frozen
        .iter()
        .all(|g| !g["frozen_because"].as_array().unwrap().is_empty()));
    let fixed = groups(&["inspect", path, "--json", "--input-shape", "3x12x12"]);
    assert_eq!(fixed.iter().filter(|g| g["prunable"] == true).count(), 2);
    let bad = common::compress(&["inspect", path, "--input-shape", "3x12"]);
    assert!(!bad.status.success());
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(
        message.contains("--input-shape") && message.contains("rank"),
        "{message}"
    );
}

#[test]
fn compress_takes_an_open_input_shape_from_the_data_and_keeps_the_batch_open() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::open_lenet(dir.path());
    let graph = pare_ir::import(&pare_onnx::read_model(&model).unwrap()).unwrap();
    assert!(pare_ir::input_shape_is_open(&graph));
    let out = dir.path().join("small.onnx");
    let report = dir.path().join("report.json");
    let o = common::compress(&[
        model.to_str().unwrap(),
        "--data",
        common::mnist().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--strategy",
        "oneshot",
        "--target-macs",
        "0.6",
        "--epochs",
        "1",
        "--latency-runs",
        "1",
        "--max-drop",
        "100",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let (before, after) = (
        report["original"]["macs"].as_u64().unwrap(),
        report["compressed"]["macs"].as_u64().unwrap(),
    );
    assert!(
        before > 0 && after * 10 <= before * 6,
        "MACs {before} -> {after}"
    );
    let written = pare_ir::import(&pare_onnx::read_model(&out).unwrap()).unwrap();
    let input = written.value(written.inputs[0]).shape.clone().unwrap();
    assert!(matches!(input.0[0], Dim::Sym(_)), "batch open: {input}");
    assert_eq!(
        input.0[1..],
        [Dim::Known(1), Dim::Known(28), Dim::Known(28)]
    );
    for batch in [1, 5] {
        let x = image(batch, 1, 28);
        let y = TractModel::load(&out, x.shape())
            .unwrap()
            .run(x.view())
            .unwrap();
        assert_eq!(y.nrows(), batch);
    }
}
