//! The elitist, mutation-only evolution strategy with three parents (docs/methods/es.md,
//! "Search"). It knows genomes and objectives only: evaluating an individual is the caller's
//! closure, and a genome evaluated once is never evaluated again.

use super::genome::{Genome, GenomeLayout};
use super::pareto::{non_dominated, select, Objectives, Parents};
use pare_kernels::rng::SplitMix64;
use std::collections::HashMap;

/// The search's own settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SearchSettings {
    /// Individuals per generation: the three parents and their offspring (all offspring in the
    /// first generation).
    pub population: usize,
    pub generations: usize,
    /// Probability that mutation flips each bit.
    pub mutation: f64,
    /// Weights of (error, cost) in the knee's distance.
    pub knee_weights: [f64; 2],
    pub seed: u64,
}

impl SearchSettings {
    /// The most individuals a search evaluates (fewer when offspring repeat a genome).
    pub fn max_evaluations(&self) -> usize {
        self.population + self.generations.saturating_sub(1) * self.population.saturating_sub(3)
    }
}

/// One offspring of the search.
#[derive(Debug, Clone, PartialEq)]
pub struct Individual {
    /// Counted from 1.
    pub generation: usize,
    pub genome: Genome,
    pub objectives: Objectives,
    /// An earlier individual had the same genome: its objectives were reused.
    pub repeat: bool,
}

/// Where the search stands, after every offspring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchProgress {
    /// Counted from 1.
    pub generation: usize,
    pub generations: usize,
    /// Offspring of this generation done, and due.
    pub done: usize,
    pub offspring: usize,
    /// The lowest error and the lowest cost seen so far (not necessarily one individual's).
    pub best_error: f64,
    pub best_cost: f64,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Every offspring in the order made.
    pub individuals: Vec<Individual>,
    /// The positions in `individuals` of the last generation (its parents first).
    pub population: Vec<usize>,
    /// The final parents, as positions in `individuals`.
    pub parents: Parents,
}

impl SearchResult {
    /// The positions of the individuals no other individual dominates (duplicate genomes once).
    pub fn front(&self) -> Vec<usize> {
        let unique: Vec<usize> = (0..self.individuals.len())
            .filter(|&i| !self.individuals[i].repeat)
            .collect();
        let points: Vec<Objectives> = unique
            .iter()
            .map(|&i| self.individuals[i].objectives)
            .collect();
        non_dominated(&points)
            .into_iter()
            .map(|k| unique[k])
            .collect()
    }
}

/// Runs the search from the unpruned genome. `evaluate` scores a genome (each distinct one
/// once); `on_progress` hears after every offspring.
///
/// The first generation is `population` mutants of the unpruned network; each later one keeps
/// the three parents chosen from the one before and adds `population − 3` mutants of them, each
/// from a parent drawn uniformly. The returned parents are chosen from the last generation.
pub fn search<E>(
    layout: &GenomeLayout,
    settings: &SearchSettings,
    mut evaluate: impl FnMut(&Genome) -> Result<Objectives, E>,
    on_progress: &mut dyn FnMut(&SearchProgress),
) -> Result<SearchResult, E> {
    let mut rng = SplitMix64::new(settings.seed);
    let mut cache: HashMap<Genome, Objectives> = HashMap::new();
    let mut individuals: Vec<Individual> = Vec::new();
    let mut population: Vec<usize> = Vec::new();
    let mut best = (f64::INFINITY, f64::INFINITY);
    let mut parents: Vec<Genome> = vec![layout.full()];
    for generation in 1..=settings.generations.max(1) {
        // At least one member, so a generation always has parents to choose.
        let offspring = settings.population.max(1).saturating_sub(population.len());
        for done in 1..=offspring {
            let pick = ((rng.unit_f64() * parents.len() as f64) as usize).min(parents.len() - 1);
            let genome = layout.mutate(&parents[pick], settings.mutation, &mut rng);
            let (objectives, repeat) = match cache.get(&genome) {
                Some(&o) => (o, true),
                None => {
                    let o = evaluate(&genome)?;
                    cache.insert(genome.clone(), o);
                    (o, false)
                }
            };
            best = (best.0.min(objectives.error), best.1.min(objectives.cost));
            population.push(individuals.len());
            individuals.push(Individual {
                generation,
                genome,
                objectives,
                repeat,
            });
            on_progress(&SearchProgress {
                generation,
                generations: settings.generations,
                done,
                offspring,
                best_error: best.0,
                best_cost: best.1,
            });
        }
        let chosen = choose(&individuals, &population, settings.knee_weights);
        if generation < settings.generations {
            population = vec![chosen.heavy, chosen.light, chosen.knee];
            parents = population
                .iter()
                .map(|&i| individuals[i].genome.clone())
                .collect();
        }
    }
    let parents = choose(&individuals, &population, settings.knee_weights);
    Ok(SearchResult {
        individuals,
        population,
        parents,
    })
}

/// The parents chosen from `population` (positions in `individuals`), as positions in
/// `individuals`.
fn choose(individuals: &[Individual], population: &[usize], weights: [f64; 2]) -> Parents {
    let points: Vec<Objectives> = population
        .iter()
        .map(|&i| individuals[i].objectives)
        .collect();
    let p = select(&points, weights).expect("a generation has at least one member");
    Parents {
        heavy: population[p.heavy],
        light: population[p.light],
        knee: population[p.knee],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evolution::genome::tests::groups;

    fn settings(seed: u64) -> SearchSettings {
        SearchSettings {
            population: 8,
            generations: 5,
            mutation: 0.2,
            knee_weights: [0.5, 0.5],
            seed,
        }
    }

    /// A made-up fitness: cost is the bits kept; error grows as channels 0..4 of the first group
    /// go, which a good search learns to keep.
    fn toy(genome: &Genome) -> Result<Objectives, ()> {
        let bits = genome.bits();
        let kept = bits.iter().filter(|&&b| b).count();
        let important = bits[..4].iter().filter(|&&b| !b).count();
        Ok(Objectives {
            error: 0.05 * important as f64 + 0.001 * (bits.len() - kept) as f64,
            cost: kept as f64,
        })
    }

    fn run(seed: u64) -> (SearchResult, usize, Vec<SearchProgress>) {
        let layout = GenomeLayout::new(&groups(&[8, 12]), |_| 1, 1);
        let mut calls = 0;
        let mut progress = Vec::new();
        let result = search(
            &layout,
            &settings(seed),
            |g| {
                calls += 1;
                toy(g)
            },
            &mut |p| progress.push(*p),
        )
        .unwrap();
        (result, calls, progress)
    }

    #[test]
    fn generations_keep_the_three_parents_and_add_offspring() {
        let (result, calls, progress) = run(1);
        let s = settings(1);
        assert_eq!(result.individuals.len(), s.max_evaluations());
        assert_eq!(result.individuals.len(), 8 + 4 * 5);
        let repeats = result.individuals.iter().filter(|i| i.repeat).count();
        assert_eq!(
            calls + repeats,
            result.individuals.len(),
            "repeats come from the cache"
        );
        assert_eq!(result.population.len(), 8);
        assert_eq!(progress.len(), result.individuals.len());
        let last = progress.last().unwrap();
        assert_eq!((last.generation, last.done, last.offspring), (5, 5, 5));
        // The last generation holds the three earlier parents, then its own offspring.
        let generations: Vec<usize> = result
            .population
            .iter()
            .map(|&i| result.individuals[i].generation)
            .collect();
        assert!(generations[..3].iter().all(|&g| g < 5), "{generations:?}");
        assert!(generations[3..].iter().all(|&g| g == 5), "{generations:?}");
    }

    #[test]
    fn elitism_never_loses_the_best_error_or_cost() {
        let (result, _, progress) = run(2);
        let p = result.parents;
        let heavy = result.individuals[p.heavy].objectives;
        let light = result.individuals[p.light].objectives;
        let best = progress.last().unwrap();
        assert_eq!((heavy.error, light.cost), (best.best_error, best.best_cost));
        // The front of everything evaluated holds both boundaries and is mutually non-dominated.
        let front = result.front();
        for &i in &front {
            for &j in &front {
                let (a, b) = (
                    result.individuals[i].objectives,
                    result.individuals[j].objectives,
                );
                assert!(!a.dominates(b));
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_search() {
        assert_eq!(run(3).0, run(3).0);
        assert_ne!(run(3).0, run(4).0);
    }

    #[test]
    fn a_population_of_three_or_fewer_only_keeps_its_parents() {
        let layout = GenomeLayout::new(&groups(&[8]), |_| 1, 1);
        for population in [0, 1, 3] {
            let s = SearchSettings {
                population,
                ..settings(1)
            };
            let result = search(&layout, &s, toy, &mut |_| {}).unwrap();
            // The first generation only has offspring; later ones have no room for any.
            assert_eq!(result.individuals.len(), population.max(1));
        }
    }

    #[test]
    fn an_evaluation_error_stops_the_search() {
        let layout = GenomeLayout::new(&groups(&[16]), |_| 1, 1);
        let mut calls = 0;
        let result = search(
            &layout,
            &settings(0),
            |_| {
                calls += 1;
                if calls == 3 {
                    Err("diverged")
                } else {
                    Ok(Objectives {
                        error: 0.1,
                        cost: 1.0,
                    })
                }
            },
            &mut |_| {},
        );
        assert_eq!(result, Err("diverged"));
    }
}
