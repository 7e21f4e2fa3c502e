//! The flags of `--strategy relief` (docs/methods/relief.md).

use pare_prune::relief::{ReliefSettings, ScoreForm};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ScoreFormKind {
    /// Mean over the pruning set of each image's kernel map norm (the paper's form).
    PerSample,
    /// Norm of the kernel map of the mean |input|: one convolution per layer, cheaper.
    MeanInput,
}

#[derive(clap::Args)]
pub struct ReliefArgs {
    /// relief: masking and retraining passes, each with an equal share of --epochs.
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// relief: share of a filter's signal its kept kernels carry.
    #[arg(long, default_value_t = 0.9)]
    alpha_conv: f64,
    /// relief: share of a Gemm/MatMul neuron's signal its kept weights carry.
    #[arg(long, default_value_t = 0.95)]
    alpha_fc: f64,
    /// relief: how a convolution kernel's share is measured.
    #[arg(long, value_enum, default_value_t = ScoreFormKind::PerSample)]
    relief_score: ScoreFormKind,
    /// relief: training images (drawn by --seed) the shares are measured on.
    #[arg(long, default_value_t = 1000)]
    pruning_images: usize,
}

impl ReliefArgs {
    pub fn settings(&self) -> ReliefSettings {
        ReliefSettings {
            alpha_conv: self.alpha_conv,
            alpha_fc: self.alpha_fc,
            form: match self.relief_score {
                ScoreFormKind::PerSample => ScoreForm::PerSample,
                ScoreFormKind::MeanInput => ScoreForm::MeanInput,
            },
            pruning_images: self.pruning_images,
            iterations: self.iterations,
        }
    }
}
