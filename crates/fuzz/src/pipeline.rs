//! One case: a mutated model made from the run's seed and the case's index, then taken through
//! every stage pare runs on a model before training: decode, external data, import (shapes,
//! folds, idioms), cost, channel groups, a pruning plan's surgery, export, and import again.

use crate::corpus::Corpus;
use crate::dice::Dice;
use crate::{mutate_bytes, mutate_graph, mutate_tensors};
use pare_kernels::rng::SplitMix64;
use pare_prune::PruningPlan;

/// How a case ended (a panic is caught by the campaign, not here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every stage passed.
    Passed,
    /// A stage refused the model with an error: the expected end of most mutants. `kind` is the
    /// stage and the error's variant, e.g. "import: Node".
    Refused { kind: String },
    /// A graph pare accepted came back from its own surgery or export in a form it refuses: a
    /// broken invariant, reported like a panic.
    Broken { stage: &'static str, error: String },
}

/// The seed of case `index` of a run seeded with `run_seed`: cases are independent, so any one
/// replays alone.
pub fn case_seed(run_seed: u64, index: u64) -> u64 {
    let mut mix = SplitMix64::new(run_seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    mix.next_u64()
}

/// A mutated model, as bytes, with the name of the seed it came from.
fn mutant(corpus: &Corpus, dice: &mut Dice) -> (String, Vec<u8>) {
    let seed = &corpus.seeds[dice.below(corpus.seeds.len())];
    let mut bytes = seed.bytes.clone();
    let structural = !dice.one_in(4);
    if structural {
        if let Ok(mut model) = pare_onnx::decode(&bytes, &corpus.model_path()) {
            for _ in 0..1 + dice.below(3) {
                if dice.one_in(2) {
                    mutate_graph::mutate(&mut model, dice);
                } else if let Some(graph) = model.graph.as_mut() {
                    mutate_tensors::mutate(graph, corpus, dice);
                }
            }
            bytes = pare_onnx::encode(&model);
        }
    }
    if !structural || dice.one_in(6) {
        let other = &corpus.seeds[dice.below(corpus.seeds.len())];
        mutate_bytes::mutate(&mut bytes, &other.bytes, dice);
    }
    (seed.name.clone(), bytes)
}

/// The model of case `index` of the run seeded with `run_seed`, and the name of its seed model.
pub fn case_model(corpus: &Corpus, run_seed: u64, index: u64) -> (String, Vec<u8>) {
    mutant(corpus, &mut Dice::new(case_seed(run_seed, index)))
}

/// Runs case `index` of the run seeded with `run_seed`, naming its seed model in `seed_model`
/// first. Panics propagate (the campaign catches them).
pub fn run_case(corpus: &Corpus, run_seed: u64, index: u64, seed_model: &mut String) -> Outcome {
    let mut dice = Dice::new(case_seed(run_seed, index));
    let (seed, bytes) = mutant(corpus, &mut dice);
    *seed_model = seed;
    match run_pipeline(corpus, &bytes, &mut dice) {
        Ok(()) => Outcome::Passed,
        Err(stop) => stop,
    }
}

fn refused(stage: &str, error: &impl std::fmt::Debug) -> Outcome {
    // The variant's name: the Debug text up to its fields.
    let debug = format!("{error:?}");
    let variant = debug.split(['(', ' ', '{']).next().unwrap_or_default();
    Outcome::Refused {
        kind: format!("{stage}: {variant}"),
    }
}

fn broken(stage: &'static str, error: impl std::fmt::Display) -> Outcome {
    Outcome::Broken {
        stage,
        error: error.to_string(),
    }
}

fn run_pipeline(corpus: &Corpus, bytes: &[u8], dice: &mut Dice) -> Result<(), Outcome> {
    let path = corpus.model_path();
    let mut model = pare_onnx::decode(bytes, &path).map_err(|e| refused("decode", &e))?;
    pare_onnx::inline_external_data(&mut model, &path).map_err(|e| refused("external data", &e))?;
    let mut graph = pare_ir::import(&model).map_err(|e| refused("import", &e))?;
    let _costs = pare_ir::node_costs(&graph);
    let groups = pare_prune::analyze(&graph);

    // The model as imported must export, encode, decode and import again.
    let exported = pare_onnx::encode(&pare_ir::export(&graph));
    let decoded = pare_onnx::decode(&exported, &path).map_err(|e| broken("export decode", e))?;
    pare_ir::import(&decoded).map_err(|e| broken("export import", e))?;

    // So must the model after a plan drops some channels of each of a few prunable groups.
    let mut plan = PruningPlan::default();
    for group in groups.groups.iter().filter(|g| g.prunable()) {
        if dice.one_in(2) {
            let drop = 1 + dice.below(group.channels - 1);
            plan.drop_channels(group.id, (0..drop).map(|_| dice.below(group.channels)));
        }
    }
    plan.apply(&mut graph, &groups)
        .map_err(|e| broken("surgery", e))?;
    let _costs = pare_ir::node_costs(&graph);
    let pruned = pare_onnx::encode(&pare_ir::export(&graph));
    let decoded = pare_onnx::decode(&pruned, &path).map_err(|e| broken("pruned decode", e))?;
    pare_ir::import(&decoded).map_err(|e| broken("pruned import", e))?;
    Ok(())
}
