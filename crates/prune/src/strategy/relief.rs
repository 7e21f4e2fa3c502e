//! Neural network relief (docs/methods/relief.md): passes that each mask the connections
//! carrying little of their unit's signal on the pruning set, remove the units left dead or
//! unread, and retrain with the masks held for the pass's share of the budget. Each pass keeps its
//! best checkpoint by validation accuracy; a pass whose best falls more than the tolerance below
//! the dense model ends the run, which returns the last pass within it.

use super::config::CompressConfig;
use super::report::Event;
use super::run::{PruningStrategy, Run};
use crate::relief::{gate_residuals, mask_layers, pruning_set, remove_units, score};
use crate::summary::nonzero_params;
use crate::PruneError;
use pare_ir::Graph;
use pare_train::optim::{Masked, Masks};
use pare_train::{Evaluation, TrainError};

/// `Strategy::Relief`.
pub(crate) struct Relief;

impl PruningStrategy for Relief {
    fn check(&self, config: &CompressConfig) -> Result<(), PruneError> {
        let r = &config.relief;
        let fraction = |f: f64| f > 0.0 && f <= 1.0;
        if !fraction(r.alpha_conv) || !fraction(r.alpha_fc) {
            return Err(PruneError::Setting(
                "--alpha-conv and --alpha-fc",
                "in (0, 1]",
            ));
        }
        if r.iterations == 0 || r.pruning_images == 0 {
            return Err(PruneError::Setting(
                "--iterations and --pruning-images",
                "at least 1",
            ));
        }
        if config.target.is_some() {
            return Err(PruneError::Setting(
                "a target with --strategy relief",
                "left out: relief prunes by its alphas and stops by --tolerance",
            ));
        }
        Ok(())
    }

    fn run(&self, graph: &mut Graph, run: &mut Run) -> Result<(), PruneError> {
        let settings = run.config.relief;
        let batch = run.config.batch_size;
        let set = pruning_set(run.train_data(), settings.pruning_images, run.config.seed);
        let dense = run.validate_and_record(graph, Event::Start)?;
        let floor = dense.accuracy_percent() - run.config.accuracy_tolerance;
        let mut masks = Masks::default();
        let mut accepted = graph.clone();
        for pass in 1..=settings.iterations {
            let scores = score(graph, &set, settings.form, batch)?;
            mask_layers(graph, &scores, &settings, &mut masks);
            gate_residuals(graph, &set, batch, settings.alpha_conv, &mut masks)?;
            masks.apply_to_weights(graph);
            let plans = remove_units(graph, &mut masks, Some((&set, batch)))?;
            let channels = plans
                .iter()
                .flat_map(|p| p.drop.values())
                .map(Vec::len)
                .sum();
            run.add_plans(plans);
            let event = Event::Relief {
                pass,
                channels,
                nonzero_params: nonzero_params(graph),
            };
            let pruned = run.validate_and_record(graph, event)?;
            let steps = run.steps_left() / (settings.iterations - pass + 1);
            if pass == settings.iterations {
                run.anneal_schedule();
            } else {
                run.restart_schedule(run.steps_in(run.config.check_every_epochs));
            }
            let best = retrain(graph, run, &masks, steps, pruned, floor)?;
            if best.accuracy_percent() < floor {
                *graph = accepted;
                run.validate_and_record(graph, Event::RolledBack { diverged: false })?;
                return Ok(());
            }
            accepted = graph.clone();
        }
        Ok(())
    }
}

/// Trains `steps` steps with `masks` held, validating at every check; leaves `graph` at the best
/// checkpoint by validation accuracy, `start` (the untrained pass) included, and returns its
/// validation. Divergence ends the pass at that checkpoint.
fn retrain(
    graph: &mut Graph,
    run: &mut Run,
    masks: &Masks,
    steps: usize,
    start: Evaluation,
    floor: f64,
) -> Result<Evaluation, PruneError> {
    let mut optimizer = Masked::new(run.config.finetune.build(graph), masks.clone(), graph);
    let check_every = run.steps_in(run.config.check_every_epochs);
    let end = run.step() + steps;
    let mut best = (start, graph.clone());
    while run.step() < end && !run.finished() {
        match run.train(graph, &mut optimizer, check_every.min(end - run.step())) {
            Err(TrainError::Diverged { .. }) => break,
            trained => trained?,
        }
        let val = run.validate(graph)?;
        let within = val.accuracy_percent() >= floor;
        run.record(graph, Event::Check { recovered: within }, val);
        if val.loss.is_finite() && val.accuracy_percent() >= best.0.accuracy_percent() {
            best = (val, graph.clone());
        }
    }
    *graph = best.1;
    Ok(best.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{compress, Strategy};
    use pare_ir::{Tensor, ValueSource};
    use pare_onnx::{attr, GraphBuilder};
    use pare_train::{AdamConfig, OptimizerConfig};

    fn wave(n: usize, seed: f32, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + seed) * 0.7123).sin() * scale)
            .collect()
    }

    /// x[1,8,8] → Conv(4, 3×3, pad 1) → Relu → MaxPool 2 → Flatten → Gemm(64→10).
    fn graph() -> Graph {
        let mut b = GraphBuilder::new("digits", 17);
        b.input("x", [-1i64, 1, 8, 8]);
        b.initializer(attr::tensor_f32("w", &[4, 1, 3, 3], wave(36, 1.0, 0.4)));
        b.initializer(attr::tensor_f32("cb", &[4], vec![0.0; 4]));
        b.initializer(attr::tensor_f32("fc", &[10, 64], wave(640, 2.0, 0.2)));
        b.initializer(attr::tensor_f32("fcb", &[10], vec![0.0; 10]));
        b.node(
            "Conv",
            &["x", "w", "cb"],
            &["c"],
            vec![attr::ints("pads", &[1, 1, 1, 1])],
        );
        b.node("Relu", &["c"], &["r"], vec![]);
        b.node(
            "MaxPool",
            &["r"],
            &["p"],
            vec![
                attr::ints("kernel_shape", &[2, 2]),
                attr::ints("strides", &[2, 2]),
            ],
        );
        b.node("Flatten", &["p"], &["f"], vec![]);
        b.node(
            "Gemm",
            &["f", "fc", "fcb"],
            &["y"],
            vec![attr::int("transB", 1)],
        );
        b.output("y", [-1i64, 10]);
        pare_ir::import(&b.build()).unwrap()
    }

    fn weights(graph: &Graph) -> Vec<Vec<f32>> {
        graph
            .value_ids()
            .filter_map(|v| match &graph.value(v).source {
                ValueSource::Initializer(Tensor::F32(t)) => Some(t.iter().copied().collect()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn relief_masks_removes_and_retrains_the_same_way_for_a_seed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits8x8");
        let splits = pare_data::load_dir(&dir).unwrap();
        let (train, val) = (splits.train.head(600), splits.test.head(200));
        let config = CompressConfig {
            strategy: Strategy::Relief,
            epochs: 3,
            finetune: OptimizerConfig::Adam(AdamConfig::default()),
            accuracy_tolerance: 100.0,
            relief: crate::relief::ReliefSettings {
                iterations: 3,
                pruning_images: 100,
                ..Default::default()
            },
            ..CompressConfig::default()
        };
        let run = || {
            let mut graph = graph();
            let outcome = compress(&mut graph, &train, &val, &config, &mut |_| {}).unwrap();
            (graph, outcome)
        };
        let (graph, outcome) = run();
        let left: Vec<u64> = outcome
            .history
            .iter()
            .filter_map(|h| match h.event {
                Event::Relief { nonzero_params, .. } => Some(nonzero_params),
                _ => None,
            })
            .collect();
        assert_eq!(left.len(), 3);
        // Every pass masks more; retraining never revives a connection.
        assert!(left.windows(2).all(|w| w[1] < w[0]), "{left:?}");
        assert!(left[0] < outcome.original.params);
        assert_eq!(nonzero_params(&graph), left[2]);
        let again = run().0;
        assert_eq!(
            weights(&graph),
            weights(&again),
            "the seed fixes the result"
        );
    }

    #[test]
    fn a_target_or_an_alpha_out_of_range_is_refused() {
        let config = CompressConfig {
            strategy: Strategy::Relief,
            ..CompressConfig::default()
        };
        assert!(Relief.check(&config).is_ok());
        let mut alpha = config.clone();
        alpha.relief.alpha_fc = 0.0;
        assert!(Relief.check(&alpha).is_err());
        let mut target = config.clone();
        target.target = Some(crate::selection::Target::Macs(0.5));
        assert!(Relief.check(&target).is_err());
    }
}
