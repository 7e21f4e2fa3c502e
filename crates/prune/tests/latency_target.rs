//! Latency targets against a latency table written by hand: widths snap to the width the table
//! says is fast, and channels go first where they save the most time. Assertions are on the
//! widths chosen, never on a clock.

use pare_ir::Graph;
use pare_onnx::{attr, DimSpec, GraphBuilder};
use pare_prune::latency::{GroupLatency, LatencyTable, WidthTime};
use pare_prune::{
    analyze, layer_widths, prune_without_data, CompressConfig, Criterion, Strategy, Target,
};

/// x[N,1,6,6] → Conv a (24) → Relu → Conv b (24) → Relu → Conv c (2) → GAP → Flatten → y. Every
/// filter's weights grow with its index, so group L2 drops the low channels first.
fn graph() -> Graph {
    let mut b = GraphBuilder::new("two_groups", 17);
    b.input("x", [DimSpec::from("N"), 1.into(), 6.into(), 6.into()]);
    for (name, out, inp) in [("a", 24, 1), ("b", 24, 24), ("c", 2, 24)] {
        let weights = (0..out * inp)
            .map(|i| 0.01 * (1 + i / inp) as f32)
            .collect();
        b.initializer(attr::tensor_f32(
            &format!("{name}.w"),
            &[out as i64, inp as i64, 1, 1],
            weights,
        ));
    }
    b.node("Conv", &["x", "a.w"], &["a"], vec![]);
    b.node("Relu", &["a"], &["ra"], vec![]);
    b.node("Conv", &["ra", "b.w"], &["b"], vec![]);
    b.node("Relu", &["b"], &["rb"], vec![]);
    b.node("Conv", &["rb", "c.w"], &["c"], vec![]);
    b.node("GlobalAveragePool", &["c"], &["gap"], vec![]);
    b.node("Flatten", &["gap"], &["y"], vec![]);
    b.output("y", [DimSpec::from("N"), 2.into()]);
    pare_ir::import(&b.build()).unwrap()
}

fn group(key: &str, points: &[(usize, f64)]) -> GroupLatency {
    GroupLatency {
        key: key.into(),
        baseline_ms: 10.0,
        points: points
            .iter()
            .map(|&(width, ms)| WidthTime { width, ms })
            .collect(),
    }
}

fn table(groups: Vec<GroupLatency>) -> LatencyTable {
    LatencyTable {
        vector_width: 8,
        baseline_ms: 10.0,
        groups,
        pairs: Vec::new(),
        unmeasured: Vec::new(),
    }
}

/// The widths of convolutions a and b after a prune without data to `goal` of the latency.
fn widths_at(goal: f64, table: LatencyTable, snap: bool) -> (usize, usize) {
    let mut g = graph();
    let config = CompressConfig {
        strategy: Strategy::Oneshot,
        criterion: Criterion::L2,
        target: Some(Target::Latency(goal)),
        latency: Some(table),
        snap_widths: snap,
        ..CompressConfig::default()
    };
    let outcome = prune_without_data(&mut g, &config).unwrap();
    assert!(outcome.target_met, "{goal}");
    let convs: Vec<usize> = layer_widths(&g)
        .iter()
        .filter(|l| l.op == "Conv")
        .filter_map(|l| l.outputs)
        .collect();
    (convs[0], convs[1])
}

#[test]
fn widths_snap_to_the_width_the_table_measured_fast() {
    // a at 16 takes 8.0 ms, at 20 9.9 ms: the 4 channels between cost 1.9 ms. b was not
    // measured, so it saves nothing and keeps its width.
    let measured = || {
        table(vec![group(
            "a",
            &[(2, 6.0), (16, 8.0), (20, 9.9), (24, 10.0)],
        )])
    };
    assert_eq!(
        analyze(&graph())
            .groups
            .iter()
            .filter(|g| g.prunable())
            .count(),
        2
    );
    // 9.6 ms is reached at 19 channels (9.425 ms between the measured 16 and 20)...
    assert_eq!(widths_at(0.96, measured(), false), (19, 24));
    // ...but snapping keeps the fast 16 rather than 19, which the table says costs 1.4 ms more.
    assert_eq!(widths_at(0.96, measured(), true), (16, 24));
}

#[test]
fn channels_go_first_where_they_save_the_most_time() {
    // Narrowing b saves 4 ms over 22 channels, a only 1 ms: to save 1 ms, b gives 6 channels
    // (snapped: down to 16) and a none.
    let measured = || {
        table(vec![
            group("a", &[(2, 9.0), (24, 10.0)]),
            group("b", &[(2, 6.0), (24, 10.0)]),
        ])
    };
    assert_eq!(widths_at(0.9, measured(), false), (24, 18));
    assert_eq!(widths_at(0.9, measured(), true), (24, 16));
}
