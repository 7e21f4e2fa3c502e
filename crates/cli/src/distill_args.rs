//! The distillation flags of `compress`: how the compressed model learns from the original's
//! scores, always on unlabeled images and with `--distill` on labelled ones.

use anyhow::{bail, Result};
use pare_train::{DistillForm, Distillation};

/// The help heading of the distillation flags.
const HEADING: &str = "Distillation (unlabeled data, or --distill)";

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
enum DistillLossKind {
    /// KL divergence between the softmax of both models' scores at --temperature.
    #[default]
    Kl,
    /// Mean squared error between the logits.
    Mse,
}

#[derive(clap::Args, Clone, Debug)]
pub struct DistillArgs {
    /// With labelled data, also pull the compressed model's scores toward the original's
    /// (unlabeled data always trains this way, on the original's scores alone).
    #[arg(long, help_heading = HEADING)]
    pub distill: bool,
    /// How the scores are compared.
    #[arg(long, value_enum, default_value_t, help_heading = HEADING)]
    distill_loss: DistillLossKind,
    /// Softening temperature of --distill-loss kl (above 0).
    #[arg(long, default_value_t = 1.0, help_heading = HEADING)]
    temperature: f32,
    /// With --distill on labelled data: the teacher term's share of the loss (0 to 1); the label
    /// loss gets the rest.
    #[arg(long, default_value_t = 0.5, help_heading = HEADING)]
    distill_weight: f32,
    /// Unlabeled data: the fraction of the images held out for the final check of agreement with
    /// the original (the rest trains, with --val-fraction of it held out for recovery checks).
    #[arg(long, default_value_t = 0.2, help_heading = HEADING)]
    pub test_fraction: f32,
}

impl DistillArgs {
    /// Refuses values out of range, whatever the data.
    pub fn check(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            bail!("--temperature must be a number above 0");
        }
        if !(0.0..=1.0).contains(&self.distill_weight) {
            bail!("--distill-weight must be from 0 to 1");
        }
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            bail!("--test-fraction must be above 0 and below 1");
        }
        Ok(())
    }

    /// The teacher term: with `labelled` data the --distill-weight share of the loss, without
    /// labels all of it.
    pub fn distillation(&self, labelled: bool) -> Distillation {
        Distillation {
            form: match self.distill_loss {
                DistillLossKind::Kl => DistillForm::Kl {
                    temperature: self.temperature,
                },
                DistillLossKind::Mse => DistillForm::LogitMse,
            },
            weight: if labelled { self.distill_weight } else { 1.0 },
        }
    }
}
