//! The latency model: a `LatencyTable` (what narrowing each group did to the whole model's time,
//! and the predictions made from it, in pare-prune) with how and where it was measured.

use pare_prune::LatencyTable;
use pare_verify::Clock;

/// A graph's batch-1 tract latency: measured as given, and per group at a ladder of widths.
/// Serialisable, so a report carries it and a later run can reuse it under `cache_key`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencyModel {
    /// `cache_key` of the encoded model the measurements are of.
    pub cache_key: String,
    /// The clock the times are on.
    pub clock: Clock,
    /// The input shape timed, batch first (always 1).
    pub input_shape: Vec<usize>,
    /// The times: T0, each group's ladder, the pairs' cross terms.
    #[serde(flatten)]
    pub table: LatencyTable,
    /// Narrowed models measured.
    pub variants: usize,
    /// Timed runs of each model (`LadderSettings::runs_for` its first estimate of T0).
    pub runs: usize,
    /// Wall time of the measurement, in seconds.
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pare_prune::latency::{GroupLatency, WidthTime};

    #[test]
    fn a_model_survives_a_json_round_trip() {
        let m = LatencyModel {
            cache_key: "test".into(),
            clock: Clock::ThreadCpu,
            input_shape: vec![1, 3, 8, 8],
            table: LatencyTable {
                vector_width: 16,
                baseline_ms: 10.2,
                groups: vec![GroupLatency {
                    key: "a".into(),
                    baseline_ms: 10.0,
                    points: vec![WidthTime { width: 4, ms: 6.0 }],
                }],
                pairs: Vec::new(),
                unmeasured: vec!["c".into()],
            },
            variants: 4,
            runs: 15,
            seconds: 0.5,
        };
        let json = serde_json::to_string(&m).unwrap();
        let back: LatencyModel = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
