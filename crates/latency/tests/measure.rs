//! `LatencyModel::measure` on a small hand-built graph: which groups and widths it measures, and
//! what it refuses. Structure only: no assertion reads a time.

use pare_latency::{cache_key, group_key, ladder, widths_after, LadderSettings, LatencyModel};
use pare_onnx::{attr, DimSpec, GraphBuilder};
use pare_prune::{analyze, PruningPlan};

fn wave(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 + seed) * 0.7123).sin()).collect()
}

/// x[N,3,8,8] → Conv 3×3 (20) → Relu → Conv 1×1 (24) → Relu → GlobalAveragePool → Flatten →
/// Gemm (24 → 3): two prunable groups, "a" (20 channels) and "b" (24).
fn graph(batch: DimSpec) -> pare_ir::Graph {
    let mut b = GraphBuilder::new("two_convs", 17);
    b.input("x", [batch, 3.into(), 8.into(), 8.into()]);
    b.initializer(attr::tensor_f32("w1", &[20, 3, 3, 3], wave(540, 1.0)));
    b.initializer(attr::tensor_f32("b1", &[20], wave(20, 2.0)));
    b.initializer(attr::tensor_f32("w2", &[24, 20, 1, 1], wave(480, 3.0)));
    b.initializer(attr::tensor_f32("b2", &[24], wave(24, 4.0)));
    b.initializer(attr::tensor_f32("fc", &[3, 24], wave(72, 5.0)));
    let pads = vec![attr::ints("pads", &[1, 1, 1, 1])];
    b.node("Conv", &["x", "w1", "b1"], &["a"], pads);
    b.node("Relu", &["a"], &["ra"], vec![]);
    b.node("Conv", &["ra", "w2", "b2"], &["b"], vec![]);
    b.node("Relu", &["b"], &["rb"], vec![]);
    b.node("GlobalAveragePool", &["rb"], &["p"], vec![]);
    b.node("Flatten", &["p"], &["f"], vec![]);
    b.node("Gemm", &["f", "fc"], &["y"], vec![attr::int("transB", 1)]);
    b.output("y", [DimSpec::from("N"), 3.into()]);
    pare_ir::import(&b.build()).unwrap()
}

fn settings() -> LadderSettings {
    LadderSettings {
        min_keep: 0.1,
        widths_per_group: 5,
        warmup: 0,
        runs: 1,
        vector_width: Some(8),
        min_timed_ms: 0.0,
        ..LadderSettings::default()
    }
}

fn widths(model: &LatencyModel, key: &str) -> Vec<usize> {
    let g = model
        .table
        .group(key)
        .unwrap_or_else(|| panic!("group {key} measured"));
    g.points.iter().map(|p| p.width).collect()
}

#[test]
fn every_prunable_group_is_measured_at_its_ladder() {
    let graph = graph("N".into());
    let before = graph.clone();
    let groups = analyze(&graph);
    let model = LatencyModel::measure(&graph, &groups, &settings()).unwrap();
    assert_eq!(graph, before, "the caller's graph is untouched");
    // Floors: ⌈0.1 × 20⌉ = 2 and ⌈0.1 × 24⌉ = 3; multiples of 8, then the widest gap halved.
    assert_eq!(widths(&model, "a"), [2, 8, 12, 16, 20]);
    assert_eq!(widths(&model, "a"), ladder(2, 20, 8, 5));
    assert_eq!(widths(&model, "b"), [3, 8, 12, 16, 24]);
    let keys: Vec<&str> = model.table.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(
        keys,
        ["a", "b"],
        "the group touching more MACs (both convs) first"
    );
    assert_eq!(
        (model.variants, model.table.unmeasured.len()),
        (8 + 1, 0),
        "ladders and the pair"
    );
    let pairs: Vec<(&str, &str)> = model
        .table
        .pairs
        .iter()
        .map(|p| (p.a.as_str(), p.b.as_str()))
        .collect();
    assert_eq!(pairs, [("a", "b")], "the 1×1 conv joins a and b");
    assert_eq!(
        (model.input_shape.clone(), model.table.vector_width),
        (vec![1, 3, 8, 8], 8)
    );
    let bytes = pare_onnx::encode(&pare_ir::export(&graph));
    assert_eq!(model.cache_key, cache_key(&bytes));
    for g in &model.table.groups {
        assert_eq!(
            g.points.last().unwrap().ms,
            g.baseline_ms,
            "full width is the baseline"
        );
        assert!(g.points.iter().all(|p| p.ms.is_finite() && p.ms > 0.0));
    }
    let unpruned = widths_after(&graph, &groups, &PruningPlan::default());
    assert_eq!(unpruned.len(), 2);
    assert_eq!(model.table.predict(&unpruned), model.table.baseline_ms);
}

#[test]
fn the_variant_cap_keeps_floors_and_full_widths_only() {
    let graph = graph("N".into());
    let groups = analyze(&graph);
    let capped = LadderSettings {
        max_variants: 3,
        ..settings()
    };
    let model = LatencyModel::measure(&graph, &groups, &capped).unwrap();
    assert_eq!(widths(&model, "a"), [2, 20]);
    assert_eq!(widths(&model, "b"), [3, 24]);
    assert_eq!(
        model.variants,
        2 + 1,
        "the floors, then the pair at both floors"
    );
    let one = LadderSettings {
        max_variants: 1,
        ..settings()
    };
    let model = LatencyModel::measure(&graph, &groups, &one).unwrap();
    assert_eq!(model.table.groups.len(), 1);
    assert!(model.table.pairs.is_empty(), "no room for the pair");
    assert_eq!(
        model.table.unmeasured,
        ["b"],
        "the group touching fewer MACs waits"
    );
}

#[test]
fn group_keys_name_first_activations_and_survive_surgery() {
    let mut graph = graph("N".into());
    let groups = analyze(&graph);
    let a = groups
        .groups
        .iter()
        .find(|g| group_key(&graph, &groups, g.id).as_deref() == Some("a"))
        .unwrap();
    let mut plan = PruningPlan::default();
    plan.drop_channels(a.id, 0..5);
    let expected = widths_after(&graph, &groups, &plan);
    assert_eq!(expected["a"], 15);
    plan.apply(&mut graph, &groups).unwrap();
    let again = analyze(&graph);
    assert_eq!(
        widths_after(&graph, &again, &PruningPlan::default()),
        expected
    );
}

#[test]
fn open_inputs_and_bad_settings_are_refused_by_name() {
    let groups = analyze(&graph("N".into()));
    let mut open = graph("N".into());
    let x = open.inputs[0];
    open.value_mut(x).shape.as_mut().unwrap().0[2] = pare_ir::Dim::Sym("H".into());
    let err = LatencyModel::measure(&open, &groups, &settings()).unwrap_err();
    assert!(err.to_string().contains("input 'x'"), "{err}");
    assert!(err.to_string().contains("--input-shape"), "{err}");
    for bad in [
        LadderSettings {
            runs: 0,
            ..settings()
        },
        LadderSettings {
            widths_per_group: 1,
            ..settings()
        },
        LadderSettings {
            min_keep: 1.0,
            ..settings()
        },
    ] {
        let graph = graph("N".into());
        let err = LatencyModel::measure(&graph, &groups, &bad).unwrap_err();
        assert!(err.to_string().starts_with("latency setting"), "{err}");
    }
}
