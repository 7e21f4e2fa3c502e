//! The pruning strategies end to end on the shipped models: targets are met, widths obey the
//! limits, the same seed gives the same plans, and the pruned graphs' summaries are reviewed as
//! insta snapshots (layer widths and MACs at a fixed seed and a small budget).

mod common;
use common::root;
use pare_data::Dataset;
use pare_ir::Graph;
use pare_prune::strategy::Event;
use pare_prune::{CompressConfig, Criterion, Outcome, Ranking, Strategy, Target};

fn load(name: &str) -> Graph {
    let proto = pare_onnx::read_model(&root().join("models").join(name)).unwrap();
    pare_ir::import(&proto).unwrap()
}

/// A small slice of the MNIST subset: training images and a held-out validation split.
fn data(n: usize) -> (Dataset, Dataset) {
    let splits = pare_data::load_dir(&common::mnist()).unwrap();
    splits.train.head(n).split_off_validation(0.2, 0)
}

fn small(strategy: Strategy, criterion: Criterion, target: Option<Target>) -> CompressConfig {
    CompressConfig {
        strategy,
        criterion,
        target,
        epochs: 2,
        batch_size: 32,
        ratio: 0.2,
        ..CompressConfig::default()
    }
}

fn run(model: &str, config: &CompressConfig, n: usize) -> (Graph, Outcome) {
    let mut graph = load(model);
    let (train, val) = data(n);
    let outcome = pare_prune::compress(&mut graph, &train, &val, config, &mut |_| {}).unwrap();
    (graph, outcome)
}

/// Layer widths and MACs, one line per weight layer, then the totals and the events.
fn summary(graph: &Graph, outcome: &Outcome) -> String {
    let mut out = String::new();
    let width = |w: Option<usize>| w.map_or("?".to_string(), |w| w.to_string());
    for l in pare_prune::layer_widths(graph) {
        out.push_str(&format!(
            "{:<42} {:<4} {:>4} -> {:>4}  MACs {}\n",
            l.name,
            l.op,
            width(l.inputs),
            width(l.outputs),
            l.macs
        ));
    }
    out.push_str(&format!(
        "params {} -> {}, MACs {} -> {}\n",
        outcome.original.params,
        outcome.compressed.params,
        outcome.original.macs,
        outcome.compressed.macs
    ));
    out.push_str(&events(outcome));
    out
}

/// The prunes and roll-backs of a run, one per line.
fn events(outcome: &Outcome) -> String {
    outcome
        .history
        .iter()
        .filter(|h| !matches!(h.event, Event::Check { .. }))
        .map(|h| {
            format!(
                "step {:>3}: {:?}, MACs {}, validation accuracy {:.1}\n",
                h.step, h.event, h.macs, h.validation_accuracy
            )
        })
        .collect()
}

#[test]
fn rls_prunes_lenet_to_the_target_and_the_same_seed_gives_the_same_plans() {
    let config = CompressConfig {
        epochs: 4,
        ..small(Strategy::Rls, Criterion::Rls, Some(Target::Macs(0.75)))
    };
    let (graph, first) = run("lenet5_opset17.onnx", &config, 640);
    assert_eq!(first.target_met, Some(true), "{}", events(&first));
    assert!(first.compressed.macs as f64 <= 0.75 * first.original.macs as f64);
    let (_, second) = run("lenet5_opset17.onnx", &config, 640);
    assert_eq!(first.plans, second.plans);
    assert!(!first.plans.is_empty());
    insta::assert_snapshot!("rls_lenet5", summary(&graph, &first));
}

#[test]
fn rls_snapshots_of_vgg_and_resnet() {
    for model in ["vggbn_opset17.onnx", "resnet20_opset17.onnx"] {
        // A budget this small needs a lenient recovery rule for ResNet-20.
        let config = CompressConfig {
            epochs: 4,
            ratio: 0.1,
            accuracy_tolerance: 5.0,
            ..small(Strategy::Rls, Criterion::Rls, Some(Target::Macs(0.85)))
        };
        let (graph, outcome) = run(model, &config, 480);
        let prunes = outcome
            .history
            .iter()
            .filter(|h| matches!(h.event, Event::Prune { .. }))
            .count();
        assert!(prunes >= 1, "{model}: {}", events(&outcome));
        assert_eq!(
            outcome.target_met,
            Some(true),
            "{model}: {}",
            events(&outcome)
        );
        insta::assert_snapshot!(format!("rls_{model}"), summary(&graph, &outcome));
    }
}

#[test]
fn oneshot_meets_the_target_with_every_criterion_and_keeps_widths_multiples() {
    for criterion in [
        Criterion::L1,
        Criterion::L2,
        Criterion::Taylor,
        Criterion::Random,
        Criterion::Rls,
    ] {
        let config = CompressConfig {
            epochs: 1,
            round_to: 2,
            ranking: Ranking::Global,
            ..small(Strategy::Oneshot, criterion, Some(Target::Params(0.5)))
        };
        let (graph, outcome) = run("lenet5_opset17.onnx", &config, 320);
        assert_eq!(outcome.target_met, Some(true), "{criterion:?}");
        let before = pare_prune::layer_widths(&load("lenet5_opset17.onnx"));
        for (b, a) in before.iter().zip(pare_prune::layer_widths(&graph)) {
            assert!(
                a.outputs == b.outputs || a.outputs.unwrap() % 2 == 0,
                "{criterion:?}: {} has {:?} outputs",
                a.name,
                a.outputs
            );
        }
    }
}

#[test]
fn bn_scale_needs_batchnorm_and_prunes_a_model_that_has_it() {
    let config = CompressConfig {
        epochs: 1,
        ..small(
            Strategy::Oneshot,
            Criterion::BnScale,
            Some(Target::Macs(0.5)),
        )
    };
    let mut folded = load("vggbn_opset17.onnx");
    let (train, val) = data(128);
    let err = pare_prune::compress(&mut folded, &train, &val, &config, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("BatchNormalization"), "{err}");
    let (_, outcome) = run("vggbn_keepbn_opset17.onnx", &config, 128);
    assert_eq!(outcome.target_met, Some(true));
}

#[test]
fn oneshot_without_a_target_is_refused() {
    let mut graph = load("lenet5_opset17.onnx");
    let (train, val) = data(64);
    let config = small(Strategy::Oneshot, Criterion::L2, None);
    let err = pare_prune::compress(&mut graph, &train, &val, &config, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("--target-macs"), "{err}");
}

#[test]
fn rls_without_a_target_prunes_while_the_network_recovers() {
    let config = CompressConfig {
        epochs: 3,
        ..small(Strategy::Rls, Criterion::Rls, None)
    };
    let (_, outcome) = run("lenet5_opset17.onnx", &config, 640);
    assert_eq!(outcome.target_met, None);
    // A roll-back restores the last recovered network, so a smaller result recovered.
    assert!(
        outcome.compressed.macs < outcome.original.macs,
        "{}",
        events(&outcome)
    );
}

/// A MobileNet-style export (depthwise, SE, Concat, residual, BN after a Concat) on RGB data:
/// pruned to half its MACs with a separate validation set, and tract verifies the result.
#[test]
fn compress_prunes_a_mobilenet_style_model_with_a_separate_validation_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small.onnx");
    let o = common::compress(&[
        "models/mobile/mobile_se_opset13.onnx",
        "--data",
        "models/mobile/quadrants.npz",
        "--val",
        "models/mobile/quadrants.npz",
        "--target-macs",
        "0.5",
        "--epochs",
        "3",
        "--max-drop",
        "5",
        "--latency-runs",
        "2",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.exists());
    assert!(!stdout.contains("rolled back"), "{stdout}");
    assert!(!stdout.contains("not reached"), "{stdout}");
    insta::with_settings!({filters => vec![
        (r"latency, batch 1 \(median ms\) .*", "[latency]"),
        (r"efficiency \(MACs/latency\) .*", "[efficiency]"),
        (r"(?m) +(\d+\.\d{3}|-) +(\d+\.\d{3}|-)$", " [ms]"),
        (r"wrote .*", "wrote [output]"),
    ]}, {
        insta::assert_snapshot!("compress_mobile", stdout);
    });
}

#[test]
fn recovering_to_the_original_level_is_stricter_than_to_the_last() {
    // Without a target, pruning goes on while prunes recover: a stricter reference stops it
    // sooner, at a larger network.
    let macs = |reference| {
        let config = CompressConfig {
            epochs: 3,
            recovery_reference: reference,
            ..small(Strategy::Rls, Criterion::Rls, None)
        };
        run("lenet5_opset17.onnx", &config, 640).1.compressed.macs
    };
    let lenient = macs(pare_prune::RecoveryReference::LastPrune);
    let strict = macs(pare_prune::RecoveryReference::Original);
    assert!(strict > lenient, "strict {strict} MACs, lenient {lenient}");
}

#[test]
fn score_share_events_size_each_group_by_its_scores() {
    let config = CompressConfig {
        epochs: 4,
        event_size: pare_prune::EventSize::ScoreShare,
        ..small(Strategy::Rls, Criterion::Rls, Some(Target::Macs(0.75)))
    };
    let (_, outcome) = run("lenet5_opset17.onnx", &config, 640);
    assert_eq!(outcome.target_met, Some(true), "{}", events(&outcome));
}

#[test]
fn one_group_per_event_prunes_the_groups_in_turn() {
    let config = CompressConfig {
        epochs: 4,
        one_group_per_event: true,
        // Accept every check so that the events follow one another.
        accuracy_tolerance: 100.0,
        ..small(Strategy::Rls, Criterion::Rls, None)
    };
    let (_, outcome) = run("lenet5_opset17.onnx", &config, 640);
    let touched: Vec<Vec<pare_prune::GroupId>> = outcome
        .plans
        .iter()
        .map(|p| {
            p.drop
                .iter()
                .filter(|(_, d)| !d.is_empty())
                .map(|(&g, _)| g)
                .collect()
        })
        .collect();
    assert!(touched.len() >= 3, "{touched:?}");
    assert!(touched.iter().all(|t| t.len() == 1), "{touched:?}");
    assert_ne!(touched[0], touched[1], "{touched:?}");
}
