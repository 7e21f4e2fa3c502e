//! Training flags shared by the commands that train (`finetune` and the main `compress` job),
//! and the optimiser and loss they configure.

use anyhow::{bail, Result};
use pare_train::{AdamConfig, Loss, OptimizerConfig, RlsConfig, SgdConfig};
use serde::Serialize;

/// The longest training budget a command accepts: far beyond any real run, and small enough that
/// counting its steps cannot overflow.
const MAX_EPOCHS: usize = 100_000;

/// Refuses a training budget of no epochs or of more than `MAX_EPOCHS`.
pub fn check_epochs(epochs: usize) -> Result<()> {
    if epochs == 0 || epochs > MAX_EPOCHS {
        bail!("--epochs must be between 1 and {MAX_EPOCHS}");
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum OptimizerKind {
    /// Recursive least squares (W ← W − η·G·P per layer; other parameters by SGD).
    Rls,
    /// SGD with momentum.
    Sgd,
    /// Adam.
    Adam,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LossKind {
    /// Softmax cross-entropy on the logits.
    CrossEntropy,
    /// Mean squared error against one-hot targets.
    Mse,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The optimiser (default rls).
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Learning rate of SGD and Adam, and of the parameters RLS hands to SGD (BatchNorm).
    /// Default: 0.01 for SGD, 0.001 for Adam.
    #[arg(long)]
    pub lr: Option<f32>,
    /// RLS: initial P = α·I. α·η acts as the learning rate; keep it ≤ 0.3 for a pretrained model.
    #[arg(long, default_value_t = 0.1)]
    pub alpha: f64,
    /// RLS: step scale η.
    #[arg(long, default_value_t = 3.0)]
    pub eta: f64,
    /// RLS: forgetting factor λ in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub lambda: f64,
    /// The training loss.
    #[arg(long, value_enum, default_value_t = LossKind::CrossEntropy)]
    pub loss: LossKind,
    /// Keep BatchNorm in inference mode (running statistics) while training.
    #[arg(long)]
    pub freeze_bn: bool,
    /// Seed of the batch order (and of everything else drawn at random).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl TrainArgs {
    pub fn loss(&self) -> Loss {
        match self.loss {
            LossKind::CrossEntropy => Loss::CrossEntropy,
            LossKind::Mse => Loss::Mse,
        }
    }

    fn lr(&self) -> Result<Option<f32>> {
        if self.lr.is_some_and(|lr| !(lr > 0.0 && lr.is_finite())) {
            bail!("--lr must be a positive number");
        }
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        Ok(self.lr)
    }

    /// The RLS settings, whichever optimiser is chosen.
    pub fn rls(&self) -> Result<RlsConfig> {
        let valid = self.lambda > 0.0 && self.lambda <= 1.0 && self.alpha > 0.0 && self.eta > 0.0;
        if !valid {
            bail!("RLS needs 0 < --lambda ≤ 1, --alpha > 0 and --eta > 0");
        }
        Ok(RlsConfig {
            alpha: self.alpha,
            eta: self.eta,
            lambda: self.lambda,
            other: SgdConfig {
                lr: self.lr()?.unwrap_or(0.01),
                ..SgdConfig::default()
            },
        })
    }

    /// The chosen optimiser (RLS when none is).
    pub fn optimizer(&self) -> Result<OptimizerConfig> {
        let lr = self.lr()?;
        Ok(match self.optimizer.unwrap_or(OptimizerKind::Rls) {
            OptimizerKind::Sgd => OptimizerConfig::Sgd(SgdConfig {
                lr: lr.unwrap_or(0.01),
                ..SgdConfig::default()
            }),
            OptimizerKind::Adam => OptimizerConfig::Adam(AdamConfig {
                lr: lr.unwrap_or(1e-3),
                ..AdamConfig::default()
            }),
            OptimizerKind::Rls => OptimizerConfig::Rls(self.rls()?),
        })
    }
}
