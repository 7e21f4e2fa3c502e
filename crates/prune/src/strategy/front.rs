//! What `--strategy es` hands back besides the model it writes: every individual its search
//! evaluated, which of them lie on the accuracy–cost front, and the three models picked from it
//! (docs/methods/es.md, "Output"). The CLI writes it as front.json and front.svg.

use super::config::Objective;
use crate::selection::Cost;
use pare_ir::Graph;

/// The search's individuals and the models picked from its front.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Front {
    /// What `cost` measures.
    pub objective: Objective,
    pub original: Cost,
    /// The unpruned network's validation accuracy, in percent.
    pub original_validation_accuracy: f64,
    /// The prunable groups, in genome order.
    pub groups: Vec<FrontGroup>,
    /// Every offspring in the order made.
    pub individuals: Vec<FrontIndividual>,
    /// The most accurate, the knee and the cheapest, fine-tuned for the whole budget.
    pub picks: Vec<Pick>,
    /// The individual written as the output model (a pick, or with a target the most accurate
    /// member of the front within it).
    pub output: usize,
}

/// One prunable group of the genome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FrontGroup {
    /// The first activation that carries its channels.
    pub name: String,
    pub channels: usize,
}

/// One offspring of the search.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FrontIndividual {
    /// Counted from 1.
    pub generation: usize,
    /// Channels kept per group, in `Front::groups` order.
    pub kept: Vec<usize>,
    /// 1 − validation accuracy after the short fine-tune.
    pub error: f64,
    /// MACs or parameters (`Front::objective`) over the original's.
    pub cost: f64,
    pub macs: u64,
    pub params: u64,
    /// No other distinct individual is as good in both objectives and better in one.
    pub on_front: bool,
    /// An earlier individual had the same genome; its objectives were reused.
    pub repeat: bool,
}

/// The role of a picked model on the front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The lowest error.
    Heavy,
    /// The knee between the two boundaries.
    Knee,
    /// The lowest cost.
    Light,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Heavy, Role::Knee, Role::Light];

    /// Its name, as in the files written for it (`heavy.onnx`, …).
    pub fn name(self) -> &'static str {
        match self {
            Role::Heavy => "heavy",
            Role::Knee => "knee",
            Role::Light => "light",
        }
    }
}

/// A model picked from the front, fine-tuned for the whole budget.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pick {
    pub role: Role,
    /// Its position in `Front::individuals`.
    pub individual: usize,
    pub cost: Cost,
    /// Validation accuracy after the final fine-tune, in percent.
    pub validation_accuracy: f64,
    /// The fine-tuned network.
    #[serde(skip)]
    pub graph: Graph,
}
