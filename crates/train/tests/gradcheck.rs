//! Whole-graph gradient check: a small graph with every op the executor trains through, its
//! backward pass compared with central finite differences of its forward pass.

use ndarray::{ArrayD, IxDyn};
use pare_ir::{Graph, Tensor, ValueSource};
use pare_onnx::{attr, GraphBuilder};
use pare_train::{backward, forward, Mode};

fn wave(n: usize, seed: f32, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + seed) * 0.7123).sin() * scale)
        .collect()
}

/// x[2,3,6,6] → Conv(4, 3×3, pad 1) → BatchNorm → HardSwish → MaxPool 2×2 (→ [2,4,3,3])
///   ├─ GlobalAveragePool → Flatten                         → [2,4]
///   └─ AveragePool 3×3 pad 1 → Reshape [0,-1] → MatMul(36×5) → LeakyRelu → [2,5]
/// Concat → Dropout → Identity → Mul by per-feature scale → Sub → Clip → Gemm(9→3, transB) → Sigmoid
/// → Div → Softmax
fn graph() -> Graph {
    let mut b = GraphBuilder::new("gradcheck", 17);
    b.input("x", [2i64, 3, 6, 6]);
    b.initializer(attr::tensor_f32("w", &[4, 3, 3, 3], wave(108, 1.0, 0.5)));
    b.initializer(attr::tensor_f32("cb", &[4], wave(4, 2.0, 0.1)));
    b.initializer(attr::tensor_f32("g", &[4], vec![1.0, 0.8, 1.2, 0.9]));
    b.initializer(attr::tensor_f32("beta", &[4], wave(4, 3.0, 0.2)));
    b.initializer(attr::tensor_f32("mean", &[4], vec![0.0; 4]));
    b.initializer(attr::tensor_f32("var", &[4], vec![1.0; 4]));
    b.initializer(attr::tensor_i64("shape", &[2], vec![0, -1]));
    b.initializer(attr::tensor_f32("mm", &[36, 5], wave(180, 4.0, 0.3)));
    b.initializer(attr::tensor_f32("scale", &[9], wave(9, 5.0, 1.0)));
    b.initializer(attr::tensor_f32("shift", &[1], vec![0.1]));
    b.initializer(attr::tensor_f32("lo", &[], vec![-2.0]));
    b.initializer(attr::tensor_f32("hi", &[], vec![2.0]));
    b.initializer(attr::tensor_f32("fc", &[3, 9], wave(27, 6.0, 0.6)));
    b.initializer(attr::tensor_f32("fcb", &[3], wave(3, 7.0, 0.1)));
    b.initializer(attr::tensor_f32("two", &[], vec![2.0]));
    b.node(
        "Conv",
        &["x", "w", "cb"],
        &["c"],
        vec![attr::ints("pads", &[1, 1, 1, 1])],
    );
    b.node(
        "BatchNormalization",
        &["c", "g", "beta", "mean", "var"],
        &["bn"],
        vec![],
    );
    b.node("HardSwish", &["bn"], &["hs"], vec![]);
    b.node(
        "MaxPool",
        &["hs"],
        &["mp"],
        vec![
            attr::ints("kernel_shape", &[2, 2]),
            attr::ints("strides", &[2, 2]),
        ],
    );
    b.node("GlobalAveragePool", &["mp"], &["gap"], vec![]);
    b.node("Flatten", &["gap"], &["f1"], vec![]);
    b.node(
        "AveragePool",
        &["mp"],
        &["ap"],
        vec![
            attr::ints("kernel_shape", &[3, 3]),
            attr::ints("pads", &[1, 1, 1, 1]),
        ],
    );
    b.node("Reshape", &["ap", "shape"], &["r"], vec![]);
    b.node("MatMul", &["r", "mm"], &["m"], vec![]);
    b.node(
        "LeakyRelu",
        &["m"],
        &["lr"],
        vec![attr::float("alpha", 0.1)],
    );
    b.node(
        "Concat",
        &["f1", "lr"],
        &["cat"],
        vec![attr::int("axis", 1)],
    );
    b.node("Dropout", &["cat"], &["d"], vec![]);
    b.node("Identity", &["d"], &["id"], vec![]);
    b.node("Mul", &["id", "scale"], &["s"], vec![]);
    b.node("Sub", &["s", "shift"], &["sub"], vec![]);
    b.node("Clip", &["sub", "lo", "hi"], &["clip"], vec![]);
    b.node(
        "Gemm",
        &["clip", "fc", "fcb"],
        &["gm"],
        vec![attr::int("transB", 1)],
    );
    b.node("Sigmoid", &["gm"], &["sg"], vec![]);
    b.node("Div", &["sg", "two"], &["dv"], vec![]);
    b.node("Softmax", &["dv"], &["y"], vec![attr::int("axis", 1)]);
    b.output("y", [2i64, 3]);
    pare_ir::import(&b.build()).unwrap()
}

fn loss(graph: &Graph, x: &ArrayD<f32>, r: &ArrayD<f32>, mode: Mode, dropout: Option<u64>) -> f64 {
    let tape = forward(graph, x.clone(), mode, false, dropout).unwrap();
    let y = tape.value(graph.outputs[0]).unwrap();
    y.iter()
        .zip(r.iter())
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum()
}

/// Compares the gradient of every float initializer (a few entries each) with central finite
/// differences of the loss Σ y·r; initializers named in `constant` must get none. Returns how
/// many entries it checked.
fn check_parameters(
    graph: &Graph,
    x: &ArrayD<f32>,
    r: &ArrayD<f32>,
    (mode, dropout): (Mode, Option<u64>),
    constant: &[&str],
) -> usize {
    let tape = forward(graph, x.clone(), mode, false, dropout).unwrap();
    let grads = backward(graph, &tape, graph.outputs[0], r.clone()).unwrap();
    let eps = 5e-3f32;
    let mut checked = 0;
    for v in graph.value_ids() {
        let ValueSource::Initializer(Tensor::F32(t)) = &graph.value(v).source else {
            continue;
        };
        let name = graph.value(v).name.clone();
        let Some(g) = grads.of(v) else {
            assert!(constant.contains(&name.as_str()), "{name} got no gradient");
            continue;
        };
        for i in (0..t.len()).step_by(t.len().div_ceil(4).max(1)) {
            let mut plus = graph.clone();
            let mut minus = graph.clone();
            for (gr, d) in [(&mut plus, eps), (&mut minus, -eps)] {
                if let ValueSource::Initializer(Tensor::F32(a)) = &mut gr.value_mut(v).source {
                    a.as_slice_mut().unwrap()[i] += d;
                }
            }
            let fd = (loss(&plus, x, r, mode, dropout) - loss(&minus, x, r, mode, dropout))
                / (2.0 * eps as f64);
            let got = g.as_slice().unwrap()[i] as f64;
            assert!(
                (fd - got).abs() < 2e-2 * fd.abs().max(0.02),
                "{mode:?} dropout {dropout:?} {name}[{i}]: finite difference {fd}, backward {got}"
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn every_op_back_propagates_like_finite_differences() {
    let graph = graph();
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 3, 6, 6]), wave(216, 9.0, 1.5)).unwrap();
    let r = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, -2.0, 0.5, 0.3, 1.1, -0.7]).unwrap();
    // Training with Dropout drawing a mask (the same one for every pass: it depends on the seed
    // only), training with Dropout as the identity, and inference.
    for run in [
        (Mode::Train, Some(7)),
        (Mode::Train, None),
        (Mode::Eval, None),
    ] {
        let checked = check_parameters(&graph, &x, &r, run, &["mean", "var", "lo", "hi"]);
        assert!(checked >= 30, "{checked}");
    }
}

/// x[2,3,12,12] → Conv → Relu → MaxPool → Conv → BatchNorm → Clip(0, 0.6) → MaxPool → mp;
/// Relu(mp) + mp → Flatten → Gemm → LeakyRelu(−0.2). The first Relu and MaxPool run in the
/// first Conv's kernel, the Clip and the second MaxPool in BatchNorm's; the second Relu cannot
/// (its input has another reader), nor the LeakyRelu (negative slope). The second Conv sums
/// its planes for BatchNorm's statistics in training. With `unfused`, the
/// values inside those fusions are graph outputs too, which keeps every node on its own.
fn activations_graph(unfused: bool) -> Graph {
    let mut b = GraphBuilder::new("in-place activations", 17);
    b.input("x", [2i64, 3, 12, 12]);
    b.initializer(attr::tensor_f32("w1", &[4, 3, 3, 3], wave(108, 1.0, 0.5)));
    b.initializer(attr::tensor_f32("b1", &[4], wave(4, 2.0, 0.1)));
    b.initializer(attr::tensor_f32("w2", &[5, 4, 3, 3], wave(180, 3.0, 0.4)));
    b.initializer(attr::tensor_f32("g", &[5], vec![1.0, 0.8, 1.2, 0.9, 1.1]));
    b.initializer(attr::tensor_f32("beta", &[5], wave(5, 3.0, 0.3)));
    b.initializer(attr::tensor_f32("mean", &[5], vec![0.0; 5]));
    b.initializer(attr::tensor_f32("var", &[5], vec![1.0; 5]));
    b.initializer(attr::tensor_f32("lo", &[], vec![0.0]));
    b.initializer(attr::tensor_f32("hi", &[], vec![0.6]));
    b.initializer(attr::tensor_f32("fc", &[3, 45], wave(135, 6.0, 0.6)));
    b.initializer(attr::tensor_f32("fcb", &[3], wave(3, 7.0, 0.1)));
    let pad = || vec![attr::ints("pads", &[1, 1, 1, 1])];
    b.node("Conv", &["x", "w1", "b1"], &["c1"], pad());
    let window = || {
        vec![
            attr::ints("kernel_shape", &[2, 2]),
            attr::ints("strides", &[2, 2]),
        ]
    };
    b.node("Relu", &["c1"], &["a1"], vec![]);
    b.node("MaxPool", &["a1"], &["p1"], window());
    b.node("Conv", &["p1", "w2"], &["c2"], pad());
    let bn_inputs = ["c2", "g", "beta", "mean", "var"];
    b.node("BatchNormalization", &bn_inputs, &["bn"], vec![]);
    b.node("Clip", &["bn", "lo", "hi"], &["clip"], vec![]);
    b.node("MaxPool", &["clip"], &["mp"], window());
    b.node("Relu", &["mp"], &["a2"], vec![]);
    b.node("Add", &["a2", "mp"], &["s"], vec![]);
    b.node("Flatten", &["s"], &["f"], vec![]);
    let trans_b = vec![attr::int("transB", 1)];
    b.node("Gemm", &["f", "fc", "fcb"], &["gm"], trans_b);
    b.node(
        "LeakyRelu",
        &["gm"],
        &["y"],
        vec![attr::float("alpha", -0.2)],
    );
    b.output("y", [2i64, 3]);
    if unfused {
        b.output("c1", [2i64, 4, 12, 12]);
        b.output("c2", [2i64, 5, 6, 6]);
        b.output("a1", [2i64, 4, 12, 12]);
        b.output("bn", [2i64, 5, 6, 6]);
        b.output("clip", [2i64, 5, 6, 6]);
    }
    pare_ir::import(&b.build()).unwrap()
}

/// Fusion runs nodes inside their producer's kernel: it must leave the outputs as they are, and
/// every gradient up to rounding. (Finite differences across this many ReLU, Clip and max pool
/// kinks are too rough to check either; the ops' own gradients are checked above and in their
/// kernels.)
#[test]
fn fused_activations_and_pools_change_no_value_or_gradient() {
    let (graph, unfused) = (activations_graph(false), activations_graph(true));
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 3, 12, 12]), wave(864, 9.0, 1.5)).unwrap();
    let r = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, -2.0, 0.5, 0.3, 1.1, -0.7]).unwrap();
    let tape = forward(&graph, x.clone(), Mode::Train, false, None).unwrap();
    let kept = |name: &str| tape.value(graph.find_value(name).unwrap()).is_some();
    for name in ["c1", "a1", "bn", "clip"] {
        assert!(
            !kept(name),
            "{name} is not kept: a fused node overwrote or pooled it"
        );
    }
    for name in ["p1", "c2", "mp", "a2", "gm", "y"] {
        assert!(kept(name), "{name} is kept");
    }
    let p1 = tape.value(graph.find_value("p1").unwrap()).unwrap();
    assert_eq!(p1.shape(), &[2, 4, 6, 6]);
    assert!(p1.iter().all(|&v| v >= 0.0) && p1.iter().any(|&v| v == 0.0));
    let mp = tape.value(graph.find_value("mp").unwrap()).unwrap();
    assert_eq!(mp.shape(), &[2, 5, 3, 3]);
    assert!(mp.iter().all(|&v| (0.0..=0.6).contains(&v)));
    // Windows that saturated at both ends of the Clip, where its derivative is 0.
    assert!(mp.iter().any(|&v| v == 0.0) && mp.iter().any(|&v| v == 0.6));
    for mode in [Mode::Train, Mode::Eval] {
        let run = |graph: &Graph| {
            let tape = forward(graph, x.clone(), mode, false, None).unwrap();
            let y = tape.value(graph.outputs[0]).unwrap().clone();
            (
                y,
                backward(graph, &tape, graph.outputs[0], r.clone()).unwrap(),
            )
        };
        let ((y, grads), (want_y, want_grads)) = (run(&graph), run(&unfused));
        assert_eq!(y, want_y, "{mode:?}");
        let mut compared = 0;
        for v in graph.value_ids() {
            let name = &graph.value(v).name;
            let (Some(g), Some(want)) = (grads.of(v), want_grads.of(v)) else {
                continue;
            };
            if let ValueSource::Initializer(_) = graph.value(v).source {
                // BatchNorm's backward from a pooled gradient adds its sums in another order.
                let off = g
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs() / b.abs().max(1.0));
                let worst = off.fold(0.0f32, f32::max);
                assert!(worst < 1e-5, "{mode:?} {name}: {worst}");
                compared += 1;
            }
        }
        assert_eq!(compared, 7, "{mode:?}: w1, b1, w2, g, beta, fc and fcb");
    }
}

#[test]
fn dropout_drops_and_rescales_in_training_and_is_the_identity_otherwise() {
    let graph = graph();
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 3, 6, 6]), wave(216, 9.0, 1.5)).unwrap();
    let value = |name: &str| {
        graph
            .value_ids()
            .find(|&v| graph.value(v).name == name)
            .unwrap()
    };
    let (before, after) = (value("cat"), value("d"));
    let run = |dropout| {
        let tape = forward(&graph, x.clone(), Mode::Train, false, dropout).unwrap();
        let (b, a) = (tape.value(before).unwrap(), tape.value(after).unwrap());
        b.iter()
            .zip(a.iter())
            .map(|(b, a)| (*b, *a))
            .collect::<Vec<_>>()
    };
    // The node has no ratio, so ONNX's default 0.5 applies: kept values double.
    let dropped = run(Some(3));
    assert!(
        dropped.iter().all(|&(b, a)| a == 0.0 || a == 2.0 * b),
        "{dropped:?}"
    );
    assert!(dropped.iter().any(|&(b, a)| a == 0.0 && b != 0.0));
    assert!(dropped.iter().any(|&(b, a)| a == 2.0 * b && b != 0.0));
    assert_eq!(run(Some(3)), dropped, "the same seed draws the same mask");
    assert_ne!(run(Some(4)), dropped, "another seed draws another mask");
    assert!(run(None).iter().all(|&(b, a)| a == b));
}

/// x → Conv → Sigmoid → Relu → Sigmoid → Flatten → Gemm: activations in a row, each the only
/// reader of the one before. Each needs its own output for its gradient, so a chain must not
/// write one over another; with `unfused`, every value between them is a graph output too.
fn chained_activations_graph(unfused: bool) -> Graph {
    let mut b = GraphBuilder::new("chained activations", 17);
    b.input("x", [2i64, 2, 5, 5]);
    b.initializer(attr::tensor_f32("w", &[3, 2, 3, 3], wave(54, 1.0, 0.6)));
    b.initializer(attr::tensor_f32("fc", &[2, 27], wave(54, 2.0, 0.5)));
    b.node("Conv", &["x", "w"], &["c"], vec![]);
    b.node("Sigmoid", &["c"], &["s1"], vec![]);
    b.node("Relu", &["s1"], &["r"], vec![]);
    b.node("Sigmoid", &["r"], &["s2"], vec![]);
    b.node("Flatten", &["s2"], &["f"], vec![]);
    b.node("Gemm", &["f", "fc"], &["y"], vec![attr::int("transB", 1)]);
    b.output("y", [2i64, 2]);
    if unfused {
        for (name, shape) in [
            ("c", [2i64, 3, 3, 3]),
            ("s1", [2, 3, 3, 3]),
            ("r", [2, 3, 3, 3]),
        ] {
            b.output(name, shape);
        }
    }
    pare_ir::import(&b.build()).unwrap()
}

#[test]
fn chained_activations_back_propagate_as_they_do_unfused() {
    let (graph, unfused) = (
        chained_activations_graph(false),
        chained_activations_graph(true),
    );
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 2, 5, 5]), wave(100, 4.0, 1.5)).unwrap();
    let r = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, -0.5, 0.3, 2.0]).unwrap();
    let run = |graph: &Graph| {
        let tape = forward(graph, x.clone(), Mode::Train, false, None).unwrap();
        let y = tape.value(graph.outputs[0]).unwrap().clone();
        (
            y,
            backward(graph, &tape, graph.outputs[0], r.clone()).unwrap(),
        )
    };
    let ((y, grads), (want_y, want_grads)) = (run(&graph), run(&unfused));
    assert_eq!(y, want_y);
    for name in ["w", "fc"] {
        let v = graph.find_value(name).unwrap();
        assert_eq!(grads.of(v), want_grads.of(v), "{name}");
    }
}
