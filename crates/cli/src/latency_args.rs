//! The latency-target flags of `compress`: prune for tract's batch-1 latency instead of MACs. A
//! latency model of the original is measured in tract first (or reused from an earlier report),
//! the strategies prune against its predictions, and the final latency is measured.

use anyhow::{bail, Context, Result};
use pare_ir::Graph;
use pare_latency::{cache_key, vector_width, Calibration, LadderSettings, LatencyModel};
use pare_prune::{analyze, CompressConfig, Criterion, Objective, Strategy, Target};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The help heading of the latency flags.
const HEADING: &str = "Latency target (measured in tract, batch 1)";

/// Probes before a one-shot prune: the second times the plan of the first one's aim.
const PROBES: usize = 2;

/// Largest latency model file read with --latency-model.
const MAX_MODEL_FILE: u64 = 64 << 20;

#[derive(clap::Args, Clone, Debug)]
pub struct LatencyArgs {
    /// Stop pruning at this fraction of the original's batch-1 latency in tract (e.g. 0.5). A
    /// latency model is measured first (seconds for small models, a minute or two for large
    /// ones); channels go by accuracy lost per millisecond saved, widths snap to fast ones
    /// (unless --round-to is given), and the target is met only if the final model's measured
    /// latency is within it.
    #[arg(long, help_heading = HEADING,
          conflicts_with_all = ["target_macs", "target_params", "target_latency_ms"])]
    pub target_latency: Option<f64>,
    /// The same, as milliseconds at batch 1 on this machine.
    #[arg(long, help_heading = HEADING, conflicts_with_all = ["target_macs", "target_params"])]
    pub target_latency_ms: Option<f64>,
    /// Reuse the latency model in this file (an earlier --report, or the `latency_model` of one)
    /// when it was measured on the same model and CPU; otherwise it is measured again.
    #[arg(long, help_heading = HEADING)]
    pub latency_model: Option<PathBuf>,
}

/// The latency model a run prunes with, and the target it aims at.
pub struct LatencySetup {
    pub model: LatencyModel,
    /// The target as a fraction of the original's latency; None when only the search's
    /// objective is latency.
    pub goal: Option<f64>,
    /// The probes that set the predicted fraction a one-shot prune aims at.
    pub probes: Vec<Calibration>,
}

/// What a latency target asked for, and what tract measured in the end.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyTarget {
    /// The target as a fraction of the original's latency.
    pub fraction: f64,
    /// The target in milliseconds, when given so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
    /// The probes of the table against tract before a one-shot prune, and the predicted
    /// fraction the strategy aimed at (the target itself without probes).
    pub probes: Vec<Calibration>,
    pub aimed_fraction: f64,
    /// The compressed model's latency as the model predicted it, as a fraction of T0.
    pub predicted_fraction: f64,
    /// The compressed model's measured median over the original's (same runs, interleaved).
    pub measured_fraction: f64,
    /// Whether the measured latency is within the target.
    pub met: bool,
    pub model: LatencyModel,
}

impl LatencyArgs {
    pub fn requested(&self) -> bool {
        self.target_latency.is_some() || self.target_latency_ms.is_some()
    }

    pub fn check(&self) -> Result<()> {
        if self.target_latency.is_some_and(|f| !(f > 0.0 && f <= 1.0)) {
            bail!("--target-latency must be a fraction in (0, 1], e.g. 0.5");
        }
        if self
            .target_latency_ms
            .is_some_and(|ms| !(ms > 0.0 && ms.is_finite()))
        {
            bail!("--target-latency-ms must be a positive number of milliseconds");
        }
        Ok(())
    }

    /// With a latency target (or `--strategy es --objective latency`): measures (or reuses) the
    /// latency model of `graph`, probes it against tract at the target, sets `config`'s target
    /// (the predicted fraction to aim at) and table. Does nothing without one.
    pub fn configure(
        &self,
        graph: &Graph,
        config: &mut CompressConfig,
        quiet: bool,
    ) -> Result<Option<LatencySetup>> {
        let es_objective =
            config.strategy == Strategy::Es && config.es.objective == Objective::Latency;
        if !self.requested() && !es_objective {
            return Ok(None);
        }
        let settings = LadderSettings {
            min_keep: config.min_keep,
            ..LadderSettings::default()
        };
        let groups = analyze(graph);
        let key = cache_key(&pare_onnx::encode(&pare_ir::export(graph)));
        let reused = match &self.latency_model {
            Some(path) => reuse(path, &key)?,
            None => None,
        };
        let model = match reused {
            Some(model) => model,
            None => {
                if !quiet {
                    eprintln!("measuring the latency model in tract (batch 1, each channel group at a ladder of widths)...");
                }
                let model = LatencyModel::measure(graph, &groups, &settings)
                    .context("measuring the latency model")?;
                if !quiet {
                    eprintln!(
                        "latency model: T0 {:.3} ms, {} narrowed models in {:.1} s",
                        model.table.baseline_ms, model.variants, model.seconds
                    );
                }
                model
            }
        };
        let t0 = model.table.baseline_ms;
        if let Some(ms) = self.target_latency_ms {
            if ms >= t0 {
                eprintln!("note: the original already runs in {t0:.3} ms, within --target-latency-ms {ms}");
            }
        }
        let goal = self
            .target_latency
            .or(self.target_latency_ms.map(|ms| (ms / t0).min(1.0)));
        let mut probes = Vec::new();
        if let Some(goal) = goal {
            let mut aim = goal;
            // A one-shot prune by a weights-only criterion makes exactly the plan the probe
            // times, so there the table's error on it corrects the aim. RLS makes its own plan
            // in training, on which the probe's error was as often the opposite; instead it is
            // held at or above the probed one-shot widths (group L2 for its RLS criterion),
            // which it can reach only near that plan. Other strategies aim at the goal itself.
            let one_shot_criterion = match config.strategy {
                Strategy::Oneshot if !config.criterion.needs_data() => Some(config.criterion),
                Strategy::Rls => Some(Criterion::L2),
                _ => None,
            };
            if let Some(criterion) = one_shot_criterion {
                // The one-shot plan for `aim`, and whether it meets it.
                let one_shot = |aim: f64| -> Result<(pare_prune::PruningPlan, bool)> {
                    let mut one_shot = config.clone();
                    one_shot.criterion = criterion;
                    one_shot.target = Some(Target::Latency(aim));
                    one_shot.latency = Some(model.table.clone());
                    pare_prune::plan_without_data(graph, &groups, &one_shot)
                        .context("choosing the latency probe")
                };
                for _ in 0..PROBES {
                    let (plan, _) = one_shot(aim)?;
                    let probe = model
                        .calibrate(graph, &groups, &plan, &settings)
                        .context("probing the latency model")?;
                    aim = probe.aim(goal);
                    if !quiet {
                        eprintln!(
                            "latency probe: the one-shot plan predicted at {:.0}% of T0 measured {:.0}%; aiming at a predicted {:.0}%",
                            100.0 * probe.predicted,
                            100.0 * probe.measured,
                            100.0 * aim
                        );
                    }
                    probes.push(probe);
                }
                if config.strategy == Strategy::Rls {
                    // A plan that cannot meet the aim sits at every group's floor: following it
                    // would prune everything to the floors, so RLS then aims by itself.
                    let (plan, meets) = one_shot(aim)?;
                    if meets {
                        config.width_floors = pare_prune::widths_after(graph, &groups, &plan);
                    }
                }
            }
            config.target = Some(Target::Latency(aim));
        }
        config.latency = Some(model.table.clone());
        Ok(Some(LatencySetup {
            model,
            goal,
            probes,
        }))
    }

    /// The latency target's figures once tract has timed both models; None without a target.
    pub fn outcome(
        &self,
        setup: LatencySetup,
        aimed_fraction: f64,
        compressed: &Graph,
        before_ms: f64,
        after_ms: f64,
    ) -> Option<LatencyTarget> {
        let (model, fraction) = (setup.model, setup.goal?);
        let measured_fraction = after_ms / before_ms.max(f64::MIN_POSITIVE);
        let met = match self.target_latency_ms {
            Some(ms) => after_ms <= ms,
            None => measured_fraction <= fraction,
        };
        Some(LatencyTarget {
            fraction,
            ms: self.target_latency_ms,
            probes: setup.probes,
            aimed_fraction,
            predicted_fraction: model.table.predict_graph(compressed) / model.table.baseline_ms,
            measured_fraction,
            met,
            model,
        })
    }
}

/// The latency model in `path` if it was measured on the model whose key is `key` on a CPU of
/// this vector width; None (with a note) when it was not.
fn reuse(path: &Path, key: &str) -> Result<Option<LatencyModel>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("--latency-model {}", path.display()))?
        .len();
    if size > MAX_MODEL_FILE {
        bail!(
            "--latency-model {}: {size} bytes is not a latency model or report (at most {MAX_MODEL_FILE})",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--latency-model {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--latency-model {}: not JSON", path.display()))?;
    let inner = json
        .get("latency_target")
        .and_then(|t| t.get("model"))
        .or_else(|| json.get("latency_model"))
        .unwrap_or(&json);
    let model: LatencyModel = serde_json::from_value(inner.clone()).with_context(|| {
        format!(
            "--latency-model {}: no latency model in it (give the --report of a run with --target-latency)",
            path.display()
        )
    })?;
    if model.cache_key != key {
        eprintln!(
            "note: --latency-model {} was measured on another model; measuring again",
            path.display()
        );
        return Ok(None);
    }
    if model.table.vector_width != vector_width() {
        eprintln!(
            "note: --latency-model {} was measured on a CPU with {}-lane vectors, this one has {}; measuring again",
            path.display(),
            model.table.vector_width,
            vector_width()
        );
        return Ok(None);
    }
    Ok(Some(model))
}
