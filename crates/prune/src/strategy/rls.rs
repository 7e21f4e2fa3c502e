//! RLS prune-and-recover (docs/methods/rls.md): train with RLS, prune a ratio of every group by
//! OBS saliency from P, retrain until validation recovers, prune again.

use super::run::{PruningStrategy, Run};
use crate::groups::analyze;
use crate::PruneError;
use pare_ir::Graph;
use pare_train::optim::Rls;

/// `Strategy::Rls`.
pub(crate) struct PruneAndRecover;

impl PruningStrategy for PruneAndRecover {
    fn run(&self, graph: &mut Graph, run: &mut Run) -> Result<(), PruneError> {
        let warmup = run.steps_in(run.config.warmup_epochs);
        let check_every = run.steps_in(run.config.check_every_epochs);
        let mut rls = Rls::new(run.config.rls.clone(), graph);
        run.train(graph, &mut rls, warmup)?;
        run.prune_and_recover(graph, &mut rls, check_every, |graph, run, rls| {
            prune_event(graph, run, rls, check_every)
        })
    }
}

/// One RLS pruning event (docs/methods/rls.md, "Event size"), after which the step restarts small
/// (docs/methods/rls.md, "Schedule"); false when nothing could be removed.
fn prune_event(
    graph: &mut Graph,
    run: &mut Run,
    rls: &mut Rls,
    restart: usize,
) -> Result<bool, PruneError> {
    let groups = analyze(graph);
    let plan = run.choose(graph, &groups, Some(rls), Some(run.config.ratio))?;
    if plan.drop.values().all(Vec::is_empty) {
        return Ok(false);
    }
    run.prune(graph, &groups, plan, Some(rls))?;
    run.restart_schedule(restart);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use crate::strategy::{compress, CompressConfig, Strategy};
    use crate::{layer_widths, Target};
    use pare_onnx::{attr, GraphBuilder};

    /// x[N,1,8,8] → Conv a (8, 3×3) → Relu → Conv b (8, 3×3) → Relu → GAP → Flatten → Gemm → y.
    fn graph() -> pare_ir::Graph {
        let wave = |n: usize, seed: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as f32 + seed) * 0.7123).sin() * 0.3)
                .collect()
        };
        let mut b = GraphBuilder::new("two_convs", 17);
        b.input("x", [-1i64, 1, 8, 8]);
        b.initializer(attr::tensor_f32("a.w", &[8, 1, 3, 3], wave(72, 1.0)));
        b.initializer(attr::tensor_f32("b.w", &[8, 8, 3, 3], wave(576, 2.0)));
        b.initializer(attr::tensor_f32("fc", &[10, 8], wave(80, 3.0)));
        let pad = || vec![attr::ints("pads", &[1, 1, 1, 1])];
        b.node("Conv", &["x", "a.w"], &["a"], pad());
        b.node("Relu", &["a"], &["ra"], vec![]);
        b.node("Conv", &["ra", "b.w"], &["b"], pad());
        b.node("Relu", &["b"], &["rb"], vec![]);
        b.node("GlobalAveragePool", &["rb"], &["g"], vec![]);
        b.node("Flatten", &["g"], &["f"], vec![]);
        b.node("Gemm", &["f", "fc"], &["y"], vec![attr::int("transB", 1)]);
        b.output("y", [-1i64, 10]);
        pare_ir::import(&b.build()).unwrap()
    }

    #[test]
    fn no_group_goes_below_its_width_floor() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits8x8");
        let splits = pare_data::load_dir(&dir).unwrap();
        let (train, val) = (splits.train.head(300), splits.test.head(100));
        let run = |floors: &[(&str, usize)]| {
            let config = CompressConfig {
                strategy: Strategy::Rls,
                epochs: 2,
                target: Some(Target::Macs(0.3)),
                accuracy_tolerance: 100.0,
                width_floors: floors.iter().map(|&(k, w)| (k.to_string(), w)).collect(),
                ..CompressConfig::default()
            };
            let mut g = graph();
            compress(&mut g, &train, &val, &config, &mut |_| {}).unwrap();
            // Conv a, Conv b, then the Gemm.
            let outputs: Vec<usize> = layer_widths(&g)
                .into_iter()
                .filter_map(|l| l.outputs)
                .collect();
            (outputs[0], outputs[1])
        };
        let (a, b) = run(&[]);
        assert!(
            a < 6,
            "without a floor the target takes a below 6 ({a}, {b})"
        );
        let (a, b) = run(&[("a", 6)]);
        assert!(a >= 6, "a floor of 6 keeps a at {a} (b {b})");
        assert!(b < 8, "b still goes ({a}, {b})");
    }
}
