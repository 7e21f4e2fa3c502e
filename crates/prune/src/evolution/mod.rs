//! The search behind `--strategy es` (docs/methods/es.md): a genome of one bit per prunable
//! channel, two objectives and their Pareto front, and an elitist evolution strategy over them.
//!
//! Nothing here trains or touches a graph: the strategy (`strategy/es.rs`) decodes genomes and
//! measures their objectives.

mod genome;
mod pareto;
mod search;

pub use genome::{Genome, GenomeLayout};
pub use pareto::{non_dominated, select, Objectives, Parents};
pub use search::{search, Individual, SearchProgress, SearchResult, SearchSettings};
