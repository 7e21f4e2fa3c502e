//! Two objectives to minimise, the non-dominated filter, and the three parents an elitist search
//! keeps: the most accurate member of the front, the cheapest, and the knee between them
//! (docs/methods/es.md, "Selection").
//!
//! Every choice breaks ties by position, so the same points always give the same parents.

/// What the search minimises for one individual.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Objectives {
    /// 1 − validation accuracy after the short fine-tune.
    pub error: f64,
    /// MACs or parameters of the decoded network.
    pub cost: f64,
}

impl Objectives {
    fn get(self, k: usize) -> f64 {
        if k == 0 {
            self.error
        } else {
            self.cost
        }
    }

    /// No worse in both objectives and better in one.
    pub fn dominates(self, other: Objectives) -> bool {
        self.error <= other.error
            && self.cost <= other.cost
            && (self.error < other.error || self.cost < other.cost)
    }
}

/// The positions of the points no other point dominates, in order. Equal points do not dominate
/// each other, so duplicates stay together on the front.
pub fn non_dominated(points: &[Objectives]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| !points.iter().any(|p| p.dominates(points[i])))
        .collect()
}

/// The three parents of the next generation, as positions in the points they were chosen from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Parents {
    /// The lowest error on the front.
    pub heavy: usize,
    /// The lowest cost on the front.
    pub light: usize,
    /// The least weighted Manhattan distance to the ideal point, the two boundaries excluded
    /// when anything else is on the front.
    pub knee: usize,
}

/// The first position of `among` with the least `key` (total order, so NaN never wins silently).
fn argmin(among: &[usize], key: impl Fn(usize) -> f64) -> Option<usize> {
    among.iter().copied().reduce(|best, i| {
        if key(i).total_cmp(&key(best)).is_lt() {
            i
        } else {
            best
        }
    })
}

/// Chooses the parents from the front of `points`, with `weights` for (error, cost) in the knee's
/// distance; None when there are no points.
///
/// Each objective is normalised to [0, 1] over the front (0 where the front has one value of it);
/// the knee minimises w₀·ê + w₁·ĉ over the front without its two boundary members, or over the
/// whole front when nothing else is on it (a front of one or two members).
pub fn select(points: &[Objectives], weights: [f64; 2]) -> Option<Parents> {
    let front = non_dominated(points);
    // A lower cost breaks a tie in error (and the other way round): on a front equal errors mean
    // equal costs, but the filter keeps duplicates.
    let heavy = argmin(&front, |i| points[i].error)?;
    let light = argmin(&front, |i| points[i].cost)?;
    let range = |k: usize| {
        let values = front.iter().map(|&i| points[i].get(k));
        let low = values.clone().fold(f64::INFINITY, f64::min);
        let high = values.fold(f64::NEG_INFINITY, f64::max);
        (low, high)
    };
    let ranges = [range(0), range(1)];
    let distance = |i: usize| {
        (0..2)
            .map(|k| {
                let (low, high) = ranges[k];
                let normalised = if high > low {
                    (points[i].get(k) - low) / (high - low)
                } else {
                    0.0
                };
                weights[k] * normalised
            })
            .sum::<f64>()
    };
    let inner: Vec<usize> = front
        .iter()
        .copied()
        .filter(|&i| i != heavy && i != light)
        .collect();
    let knee = argmin(&inner, distance).or_else(|| argmin(&front, distance))?;
    Some(Parents { heavy, light, knee })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(p: &[(f64, f64)]) -> Vec<Objectives> {
        p.iter()
            .map(|&(error, cost)| Objectives { error, cost })
            .collect()
    }

    #[test]
    fn the_filter_keeps_exactly_the_non_dominated_points() {
        let p = points(&[(0.1, 9.0), (0.2, 5.0), (0.3, 6.0), (0.5, 1.0), (0.1, 9.5)]);
        // (0.3, 6) is dominated by (0.2, 5); (0.1, 9.5) by (0.1, 9): equal error, higher cost.
        assert_eq!(non_dominated(&p), vec![0, 1, 3]);
        assert!(non_dominated(&[]).is_empty());
    }

    #[test]
    fn equal_points_do_not_dominate_each_other() {
        let p = points(&[(0.2, 4.0), (0.2, 4.0), (0.3, 5.0)]);
        assert_eq!(non_dominated(&p), vec![0, 1]);
        // All three parents come from the duplicates, the first breaking every tie.
        let parents = select(&p, [0.5, 0.5]).unwrap();
        assert_eq!((parents.heavy, parents.light), (0, 0));
        assert_eq!(
            parents.knee, 1,
            "the knee skips the boundary when another member exists"
        );
    }

    #[test]
    fn a_front_of_one_member_is_all_three_parents() {
        let p = points(&[(0.4, 9.0), (0.1, 2.0), (0.3, 3.0)]);
        let one = Parents {
            heavy: 1,
            light: 1,
            knee: 1,
        };
        assert_eq!(select(&p, [0.5, 0.5]), Some(one));
        assert_eq!(select(&[], [0.5, 0.5]), None);
    }

    #[test]
    fn a_front_of_two_members_takes_the_knee_from_both_by_weight() {
        let p = points(&[(0.1, 10.0), (0.3, 2.0)]);
        // Normalised: heavy (0, 1), light (1, 0): the heavier weight decides.
        let accurate = select(&p, [2.0 / 3.0, 1.0 / 3.0]).unwrap();
        assert_eq!((accurate.heavy, accurate.light, accurate.knee), (0, 1, 0));
        let cheap = select(&p, [1.0 / 3.0, 2.0 / 3.0]).unwrap();
        assert_eq!(cheap.knee, 1);
        // Equal weights tie at distance ½: the first member wins.
        assert_eq!(select(&p, [0.5, 0.5]).unwrap().knee, 0);
    }

    #[test]
    fn the_knee_minimises_the_weighted_manhattan_distance_on_the_normalised_front() {
        // Errors 0.1..0.5 and costs 10..2 normalise to (0, 1), (0.25, 0.25), (0.5, 0.125), (1, 0).
        let p = points(&[(0.1, 10.0), (0.2, 4.0), (0.3, 3.0), (0.5, 2.0), (0.6, 11.0)]);
        let parents = select(&p, [0.5, 0.5]).unwrap();
        assert_eq!((parents.heavy, parents.light, parents.knee), (0, 3, 1));
        // Weighting cost alone moves the knee to the cheaper inner member.
        assert_eq!(select(&p, [0.0, 1.0]).unwrap().knee, 2);
    }

    #[test]
    fn an_objective_with_one_value_on_the_front_normalises_to_zero() {
        // Every point costs the same: the front is the lowest error (twice), and the knee is
        // decided by error alone, never by a division by zero.
        let p = points(&[(0.3, 5.0), (0.1, 5.0), (0.1, 5.0), (0.2, 5.0)]);
        let parents = select(&p, [0.5, 0.5]).unwrap();
        assert_eq!(non_dominated(&p), vec![1, 2]);
        assert_eq!((parents.heavy, parents.light, parents.knee), (1, 1, 2));
    }
}
