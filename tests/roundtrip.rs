//! Import → export round trips, checked by tract on the written files.

use ndarray::{s, Array4};
use pare_ir::{Op, ValueSource};
use pare_onnx::proto::ModelProto;
use pare_onnx::{attr, GraphBuilder};
mod common;
use common::{mnist, shipped_models};
use pare_verify::{max_abs_diff, TractModel};
use std::collections::BTreeSet;
use std::path::Path;

/// Runs both files in tract on the same images and returns the largest logit difference.
fn tract_difference(a: &Path, b: &Path, images: &Array4<f32>) -> f32 {
    let shape = images.shape().to_vec();
    let ra = TractModel::load(a, &shape)
        .unwrap()
        .run(images.view())
        .unwrap();
    let rb = TractModel::load(b, &shape)
        .unwrap()
        .run(images.view())
        .unwrap();
    max_abs_diff(&ra, &rb)
}

fn write(dir: &Path, name: &str, model: &ModelProto) -> std::path::PathBuf {
    let path = dir.join(name);
    pare_onnx::write_model(&path, model).unwrap();
    path
}

#[test]
fn every_shipped_model_survives_import_and_export_in_tract() {
    let test = pare_data::load_dir(&mnist()).unwrap().test.head(256);
    let dir = tempfile::tempdir().unwrap();
    for path in shipped_models() {
        let original = pare_onnx::read_model(&path).unwrap();
        let graph = pare_ir::import(&original).unwrap();
        for v in &graph.values {
            assert!(
                v.shape.is_some(),
                "{}: value '{}' has no shape",
                path.display(),
                v.name
            );
        }
        let exported = pare_ir::export(&graph);
        let out = write(dir.path(), "exported.onnx", &exported);
        let diff = tract_difference(&path, &out, &test.images);
        assert!(diff <= 1e-5, "{}: logits differ by {diff}", path.display());

        // What export must keep.
        assert_eq!(exported.opset_import, original.opset_import);
        assert_eq!(exported.producer_name, original.producer_name);
        assert_eq!(exported.producer_version, original.producer_version);
        assert_eq!(exported.metadata_props, original.metadata_props);
        let (g0, g1) = (
            original.graph.as_ref().unwrap(),
            exported.graph.as_ref().unwrap(),
        );
        assert_eq!(g1.name, g0.name);
        let names = |g: &pare_onnx::proto::GraphProto| {
            g.node
                .iter()
                .map(|n| (n.name.clone(), n.doc_string.clone(), n.output.clone()))
                .collect::<BTreeSet<_>>()
        };
        // Every node of the original is in the export with its name, doc string and outputs,
        // except the Constant nodes import turns into initializers.
        let constants: BTreeSet<_> = g0
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("Constant"))
            .map(|n| n.output.clone())
            .collect();
        let kept: BTreeSet<_> = names(g0)
            .into_iter()
            .filter(|n| !constants.contains(&n.2))
            .collect();
        assert_eq!(names(g1), kept, "{}", path.display());
        assert_eq!(
            g1.input,
            g0.input,
            "{}: inputs are declared as they were",
            path.display()
        );
        assert_eq!(
            g1.output,
            g0.output,
            "{}: outputs are declared as they were",
            path.display()
        );
        let declared = |g: &pare_onnx::proto::GraphProto| {
            let mut v: Vec<_> = g
                .value_info
                .iter()
                .map(|v| {
                    (
                        v.name.clone(),
                        v.doc_string.clone(),
                        v.metadata_props.clone(),
                    )
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(declared(g1), declared(g0), "{}: value_info", path.display());
    }
}

#[test]
fn export_is_written_atomically_and_never_over_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::root().join("models/lenet5_opset17.onnx");
    let copy = dir.path().join("m.onnx");
    std::fs::copy(&src, &copy).unwrap();
    let graph = pare_ir::import(&pare_onnx::read_model(&copy).unwrap()).unwrap();
    let out = write(dir.path(), "out.onnx", &pare_ir::export(&graph));
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&src).unwrap());
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 2, "no temporary file left: {entries:?}");
    assert!(out.exists());
}

/// x [N,2,4,4] → Conv(3 ch) → Relu → Shape → Gather(0) → Unsqueeze → Concat(n, -1) → Reshape → Gemm
fn shape_subgraph_model(opset: i64) -> ModelProto {
    let mut b = GraphBuilder::new("shape_chain", opset);
    b.input(
        "x",
        ["N".into(), 2.into(), 4.into(), 4.into()]
            .into_iter()
            .collect::<Vec<pare_onnx::DimSpec>>(),
    );
    b.initializer(attr::tensor_f32(
        "w",
        &[3, 2, 3, 3],
        (0..54).map(|i| (i as f32 * 0.37).sin()).collect(),
    ));
    b.initializer(attr::tensor_f32(
        "fc",
        &[48, 5],
        (0..240).map(|i| (i as f32 * 0.11).cos()).collect(),
    ));
    b.initializer(attr::tensor_i64("zero", &[], vec![0]));
    b.initializer(attr::tensor_i64("minus_one", &[1], vec![-1]));
    b.node(
        "Conv",
        &["x", "w"],
        &["c"],
        vec![attr::ints("pads", &[1, 1, 1, 1])],
    );
    b.node("Relu", &["c"], &["r"], vec![]);
    b.node("Shape", &["r"], &["shape"], vec![]);
    b.node(
        "Gather",
        &["shape", "zero"],
        &["n"],
        vec![attr::int("axis", 0)],
    );
    if opset >= 13 {
        b.initializer(attr::tensor_i64("axes", &[1], vec![0]));
        b.node("Unsqueeze", &["n", "axes"], &["n1"], vec![]);
    } else {
        b.node("Unsqueeze", &["n"], &["n1"], vec![attr::ints("axes", &[0])]);
    }
    b.node(
        "Concat",
        &["n1", "minus_one"],
        &["target"],
        vec![attr::int("axis", 0)],
    );
    b.node("Reshape", &["r", "target"], &["flat"], vec![]);
    b.node("Gemm", &["flat", "fc"], &["y"], vec![]);
    b.output(
        "y",
        ["N".into(), 5.into()]
            .into_iter()
            .collect::<Vec<pare_onnx::DimSpec>>(),
    );
    b.build()
}

fn images(n: usize, c: usize, hw: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, c, hw, hw), |(a, b, y, x)| {
        ((a * 31 + b * 7 + y * 3 + x) as f32 * 0.173).sin()
    })
}

#[test]
fn shape_subgraphs_fold_to_a_batch_agnostic_constant() {
    let dir = tempfile::tempdir().unwrap();
    for opset in [11, 13, 17] {
        let model = shape_subgraph_model(opset);
        let original = write(dir.path(), "orig.onnx", &model);
        let graph = pare_ir::import(&model).unwrap();
        let ops: Vec<&str> = graph.nodes.iter().map(|n| n.op.op_type()).collect();
        assert_eq!(ops, ["Conv", "Relu", "Reshape", "Gemm"], "opset {opset}");
        let reshape = graph
            .nodes
            .iter()
            .find(|n| matches!(n.op, Op::Reshape { .. }))
            .unwrap();
        let target = graph.value(reshape.inputs[1].unwrap());
        let ValueSource::Initializer(t) = &target.source else {
            panic!("target not folded")
        };
        assert_eq!(t.as_i64().unwrap().as_slice().unwrap(), &[0, -1]);
        assert_eq!(
            graph
                .value(reshape.outputs[0])
                .shape
                .as_ref()
                .unwrap()
                .to_string(),
            "[N, 48]"
        );
        let exported = write(dir.path(), "folded.onnx", &pare_ir::export(&graph));
        for batch in [1, 3] {
            let diff = tract_difference(&original, &exported, &images(batch, 2, 4));
            assert!(diff <= 1e-5, "opset {opset}, batch {batch}: {diff}");
        }
    }
}

#[test]
fn constant_nodes_legacy_inputs_and_unknown_ops_export_faithfully() {
    // IR version 3 style: weights in Constant nodes and an initializer also listed as an input;
    // Tanh is not modelled by the IR, so it must travel as an Opaque node.
    let mut b = GraphBuilder::new("legacy", 9);
    b.input("x", [1i64, 2, 4, 4]);
    b.input("bias", [3i64]);
    b.initializer(attr::tensor_f32("bias", &[3], vec![0.1, -0.2, 0.3]));
    b.node(
        "Constant",
        &[],
        &["w"],
        vec![attr::tensor(
            "value",
            attr::tensor_f32("w", &[3, 2, 1, 1], vec![1.0, 2.0, -1.0, 0.5, 0.25, -0.75]),
        )],
    );
    b.node(
        "Conv",
        &["x", "w", "bias"],
        &["c"],
        vec![attr::ints("kernel_shape", &[1, 1])],
    );
    b.node("Tanh", &["c"], &["t"], vec![]);
    b.node("GlobalAveragePool", &["t"], &["y"], vec![]);
    b.output("y", [1i64, 3, 1, 1]);
    let mut model = b.build();
    model.ir_version = Some(3);
    let graph = pare_ir::import(&model).unwrap();
    assert_eq!(
        graph.inputs.len(),
        1,
        "an initializer listed as input is not a runtime input"
    );
    let tanh = graph
        .nodes
        .iter()
        .find(|n| n.op.op_type() == "Tanh")
        .unwrap();
    assert!(matches!(tanh.op, Op::Opaque(_)));
    let exported = pare_ir::export(&graph);
    let original_tanh = model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .find(|n| n.op_type.as_deref() == Some("Tanh"));
    let exported_tanh = exported
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .find(|n| n.op_type.as_deref() == Some("Tanh"));
    assert_eq!(
        original_tanh, exported_tanh,
        "the opaque node is exported untouched"
    );
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.onnx", &model);
    let bpath = write(dir.path(), "b.onnx", &exported);
    let x = images(1, 2, 4);
    assert!(tract_difference(&a, &bpath, &x) <= 1e-6);
    // The first image of a batch of one, to be sure the logits are not all zero.
    let out = TractModel::load(&bpath, &[1, 2, 4, 4])
        .unwrap()
        .run(x.slice(s![..1, .., .., ..]))
        .unwrap();
    assert!(out.iter().any(|v| v.abs() > 1e-3));
}
