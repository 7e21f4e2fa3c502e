//! The flags of `--strategy es` (docs/methods/es.md) and the settings they make.

use anyhow::{Context, Result};
use pare_prune::{EsConfig, EvalBudget, Objective};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ObjectiveKind {
    /// Multiply-accumulates for one sample.
    Macs,
    /// Parameters.
    Params,
    /// Batch-1 latency predicted by the latency model (measured in tract first).
    Latency,
}

/// `--strategy es`: the search and where its front goes.
#[derive(clap::Args)]
pub struct EsArgs {
    /// ES: individuals per generation (the three parents included after the first).
    #[arg(long, default_value_t = EsConfig::default().population)]
    population: usize,
    /// ES: generations of the search.
    #[arg(long, default_value_t = EsConfig::default().generations)]
    generations: usize,
    /// ES: probability that mutation flips each channel's keep bit.
    #[arg(long, default_value_t = EsConfig::default().mutation)]
    mutation: f64,
    /// ES: epochs of the short fine-tune that scores each individual.
    #[arg(long, conflicts_with = "eval_batches")]
    eval_epochs: Option<f64>,
    /// ES: batches of the short fine-tune that scores each individual (0: BatchNorm statistics
    /// re-estimated only). Default 30.
    #[arg(long)]
    eval_batches: Option<usize>,
    /// ES: weights of (error, cost) in the knee's distance to the ideal point, as A,B.
    #[arg(long, default_value = "0.5,0.5")]
    knee_weights: String,
    /// ES: what the search minimises beside the error [default: macs; latency under a latency
    /// target].
    #[arg(long, value_enum)]
    objective: Option<ObjectiveKind>,
    /// ES: write heavy.onnx, knee.onnx, light.onnx, front.json and front.svg into this folder.
    #[arg(long)]
    pub front_dir: Option<PathBuf>,
}

impl EsArgs {
    /// The settings of `--strategy es` from its flags; `latency_target` makes latency the
    /// default objective.
    pub fn config(&self, latency_target: bool) -> Result<EsConfig> {
        let weights: Vec<f64> = self
            .knee_weights
            .split(',')
            .map(|w| w.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .ok()
            .filter(|w: &Vec<f64>| w.len() == 2)
            .with_context(|| {
                format!(
                    "--knee-weights {}: give two numbers A,B (error, cost), e.g. 0.5,0.5",
                    self.knee_weights
                )
            })?;
        let default = EsConfig::default();
        Ok(EsConfig {
            population: self.population,
            generations: self.generations,
            mutation: self.mutation,
            evaluation: match (self.eval_epochs, self.eval_batches) {
                (Some(epochs), _) => EvalBudget::Epochs(epochs),
                (None, Some(batches)) => EvalBudget::Batches(batches),
                (None, None) => default.evaluation,
            },
            knee_weights: [weights[0], weights[1]],
            objective: match self.objective {
                Some(ObjectiveKind::Macs) => Objective::Macs,
                Some(ObjectiveKind::Params) => Objective::Params,
                Some(ObjectiveKind::Latency) => Objective::Latency,
                None if latency_target => Objective::Latency,
                None => Objective::Macs,
            },
        })
    }
}
