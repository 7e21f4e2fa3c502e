//! Properties the model tests share (included with `mod properties;`). Surgery: zero what a
//! random subset of channels feeds into (the consumers' input slices), so those channels carry
//! nothing; pruning exactly them must not change tract's outputs on the exported file. Forward:
//! pare's forward pass agrees with tract's. Training: one step runs and moves the weights.

#![allow(dead_code)] // each test target uses a different part

use ndarray::{Array4, Axis, Ix2};
use pare_ir::{Graph, Tensor, ValueSource};
use pare_prune::{analyze, PruningPlan, SliceKind};
use pare_train::{forward, Mode};
use pare_verify::{max_abs_diff, TractModel};
use std::path::Path;

pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub fn weights(n: usize, seed: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + seed) * 0.6173).sin() * 0.5)
        .collect()
}

/// A random plan dropping 1..C-1 channels of every prunable group.
pub fn random_plan(graph: &Graph, rng: &mut Lcg) -> PruningPlan {
    let groups = analyze(graph);
    let mut plan = PruningPlan::default();
    for g in groups.groups.iter().filter(|g| g.prunable()) {
        let count = 1 + rng.below(g.channels - 1);
        let mut channels: Vec<usize> = (0..g.channels).collect();
        for i in 0..count {
            let j = i + rng.below(g.channels - i);
            channels.swap(i, j);
        }
        plan.drop_channels(g.id, channels[..count].iter().copied());
    }
    plan
}

/// Zeroes the consumer slices of the dropped channels, so they carry nothing downstream.
pub fn silence(graph: &mut Graph, plan: &PruningPlan) {
    let groups = analyze(graph);
    for slice in groups
        .slices
        .iter()
        .filter(|s| s.kind == SliceKind::Consumer)
    {
        let mut offset = 0;
        let mut dead = Vec::new();
        for seg in &slice.segments {
            let g = groups.group_of_space(seg.space);
            for &c in plan.drop.get(&g).map(Vec::as_slice).unwrap_or(&[]) {
                dead.extend(offset + c * seg.block..offset + (c + 1) * seg.block);
            }
            offset += seg.len * seg.block;
        }
        if let ValueSource::Initializer(Tensor::F32(t)) = &mut graph.value_mut(slice.tensor).source
        {
            for i in dead {
                t.index_axis_mut(Axis(slice.axis), i).fill(0.0);
            }
        }
    }
}

pub fn run(graph: &Graph, dir: &Path, name: &str, x: &Array4<f32>) -> ndarray::Array2<f32> {
    let path = dir.join(name);
    pare_onnx::write_model(&path, &pare_ir::export(graph)).unwrap();
    TractModel::load(&path, x.shape())
        .unwrap()
        .run(x.view())
        .unwrap()
}

/// The largest output magnitude, at least 1: tolerances are relative to it, since float sums of
/// deep random networks round in proportion to the size of what they add.
fn output_scale(outputs: &ndarray::Array2<f32>) -> f32 {
    outputs.iter().fold(1.0f32, |m, v| m.max(v.abs()))
}

/// Prunes random channel subsets several times and checks tract sees no difference beyond
/// `tolerance` relative to the outputs' scale (deep networks sum in a different order once
/// channels are gone). Returns the
/// number of prunable groups.
pub fn check_surgery(
    name: &str,
    graph: &Graph,
    x: &Array4<f32>,
    seeds: u64,
    tolerance: f32,
) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let groups = analyze(graph);
    let prunable = groups.groups.iter().filter(|g| g.prunable()).count();
    let before = pare_ir::node_costs(graph)
        .iter()
        .map(|c| c.params)
        .sum::<usize>();
    for seed in 0..seeds {
        let mut rng = Lcg(seed * 7919 + 1);
        let plan = random_plan(graph, &mut rng);
        let mut silenced = graph.clone();
        silence(&mut silenced, &plan);
        let mut pruned = silenced.clone();
        plan.apply(&mut pruned, &analyze(&silenced)).unwrap();
        let a = run(&silenced, dir.path(), "silenced.onnx", x);
        let b = run(&pruned, dir.path(), "pruned.onnx", x);
        let diff = max_abs_diff(&a, &b);
        assert!(
            diff <= tolerance * output_scale(&a),
            "{name}, seed {seed}: outputs differ by {diff} (outputs up to {})",
            output_scale(&a)
        );
        let after = pare_ir::node_costs(&pruned)
            .iter()
            .map(|c| c.params)
            .sum::<usize>();
        assert!(
            prunable == 0 || after < before,
            "{name}: pruning removed no parameter"
        );
        // Every group keeps at least one channel.
        for g in analyze(&pruned).groups {
            assert!(g.channels >= 1);
        }
    }
    prunable
}

pub fn image(n: usize, c: usize, hw: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, c, hw, hw), |(a, b, y, x)| {
        ((a * 131 + b * 31 + y * 7 + x) as f32 * 0.377).sin()
    })
}

/// pare's forward pass against tract's on the same file, to 1e-4 of the outputs' scale.
pub fn assert_forward_matches_tract(name: &str, graph: &Graph, x: &ndarray::Array4<f32>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    pare_onnx::write_model(&path, &pare_ir::export(graph)).unwrap();
    let ours = forward(graph, x.clone().into_dyn(), Mode::Eval, false, None).unwrap();
    let ours = ours
        .value(graph.outputs[0])
        .unwrap()
        .clone()
        .into_dimensionality::<Ix2>()
        .unwrap();
    let theirs = TractModel::load(&path, x.shape())
        .unwrap()
        .run(x.view())
        .unwrap();
    let diff = max_abs_diff(&ours, &theirs);
    let scale = output_scale(&theirs);
    assert!(
        diff <= 1e-4 * scale,
        "{name}: max |ours − tract| = {diff} (outputs up to {scale})"
    );
}

/// One SGD step on a few labelled images: the loss is finite and some weight moved.
pub fn assert_one_training_step(
    name: &str,
    graph: &Graph,
    x: &ndarray::Array4<f32>,
    classes: usize,
) {
    let data = pare_data::Dataset::new(x.clone(), (0..x.shape()[0]).map(|i| i % classes).collect());
    let config = pare_train::TrainConfig {
        epochs: 1,
        batch_size: x.shape()[0],
        seed: 7,
        loss: pare_train::Loss::CrossEntropy.into(),
        optimizer: pare_train::OptimizerConfig::Sgd(pare_train::SgdConfig::default()),
        batchnorm_training: true,
        max_grad_norm: None,
    };
    let mut trained = graph.clone();
    let reports = pare_train::train(&mut trained, &data, &config, &mut |_| {}).unwrap();
    assert!(
        reports[0].train.loss.is_finite(),
        "{name}: loss {}",
        reports[0].train.loss
    );
    assert_ne!(&trained, graph, "{name}: the step changed no weight");
}
