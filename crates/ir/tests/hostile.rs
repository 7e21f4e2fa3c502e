//! Malformed models are refused at import with the node or tensor at fault and what to do, never
//! turned into Opaque nodes that a runtime later panics on, never a panic here.

use pare_ir::{import, IrError};
use pare_onnx::attr::{self, tensor_f32, tensor_i64};
use pare_onnx::proto::{tensor_proto::DataType, AttributeProto, ModelProto, TensorProto};
use pare_onnx::{DimSpec, GraphBuilder};

fn weights(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37).sin()).collect()
}

/// x [1,3,8,8] → Conv(w [4,3,3,3], bias [bias_len]) with the given attributes → BatchNorm → y.
fn conv_model(conv_attrs: Vec<AttributeProto>, bias_len: i64, bn_len: i64) -> ModelProto {
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1, 3, 8, 8]).output("y", ["N", "4", "H", "W"]);
    b.initializer(tensor_f32("w", &[4, 3, 3, 3], weights(108)));
    b.initializer(tensor_f32("bias", &[bias_len], weights(bias_len as usize)));
    for name in ["s", "b", "m", "v"] {
        b.initializer(tensor_f32(name, &[bn_len], vec![1.0; bn_len as usize]));
    }
    b.node("Conv", &["x", "w", "bias"], &["c"], conv_attrs);
    b.node(
        "BatchNormalization",
        &["c", "s", "b", "m", "v"],
        &["y"],
        vec![],
    );
    b.build()
}

fn refused(model: &ModelProto) -> String {
    match import(model) {
        Ok(_) => panic!("the model was accepted"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(message.contains(p), "'{p}' missing from: {message}");
    }
}

#[test]
fn the_valid_base_model_imports() {
    import(&conv_model(vec![attr::ints("pads", &[1, 1, 1, 1])], 4, 4)).unwrap();
}

#[test]
fn invalid_conv_attributes_are_refused_with_the_node_and_attribute() {
    let cases: Vec<(Vec<AttributeProto>, &[&str])> = vec![
        (
            vec![attr::ints("pads", &[1, 1])],
            &["Conv_0", "'pads'", "needs 4"],
        ),
        (
            vec![attr::ints("pads", &[1, -1, 1, 1])],
            &["Conv_0", "'pads'", "from 0 to"],
        ),
        (
            vec![attr::ints("strides", &[0, 1])],
            &["Conv_0", "'strides'", "from 1 to"],
        ),
        (
            vec![attr::ints("strides", &[-2, 1])],
            &["Conv_0", "'strides'"],
        ),
        (
            vec![attr::ints("dilations", &[1, 0])],
            &["Conv_0", "'dilations'"],
        ),
        (
            vec![attr::ints("strides", &[1, 1, 1])],
            &["Conv_0", "'strides'", "needs 2"],
        ),
        (vec![attr::int("group", 0)], &["Conv_0", "'group' is 0"]),
        (vec![attr::int("group", 2)], &["Conv_0", "group 2"]),
        (
            vec![attr::ints("kernel_shape", &[5, 5])],
            &["Conv_0", "kernel_shape", "[3, 3]"],
        ),
        (
            vec![attr::string("auto_pad", "SAME")],
            &["Conv_0", "auto_pad"],
        ),
        (
            vec![attr::float("group", 1.0)],
            &["Conv_0", "'group' has type FLOAT"],
        ),
    ];
    for (attrs, parts) in cases {
        assert_names(&refused(&conv_model(attrs, 4, 4)), parts);
    }
}

#[test]
fn huge_attributes_overflow_no_arithmetic() {
    let big = i64::MAX / 2;
    for attrs in [
        vec![attr::ints("dilations", &[big, big])],
        vec![attr::ints("pads", &[big, big, big, big])],
        // Fits in memory arithmetic, not in memory: 4 × 2^40 × 10 elements.
        vec![attr::ints("pads", &[1 << 40, 1, 0, 1])],
    ] {
        assert_names(&refused(&conv_model(attrs, 4, 4)), &["Conv_0"]);
    }
    // Valid, if odd: one output pixel per axis.
    let strides = vec![
        attr::ints("strides", &[1 << 30, 1 << 30]),
        attr::string("auto_pad", "SAME_UPPER"),
    ];
    import(&conv_model(strides, 4, 4)).unwrap();
}

#[test]
fn wrong_length_biases_and_batchnorm_vectors_are_refused() {
    assert_names(
        &refused(&conv_model(vec![], 5, 4)),
        &["Conv_0", "bias", "[4]"],
    );
    assert_names(
        &refused(&conv_model(vec![], 4, 3)),
        &["BatchNormalization_1", "scale", "[4]"],
    );
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [DimSpec::from("N"), 6.into()])
        .output("y", [DimSpec::from("N"), 2.into()]);
    b.initializer(tensor_f32("w", &[6, 2], weights(12)));
    b.initializer(tensor_f32("c", &[3], weights(3)));
    b.node("Gemm", &["x", "w", "c"], &["y"], vec![]);
    assert_names(&refused(&b.build()), &["Gemm_0", "C has shape [3]"]);
}

#[test]
fn non_float_weights_are_refused() {
    let mut model = conv_model(vec![], 4, 4);
    let graph = model.graph.as_mut().unwrap();
    graph.initializer[0] = TensorProto {
        name: Some("w".into()),
        dims: vec![4, 3, 3, 3],
        data_type: Some(DataType::String as i32),
        string_data: vec![b"x".to_vec(); 108],
        ..Default::default()
    };
    assert_names(&refused(&model), &["Conv_0", "'w'", "STRING"]);
    let mut model = conv_model(vec![], 4, 4);
    model.graph.as_mut().unwrap().initializer[0] = tensor_i64("w", &[4, 3, 3, 3], vec![1; 108]);
    assert_names(&refused(&model), &["Conv_0", "'w'", "INT64"]);
}

#[test]
fn fp16_data_of_the_wrong_length_is_refused() {
    let mut model = conv_model(vec![], 4, 4);
    model.graph.as_mut().unwrap().initializer.push(TensorProto {
        name: Some("half".into()),
        dims: vec![10],
        data_type: Some(DataType::Float16 as i32),
        raw_data: Some(vec![0; 7]),
        ..Default::default()
    });
    assert_names(&refused(&model), &["'half'", "7 bytes", "FLOAT16", "20"]);
}

#[test]
fn overflowing_dims_name_the_tensor() {
    let mut model = conv_model(vec![], 4, 4);
    let huge = 1 << 32;
    model.graph.as_mut().unwrap().initializer.push(tensor_f32(
        "absurd",
        &[huge, huge, huge],
        vec![],
    ));
    assert_names(&refused(&model), &["'absurd'", "more elements than memory"]);
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1i64 << 40, 1 << 40]).output("y", ["N"]);
    b.node("Relu", &["x"], &["y"], vec![]);
    assert_names(&refused(&b.build()), &["'x'", "more than 2^30"]);
}

#[test]
fn a_constant_node_without_output_is_refused() {
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1, 2]).output("y", [1, 2]);
    b.node(
        "Constant",
        &[],
        &[],
        vec![attr::tensor("value", tensor_f32("k", &[2], vec![1.0, 2.0]))],
    );
    b.node("Relu", &["x"], &["y"], vec![]);
    assert_names(&refused(&b.build()), &["Constant_0", "0 outputs"]);
}

#[test]
fn an_unsupported_opset_is_refused_with_what_to_do() {
    let mut model = conv_model(vec![], 4, 4);
    model.opset_import[0].version = Some(99);
    assert_names(&refused(&model), &["opset 99", "convert"]);
}

#[test]
fn an_initializer_named_like_the_only_input_is_named() {
    let mut model = conv_model(vec![], 4, 4);
    let graph = model.graph.as_mut().unwrap();
    graph
        .initializer
        .push(tensor_f32("x", &[1, 3, 8, 8], weights(192)));
    let e = import(&model).unwrap_err();
    assert!(matches!(e, IrError::InputIsInitializer { .. }), "{e}");
    assert_names(&e.to_string(), &["'x'", "rename"]);
}

#[test]
fn an_unsupported_op_upstream_is_named_where_shapes_are_lost() {
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1, 4]).output("y", [1, 4]);
    b.node("Relu", &["x"], &["r"], vec![]);
    b.node("If", &["cond"], &["branch"], vec![]);
    b.initializer(TensorProto {
        name: Some("cond".into()),
        data_type: Some(DataType::Bool as i32),
        int32_data: vec![1],
        ..Default::default()
    });
    b.node("Relu", &["branch"], &["z"], vec![]);
    b.node("Mul", &["r", "z"], &["y"], vec![]);
    assert_names(
        &refused(&b.build()),
        &["Mul_3", "second input", "'If_1' (If)", "does not model"],
    );
}

/// A chain of 100,000 Relu nodes listed last to first: sorting must not be quadratic (this took
/// minutes before). No time is asserted; the test completing is the check.
#[test]
fn a_large_unsorted_graph_sorts() {
    let n = 100_000;
    let mut b = GraphBuilder::new("t", 17);
    b.input("v0", [DimSpec::from("N"), 4.into()])
        .output(&format!("v{n}"), [DimSpec::from("N"), 4.into()]);
    // Relu and Sigmoid alternate, so no run of Relus folds away.
    for i in (0..n).rev() {
        b.node(
            if i % 2 == 0 { "Relu" } else { "Sigmoid" },
            &[&format!("v{i}")],
            &[&format!("v{}", i + 1)],
            vec![],
        );
    }
    let graph = import(&b.build()).unwrap();
    assert_eq!(graph.nodes.len(), n);
    assert_eq!(graph.nodes[0].name, format!("Relu_{}", n - 1));
}

#[test]
fn missing_inputs_outputs_and_axes_out_of_range_are_refused() {
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1, 3, 8, 8]).output("y", [1, 3, 8, 8]);
    b.node(
        "Conv",
        &["x"],
        &["y"],
        vec![attr::ints("kernel_shape", &[1, 1])],
    );
    assert_names(&refused(&b.build()), &["Conv_0", "input 1 is missing"]);

    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1, 4]).output("y", [1, 4]);
    b.node("Add", &["x", ""], &["y"], vec![]);
    assert_names(&refused(&b.build()), &["Add_0", "input 1 is missing"]);

    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1, 4]).output("y", [1, 4]);
    b.node("Relu", &["x", "x"], &["y"], vec![]);
    assert_names(&refused(&b.build()), &["Relu_0", "at most 1"]);

    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1, 4]).output("y", [1, 4]);
    b.node("Relu", &["x"], &[], vec![]);
    b.node("Relu", &["x"], &["y"], vec![]);
    assert_names(&refused(&b.build()), &["Relu_0", "no outputs"]);

    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1, 4]).output("y", [1, 4]);
    b.node("Softmax", &["x"], &["y"], vec![attr::int("axis", i64::MAX)]);
    assert_names(&refused(&b.build()), &["Softmax_0", "axis", "out of range"]);
}

#[test]
fn a_run_of_relus_becomes_one_relu_that_reads_the_same_input() {
    // x → Relu × 3000 → y, and a second output read from the middle of the run: the run folds to
    // one Relu per output (tract's optimiser is quadratic in such runs), both reading x.
    let mut b = GraphBuilder::new("relus", 17);
    b.input("x", [1, 3, 8, 8]).output("y", [1, 3, 8, 8]);
    b.output("mid", [1, 3, 8, 8]);
    let mut previous = "x".to_string();
    for i in 0..3000 {
        let out = match i {
            2999 => "y".to_string(),
            1500 => "mid".to_string(),
            _ => format!("r{i}"),
        };
        b.node("Relu", &[&previous], &[&out], vec![]);
        previous = out;
    }
    let graph = import(&b.build()).unwrap();
    assert_eq!(graph.node_ids().count(), 2);
    for id in graph.node_ids() {
        let node = graph.node(id);
        assert!(matches!(node.op, pare_ir::Op::Relu));
        assert_eq!(graph.value(node.inputs[0].unwrap()).name, "x");
    }
}

/// Found by `cargo xtask fuzz` (seed 1, case 6232): a Reshape target of shape [2, 1] was read as
/// a vector, and surgery indexed it as one and panicked. ONNX requires a vector.
#[test]
fn a_reshape_target_that_is_not_a_vector_is_refused() {
    let mut b = GraphBuilder::new("t", 17);
    b.input("x", [1, 4, 2, 2]).output("y", [1, 16]);
    b.initializer(tensor_i64("shape", &[2, 1], vec![1, 16]));
    b.node("Reshape", &["x", "shape"], &["y"], vec![]);
    assert_names(
        &refused(&b.build()),
        &["Reshape_0", "must be a vector", "[2, 1]"],
    );
}
