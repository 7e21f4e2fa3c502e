//! Which widths of each group are measured: its floor, its full width, multiples of the vector
//! width between them, and a few widths filling the widest gaps; bounded per group and in all.

use crate::LatencyError;
use pare_verify::Clock;

/// The most timed runs `min_timed_ms` asks of one model, and the most time it may ask for.
const MAX_RUNS: usize = 100_000;
const MAX_TIMED_MS: f64 = 60_000.0;

/// How a latency model is measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LadderSettings {
    /// The fewest channels a group is measured at, as a fraction of its width (at least one
    /// channel): pruning's `min_keep`.
    pub min_keep: f64,
    /// At most this many widths per group, its floor and full width included (at least 2).
    pub widths_per_group: usize,
    /// At most this many narrowed models are measured in all. Past it, every group gets fewer
    /// widths (down to its floor alone), then the groups touching the fewest MACs none.
    pub max_variants: usize,
    /// Untimed runs of every model before the timed ones.
    pub warmup: usize,
    /// Timed runs of every model, at least; a time is their median.
    pub runs: usize,
    /// More runs for fast models: enough that each model is timed for about this many
    /// milliseconds in all (a few runs of a 0.1 ms model are at the mercy of one preemption).
    pub min_timed_ms: f64,
    /// Multiples of this are measured; None: the vector width of this CPU (`vector_width`).
    pub vector_width: Option<usize>,
    /// The clock runs are timed on: the thread's CPU time by default, which other processes on
    /// the machine disturb far less than wall time (equal to it on an idle machine).
    pub clock: Clock,
}

impl Default for LadderSettings {
    fn default() -> Self {
        LadderSettings {
            min_keep: 0.05,
            widths_per_group: 8,
            max_variants: 160,
            warmup: 3,
            runs: 15,
            min_timed_ms: 50.0,
            vector_width: None,
            clock: Clock::ThreadCpu,
        }
    }
}

impl LadderSettings {
    pub(crate) fn check(&self) -> Result<(), LatencyError> {
        if !(0.0..1.0).contains(&self.min_keep) {
            return Err(LatencyError::Setting(
                "the minimum kept fraction",
                "in [0, 1)",
            ));
        }
        if self.widths_per_group < 2 {
            return Err(LatencyError::Setting("widths per group", "at least 2"));
        }
        if self.runs == 0 {
            return Err(LatencyError::Setting("timed runs", "at least 1"));
        }
        if !(0.0..=MAX_TIMED_MS).contains(&self.min_timed_ms) {
            return Err(LatencyError::Setting(
                "the minimum timed milliseconds",
                "in [0, 60000]",
            ));
        }
        if self.vector_width == Some(0) {
            return Err(LatencyError::Setting("the vector width", "at least 1"));
        }
        Ok(())
    }

    /// The timed runs for a model of about `ms` milliseconds: `runs`, or more to fill
    /// `min_timed_ms`, at most `MAX_RUNS`.
    pub fn runs_for(&self, ms: f64) -> usize {
        let filling = (self.min_timed_ms / ms.max(1e-6)).ceil();
        self.runs.max(filling.min(MAX_RUNS as f64) as usize)
    }

    /// The fewest channels a group of `width` channels is measured at.
    pub fn floor(&self, width: usize) -> usize {
        ((self.min_keep * width as f64).ceil() as usize).clamp(1, width.max(1))
    }
}

/// The widths measured for a group of `full` channels that keeps at least `floor`: ascending,
/// from `floor` to `full` both included, at most `max_count` (at least 2) of them. Multiples of
/// `vector_width` come first (evenly spread when they do not all fit), then the midpoint of the
/// widest gap, again and again.
pub fn ladder(floor: usize, full: usize, vector_width: usize, max_count: usize) -> Vec<usize> {
    let floor = floor.clamp(1, full.max(1));
    let mut widths = vec![floor, full];
    widths.dedup();
    let max_count = max_count.max(2);
    let v = vector_width.max(1);
    let (first, last) = (floor.div_ceil(v), full / v);
    if first <= last {
        let n = last - first + 1;
        let room = max_count - widths.len();
        let picks: Vec<usize> = match room {
            0 => Vec::new(),
            _ if n <= room => (first..=last).collect(),
            1 => vec![last],
            _ => (0..room)
                .map(|i| first + (i * (n - 1) + (room - 1) / 2) / (room - 1))
                .collect(),
        };
        widths.extend(picks.into_iter().map(|k| k * v));
        widths.sort_unstable();
        widths.dedup();
    }
    while widths.len() < max_count {
        let Some((i, gap)) = widths
            .windows(2)
            .map(|p| p[1] - p[0])
            .enumerate()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        else {
            break;
        };
        if gap < 2 {
            break;
        }
        widths.insert(i + 1, widths[i] + gap / 2);
    }
    widths
}

/// The ladders of groups given as (floor, full width), in the same order, within
/// `settings.max_variants` narrowed models (a ladder's widths but its full one): the largest
/// count per group that fits, and if even the floor alone does not fit for every group, ladders
/// for the groups of highest `priority` only (empty for the others).
pub(crate) fn plan_ladders(
    spans: &[(usize, usize)],
    priority: &[u64],
    vector_width: usize,
    settings: &LadderSettings,
) -> Vec<Vec<usize>> {
    let variants = |l: &[usize]| l.len().saturating_sub(1);
    let ladders_of = |count: usize| -> Vec<Vec<usize>> {
        spans
            .iter()
            .map(|&(floor, full)| ladder(floor, full, vector_width, count))
            .collect()
    };
    let mut count = settings.widths_per_group.max(2);
    let mut ladders = ladders_of(count);
    while count > 2 && ladders.iter().map(|l| variants(l)).sum::<usize>() > settings.max_variants {
        count -= 1;
        ladders = ladders_of(count);
    }
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by(|&a, &b| priority[b].cmp(&priority[a]).then(a.cmp(&b)));
    let mut left = settings.max_variants;
    for i in order {
        let cost = variants(&ladders[i]);
        if cost <= left {
            left -= cost;
        } else {
            ladders[i].clear();
        }
    }
    ladders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ladder_holds_floor_full_and_every_multiple_that_fits() {
        assert_eq!(ladder(3, 64, 16, 8), [3, 16, 24, 32, 40, 48, 56, 64]);
        assert_eq!(ladder(16, 64, 16, 8), [16, 20, 24, 32, 40, 48, 56, 64]);
        assert_eq!(
            ladder(1, 6, 16, 8),
            [1, 2, 3, 4, 5, 6],
            "every width, none a multiple"
        );
    }

    #[test]
    fn too_many_multiples_are_spread_from_the_smallest_to_the_largest() {
        let widths = ladder(13, 1037, 16, 8);
        assert_eq!(widths.len(), 8);
        assert_eq!((widths[0], widths[7]), (13, 1037));
        let multiples = &widths[1..7];
        assert!(multiples.iter().all(|w| w % 16 == 0), "{widths:?}");
        assert_eq!((multiples[0], multiples[5]), (16, 1024), "{widths:?}");
        assert!(multiples.windows(2).all(|p| p[0] < p[1]), "{widths:?}");
    }

    #[test]
    fn ladders_stay_within_bounds_and_count() {
        for full in 1..200 {
            for floor in [1, full / 4, full / 2, full] {
                for count in 2..10 {
                    for v in [1, 4, 8, 16] {
                        let widths = ladder(floor, full, v, count);
                        let floor = floor.clamp(1, full);
                        assert_eq!(widths.first(), Some(&floor));
                        assert_eq!(widths.last(), Some(&full));
                        assert!(widths.len() <= count, "{floor} {full} {count}");
                        assert!(widths.windows(2).all(|p| p[0] < p[1]), "{widths:?}");
                        let multiples = (floor..full).filter(|w| w % v == 0).count();
                        let measured = widths.iter().filter(|w| *w % v == 0).count();
                        assert!(
                            measured >= multiples.min(count - 2),
                            "{floor} {full} {count} {v}: {widths:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn fast_models_get_runs_enough_to_fill_the_minimum_time() {
        let s = LadderSettings::default();
        assert_eq!(s.runs_for(10.0), 15, "slow: the runs asked for");
        assert_eq!(s.runs_for(0.1), 500);
        assert_eq!(s.runs_for(0.0), MAX_RUNS, "bounded");
    }

    #[test]
    fn the_variant_cap_narrows_ladders_then_drops_the_cheapest_groups() {
        let settings = |max_variants| LadderSettings {
            max_variants,
            ..LadderSettings::default()
        };
        let spans = [(4, 64), (2, 32), (1, 16)];
        let priority = [10, 30, 20];
        let full = plan_ladders(&spans, &priority, 16, &settings(100));
        assert!(full.iter().all(|l| l.len() == 8), "{full:?}");
        let narrowed = plan_ladders(&spans, &priority, 16, &settings(9));
        let variants: usize = narrowed.iter().map(|l| l.len() - 1).sum();
        assert!(variants <= 9, "{narrowed:?}");
        assert!(narrowed.iter().all(|l| l.len() >= 2), "{narrowed:?}");
        let two = plan_ladders(&spans, &priority, 16, &settings(2));
        assert_eq!(
            two,
            [vec![], vec![2, 32], vec![1, 16]],
            "highest priority first"
        );
    }
}
