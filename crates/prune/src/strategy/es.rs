//! `--strategy es` (docs/methods/es.md): an evolution strategy searches which channels to keep,
//! scoring each candidate by its validation error after a short fine-tune and by its cost; three
//! models of the front it finds (the most accurate, the knee, the cheapest) are fine-tuned for
//! the whole budget, and one of them (or, with a target, the most accurate member of the front
//! within it) becomes the output.
//!
//! Every candidate is decoded from the original trained weights, never from its parent's.

use super::config::{CompressConfig, EsConfig, EvalBudget};
use super::front::{Front, FrontGroup, FrontIndividual, Pick, Role};
use super::report::{Event, Progress};
use super::run::{final_schedule, train_config, PruningStrategy, Run};
use crate::evolution::{search, Genome, GenomeLayout, Objectives, SearchResult, SearchSettings};
use crate::groups::{analyze, ChannelGroups};
use crate::selection::{Cost, Meter, Target};
use crate::PruneError;
use pare_data::Dataset;
use pare_ir::Graph;
use pare_train::optim::Optimizer;
use pare_train::{
    reestimate_batchnorm, BatchStream, Evaluation, Schedule, TrainError, TrainingLoop,
};
use std::collections::HashMap;

/// `Strategy::Es`.
pub(crate) struct Evolution;

/// Mixed into `--seed` for the search's own draws, so they are not the batch order's.
const SEARCH_SALT: u64 = 0x6573_2d73_6561_7263;

impl PruningStrategy for Evolution {
    fn check(&self, config: &CompressConfig) -> Result<(), PruneError> {
        config.es.check()
    }

    fn run(&self, graph: &mut Graph, run: &mut Run) -> Result<(), PruneError> {
        let config = run.config;
        let es = config.es;
        let start = run.validate_and_record(graph, Event::Start)?;
        let original = graph.clone();
        let decoder = Decoder::new(&original, config, run.train_data(), run.val_data());
        let eval_steps = match es.evaluation {
            EvalBudget::Epochs(epochs) => run.steps_in(epochs),
            EvalBudget::Batches(batches) => batches,
        };
        let mut costs: HashMap<Genome, Cost> = HashMap::new();
        let result = search(
            &decoder.layout,
            &settings(&es, config.seed),
            |genome| {
                let (cost, objectives) = decoder.score(genome, eval_steps)?;
                costs.insert(genome.clone(), cost);
                Ok::<_, PruneError>(objectives)
            },
            &mut |p| {
                run.report(&Progress {
                    step: p.done,
                    total_steps: p.offspring,
                    loss: f32::NAN,
                    macs_fraction: 1.0,
                    prunes: 0,
                    search: Some(*p),
                })
            },
        )?;
        let front = result.front();
        let individual_of = |role: Role| match role {
            Role::Heavy => result.parents.heavy,
            Role::Knee => result.parents.knee,
            Role::Light => result.parents.light,
        };
        let output = match config.target {
            None => result.parents.knee,
            // The most accurate within the target (the cheaper on a tie), else the cheapest.
            Some(target) => front
                .iter()
                .copied()
                .filter(|&i| decoder.meets(target, &result.individuals[i].genome))
                .min_by(|&a, &b| {
                    let (a, b) = (
                        result.individuals[a].objectives,
                        result.individuals[b].objectives,
                    );
                    a.error.total_cmp(&b.error).then(a.cost.total_cmp(&b.cost))
                })
                .unwrap_or(result.parents.light),
        };
        let genome_of = |i: usize| &result.individuals[i].genome;

        // Each distinct model once: the picks apart from the output in fresh loops, then the
        // output within the run's own budget (the same batches and schedule, so the same weights).
        let total = run.steps_in(config.epochs as f64);
        let mut tuned: Vec<(Genome, Graph, Evaluation)> = Vec::new();
        for role in Role::ALL {
            let genome = genome_of(individual_of(role));
            if genome == genome_of(output) || tuned.iter().any(|t| &t.0 == genome) {
                continue;
            }
            let mut net = decoder.decode(genome)?;
            let macs_fraction =
                Cost::of(&net).macs as f64 / decoder.meter.original().macs.max(1) as f64;
            let mut steps = decoder.training_loop(&net, total, final_schedule(config, 0))?;
            decoder.fine_tune(&mut net, |net, optimizer| {
                steps.run(net, optimizer, total, &mut |s| {
                    run.report(&Progress {
                        step: s.step,
                        total_steps: total,
                        loss: s.loss,
                        macs_fraction,
                        prunes: 1,
                        search: None,
                    })
                })
            })?;
            let val = run.validate(&net)?;
            tuned.push((genome.clone(), net, val));
        }
        // The graph is still the original: prune it as decoding would, recording the prune.
        let plan = decoder.layout.plan(genome_of(output));
        run.prune(graph, &decoder.groups, plan, None)?;
        decoder.reestimate(graph)?;
        run.anneal_schedule();
        decoder.fine_tune(graph, |net, optimizer| run.train(net, optimizer, total))?;
        let val = run.validate(graph)?;
        let recovered = val.loss <= start.loss;
        run.record(graph, Event::Check { recovered }, val);
        tuned.push((genome_of(output).clone(), graph.clone(), val));

        let picks = Role::ALL
            .map(|role| {
                let individual = individual_of(role);
                let (_, net, val) = tuned
                    .iter()
                    .find(|t| &t.0 == genome_of(individual))
                    .expect("every pick was fine-tuned");
                Pick {
                    role,
                    individual,
                    cost: Cost::of(net),
                    validation_accuracy: val.accuracy_percent(),
                    graph: net.clone(),
                }
            })
            .to_vec();
        run.set_front(decoder.front(
            &result,
            &front,
            &costs,
            start.accuracy_percent(),
            picks,
            output,
        ));
        Ok(())
    }
}

/// The search's settings from the strategy's.
fn settings(es: &EsConfig, seed: u64) -> SearchSettings {
    SearchSettings {
        population: es.population,
        generations: es.generations,
        mutation: es.mutation,
        knee_weights: es.knee_weights,
        seed: seed ^ SEARCH_SALT,
    }
}

/// Decodes genomes onto copies of the original network, fine-tunes and scores them.
pub(crate) struct Decoder<'a> {
    original: &'a Graph,
    groups: ChannelGroups,
    pub layout: GenomeLayout,
    config: &'a CompressConfig,
    train: &'a Dataset,
    val: &'a Dataset,
    /// The original network's cost, and the latency table when there is one.
    pub meter: Meter<'a>,
}

impl<'a> Decoder<'a> {
    pub fn new(
        original: &'a Graph,
        config: &'a CompressConfig,
        train: &'a Dataset,
        val: &'a Dataset,
    ) -> Self {
        let groups = analyze(original);
        let layout = GenomeLayout::new(&groups, |w| config.kept_floor(w), config.round_to);
        Decoder {
            original,
            groups,
            layout,
            config,
            train,
            val,
            meter: Meter::new(original, config.latency.as_ref()),
        }
    }

    /// Whether `genome`'s network meets `target` (false if it cannot be decoded).
    fn meets(&self, target: Target, genome: &Genome) -> bool {
        self.decode(genome)
            .is_ok_and(|net| self.meter.is_met(target, &net))
    }

    /// BatchNorm statistics re-estimated on `calibration_batches` training batches, always the
    /// same ones.
    fn reestimate(&self, net: &mut Graph) -> Result<(), TrainError> {
        let mut stream = BatchStream::new(self.train, self.config.batch_size, !self.config.seed);
        reestimate_batchnorm(net, &mut stream, self.config.calibration_batches)
    }

    /// A copy of the original network pruned to `genome`, its BatchNorm statistics re-estimated.
    pub fn decode(&self, genome: &Genome) -> Result<Graph, PruneError> {
        let mut net = self.original.clone();
        self.layout.plan(genome).apply(&mut net, &self.groups)?;
        self.reestimate(&mut net)?;
        Ok(net)
    }

    /// A loop training `net` over the run's batches long enough for `steps` steps, with
    /// `schedule`.
    fn training_loop(
        &self,
        net: &Graph,
        steps: usize,
        schedule: Schedule,
    ) -> Result<TrainingLoop<'a>, PruneError> {
        let per_epoch = self.train.len().div_ceil(self.config.batch_size).max(1);
        let epochs = steps.div_ceil(per_epoch).max(1);
        let mut steps = TrainingLoop::new(net, self.train, train_config(self.config, epochs))?;
        steps.set_schedule(schedule);
        Ok(steps)
    }

    /// Trains `net` with a new optimiser through `train`; a fine-tune that diverges leaves `net`
    /// as it was before.
    fn fine_tune(
        &self,
        net: &mut Graph,
        train: impl FnOnce(&mut Graph, &mut dyn Optimizer) -> Result<(), TrainError>,
    ) -> Result<(), PruneError> {
        let before = net.clone();
        let mut optimizer = self.config.finetune.build(net);
        match train(net, optimizer.as_mut()) {
            Err(TrainError::Diverged { .. }) => {
                *net = before;
                Ok(())
            }
            trained => Ok(trained?),
        }
    }

    /// The cost of `genome` and its objectives: the validation error after `steps` steps of
    /// fine-tuning at the configured step, and the cost as a fraction of the original's.
    pub fn score(&self, genome: &Genome, steps: usize) -> Result<(Cost, Objectives), PruneError> {
        let mut net = self.decode(genome)?;
        if steps > 0 {
            let mut training = self.training_loop(&net, steps, Schedule::Constant)?;
            self.fine_tune(&mut net, |net, optimizer| {
                training.run(net, optimizer, steps, &mut |_| {})
            })?;
        }
        let c = self.config;
        let val = pare_train::evaluate(&net, self.val, c.batch_size, &c.loss)?;
        let cost = Cost::of(&net);
        Ok((
            cost,
            Objectives {
                error: 1.0 - val.accuracy_percent() / 100.0,
                cost: c.es.objective.fraction(&self.meter, &net),
            },
        ))
    }

    /// The report of a finished search.
    fn front(
        &self,
        result: &SearchResult,
        front: &[usize],
        costs: &HashMap<Genome, Cost>,
        original_accuracy: f64,
        picks: Vec<Pick>,
        output: usize,
    ) -> Front {
        let groups = self
            .layout
            .groups()
            .map(|(id, channels)| FrontGroup {
                name: self
                    .groups
                    .group(id)
                    .values
                    .first()
                    .map_or_else(String::new, |&v| self.original.value(v).name.clone()),
                channels,
            })
            .collect();
        let individuals = result
            .individuals
            .iter()
            .enumerate()
            .map(|(i, ind)| {
                let cost = costs[&ind.genome];
                FrontIndividual {
                    generation: ind.generation,
                    kept: self.layout.kept(&ind.genome),
                    error: ind.objectives.error,
                    cost: ind.objectives.cost,
                    macs: cost.macs,
                    params: cost.params,
                    on_front: front.contains(&i),
                    repeat: ind.repeat,
                }
            })
            .collect();
        Front {
            objective: self.config.es.objective,
            original: self.meter.original(),
            original_validation_accuracy: original_accuracy,
            groups,
            individuals,
            picks,
            output,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{compress, Strategy};
    use pare_kernels::rng::SplitMix64;
    use std::path::Path;

    fn root() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
    }

    fn lenet() -> Graph {
        let path = root().join("models/lenet5_opset17.onnx");
        pare_ir::import(&pare_onnx::read_model(&path).unwrap()).unwrap()
    }

    /// A few hundred MNIST images: (train, validation).
    fn data() -> (Dataset, Dataset) {
        let splits = pare_data::load_dir(&root().join("models/mnist5k")).unwrap();
        (splits.train.head(256), splits.test.head(128))
    }

    fn config() -> CompressConfig {
        CompressConfig {
            strategy: Strategy::Es,
            epochs: 1,
            batch_size: 32,
            calibration_batches: 2,
            round_to: 4,
            es: EsConfig {
                population: 5,
                generations: 2,
                mutation: 0.2,
                evaluation: EvalBudget::Batches(2),
                ..EsConfig::default()
            },
            ..CompressConfig::default()
        }
    }

    #[test]
    fn decoding_slices_the_original_weights_and_never_changes_them() {
        let original = lenet();
        let (train, val) = data();
        let config = config();
        let decoder = Decoder::new(&original, &config, &train, &val);
        let mut rng = SplitMix64::new(5);
        let parent = decoder.layout.mutate(&decoder.layout.full(), 0.3, &mut rng);
        let child = decoder.layout.mutate(&parent, 0.3, &mut rng);
        // Decoding the parent first (and fine-tuning its copy) changes nothing for the child.
        let (_, parent_objectives) = decoder.score(&parent, 2).unwrap();
        assert!(parent_objectives.cost < 1.0);
        let decoded = decoder.decode(&child).unwrap();
        assert_eq!(&original, &lenet(), "the caller's graph is untouched");
        // LeNet-5 has no BatchNorm: decoding is exactly the plan applied to the original.
        let mut direct = lenet();
        let groups = analyze(&direct);
        decoder
            .layout
            .plan(&child)
            .apply(&mut direct, &groups)
            .unwrap();
        assert_eq!(decoded, direct);
        assert!(Cost::of(&decoded).macs < decoder.meter.original().macs);
    }

    #[test]
    fn decoding_re_estimates_batchnorm_statistics_on_the_pruned_copy() {
        let path = root().join("models/vggbn_keepbn_opset17.onnx");
        let original = pare_ir::import(&pare_onnx::read_model(&path).unwrap()).unwrap();
        let (train, val) = data();
        let config = config();
        let decoder = Decoder::new(&original, &config, &train, &val);
        let mut rng = SplitMix64::new(9);
        let genome = decoder.layout.mutate(&decoder.layout.full(), 0.3, &mut rng);
        let decoded = decoder.decode(&genome).unwrap();
        let mut sliced = original.clone();
        decoder
            .layout
            .plan(&genome)
            .apply(&mut sliced, &decoder.groups)
            .unwrap();
        // The same architecture and weights; only the BatchNorm running statistics moved.
        assert_eq!(pare_ir::node_costs(&decoded), pare_ir::node_costs(&sliced));
        let statistics: Vec<pare_ir::ValueId> = decoded
            .node_ids()
            .filter(|&n| matches!(decoded.node(n).op, pare_ir::Op::BatchNorm { .. }))
            .flat_map(|n| decoded.node(n).inputs[3..5].to_vec())
            .flatten()
            .collect();
        let differing: Vec<pare_ir::ValueId> = decoded
            .node_ids()
            .flat_map(|n| decoded.node(n).inputs.clone())
            .flatten()
            .filter(|&v| decoded.value(v).source != sliced.value(v).source)
            .collect();
        assert!(!differing.is_empty());
        assert!(differing.iter().all(|v| statistics.contains(v)));
    }

    fn run(seed: u64) -> (Graph, crate::Outcome) {
        let mut graph = lenet();
        let (train, val) = data();
        let config = CompressConfig { seed, ..config() };
        let outcome = compress(&mut graph, &train, &val, &config, &mut |_| {}).unwrap();
        (graph, outcome)
    }

    #[test]
    fn a_small_search_is_deterministic_by_seed_and_writes_the_knee() {
        let (graph, outcome) = run(1);
        let front = outcome.front.as_ref().expect("es reports its front");
        // 5 offspring in the first generation, 2 in the second.
        assert_eq!(front.individuals.len(), 7);
        let widths: Vec<usize> = front.groups.iter().map(|g| g.channels).collect();
        for individual in &front.individuals {
            for (&kept, &width) in individual.kept.iter().zip(&widths) {
                assert!(
                    kept == width || kept % 4 == 0,
                    "--round-to 4: {kept} of {width}"
                );
            }
        }
        assert!(front.individuals.iter().any(|i| i.on_front));
        let roles: Vec<Role> = front.picks.iter().map(|p| p.role).collect();
        assert_eq!(roles, Role::ALL);
        let knee = &front.picks[1];
        assert_eq!(
            front.output, knee.individual,
            "without a target the knee is written"
        );
        assert_eq!(graph, knee.graph);
        assert_eq!(outcome.compressed, knee.cost);
        for pick in &front.picks {
            assert!(front.individuals[pick.individual].cost <= 1.0);
            assert_eq!(Cost::of(&pick.graph), pick.cost);
        }
        let events: Vec<&Event> = outcome.history.iter().map(|h| &h.event).collect();
        assert!(matches!(
            events[..],
            [Event::Start, Event::Prune { .. }, Event::Check { .. }]
        ));

        let (again, outcome_again) = run(1);
        assert_eq!(
            graph, again,
            "the same seed gives the same model, bit for bit"
        );
        let front_again = outcome_again.front.unwrap();
        assert_eq!(front.individuals, front_again.individuals);
        let (_, other) = run(2);
        assert_ne!(front.individuals, other.front.unwrap().individuals);
    }

    #[test]
    fn with_a_target_the_output_is_the_most_accurate_front_member_within_it() {
        let mut graph = lenet();
        let (train, val) = data();
        let config = CompressConfig {
            target: Some(crate::Target::Macs(0.9)),
            ..config()
        };
        let outcome = compress(&mut graph, &train, &val, &config, &mut |_| {}).unwrap();
        let front = outcome.front.unwrap();
        let within: Vec<&FrontIndividual> = front
            .individuals
            .iter()
            .filter(|i| i.on_front && i.cost <= 0.9)
            .collect();
        let best = within.iter().map(|i| i.error).fold(f64::INFINITY, f64::min);
        let output = &front.individuals[front.output];
        assert!(
            !within.is_empty(),
            "mutation at 0.2 halves LeNet-5's MACs or so"
        );
        assert_eq!(output.error, best);
        assert!(output.cost <= 0.9);
        assert_eq!(outcome.target_met, Some(true));
        assert_eq!(Cost::of(&graph).macs, output.macs);
    }
}
