//! One check of the table against tract before a latency target is pruned to: the plan a one-shot
//! prune would make for the goal, timed with the original in the same rounds. The table's error
//! there (it misses how savings add up across many groups, by 5–20% on the shipped models) sets
//! the predicted fraction a strategy aims at, so the measured result lands nearer the goal.

use crate::{LadderSettings, LatencyError, LatencyModel};
use ndarray::Array4;
use pare_ir::Graph;
use pare_prune::{widths_after, ChannelGroups, PruningPlan};
use pare_verify::{latency_interleaved, TractModel};
use std::path::Path;

/// The probe: the table's predicted fraction of T0 and tract's measured one, for the same model.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    pub predicted: f64,
    pub measured: f64,
}

/// The largest factor (and its inverse the smallest) a probe may scale predicted savings by: the
/// table is 5–20% off on whole networks, and a probe beyond that is more likely noise (on a model
/// of a few hundredths of a millisecond, one probe was off by a factor of two).
const MAX_SCALE: f64 = 1.25;

/// The probe is timed this many times longer than each model of the table: one pair of models
/// decides the whole run's aim, so it gets the runs to match.
const PROBE_RUNS_FACTOR: usize = 4;

impl Calibration {
    /// How much more the probe saved than predicted: (1 − measured) / (1 − predicted), within
    /// [0.8, 1.25]; 1 when the probe predicted no saving.
    pub fn scale(&self) -> f64 {
        let predicted_saving = 1.0 - self.predicted;
        if predicted_saving <= 1e-9 {
            return 1.0;
        }
        ((1.0 - self.measured) / predicted_saving).clamp(1.0 / MAX_SCALE, MAX_SCALE)
    }

    /// The predicted fraction to prune to so that the measured one is `goal`: savings predicted
    /// are `scale` times too small (or large), so aim at 1 − (1 − goal) / scale.
    pub fn aim(&self, goal: f64) -> f64 {
        (1.0 - (1.0 - goal) / self.scale()).clamp(f64::MIN_POSITIVE, 1.0)
    }
}

impl LatencyModel {
    /// Times `graph` narrowed by `plan` (its groups being `groups`) against `graph` itself in
    /// tract, beside the table's prediction for it.
    pub fn calibrate(
        &self,
        graph: &Graph,
        groups: &ChannelGroups,
        plan: &PruningPlan,
        settings: &LadderSettings,
    ) -> Result<Calibration, LatencyError> {
        let mut probe = graph.clone();
        plan.apply(&mut probe, groups)
            .map_err(|source| LatencyError::Variant {
                groups: "the probe's".into(),
                source,
            })?;
        let shape = &self.input_shape;
        let load = |g: &Graph, label: &str| {
            let bytes = pare_onnx::encode(&pare_ir::export(g));
            TractModel::from_bytes(Path::new(label), &bytes, shape)
        };
        let original = load(graph, "the model as given")?;
        let narrowed = load(&probe, "the latency probe")?;
        let images = Array4::from_elem((1, shape[1], shape[2], shape[3]), 0.5f32);
        let times = latency_interleaved(
            &[&original, &narrowed],
            images.view(),
            settings.warmup,
            PROBE_RUNS_FACTOR * settings.runs_for(self.table.baseline_ms),
            self.clock,
        )?;
        Ok(Calibration {
            predicted: self.table.predict(&widths_after(graph, groups, plan))
                / self.table.baseline_ms,
            measured: times[1].median_ms / times[0].median_ms.max(f64::MIN_POSITIVE),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aim_corrects_savings_by_the_probe_s_error() {
        // The probe saved 60% where 50% was predicted: savings are 1.2 times the prediction.
        let c = Calibration {
            predicted: 0.5,
            measured: 0.4,
        };
        assert!((c.scale() - 1.2).abs() < 1e-12);
        // To measure 0.5, predict a saving of 0.5 / 1.2.
        assert!((c.aim(0.5) - (1.0 - 0.5 / 1.2)).abs() < 1e-12);
        // A probe that saved less than predicted makes the aim harder.
        let under = Calibration {
            predicted: 0.5,
            measured: 0.6,
        };
        assert!(under.aim(0.5) < 0.5);
        // Errors beyond a quarter are not believed; no predicted saving, no correction.
        let wild = Calibration {
            predicted: 0.9,
            measured: 0.1,
        };
        assert_eq!(wild.scale(), 1.25);
        let flat = Calibration {
            predicted: 1.0,
            measured: 0.7,
        };
        assert_eq!((flat.scale(), flat.aim(0.6)), (1.0, 0.6));
    }
}
