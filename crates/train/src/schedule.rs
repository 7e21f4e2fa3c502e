//! The step-size schedule of a training run: how the optimiser's step scale (1 is the configured
//! step) moves from one step to the next.

/// How the step scale moves over a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// The configured step throughout.
    Constant,
    /// Linear from `start` up to 1 over `len` steps from step `from`: after the network changed,
    /// e.g. by pruning.
    Restart { from: usize, len: usize, start: f64 },
    /// Cosine from 1 down to 0 between step `from` and the end of the run.
    Anneal { from: usize },
}

impl Schedule {
    /// The scale of step `step` (counted from 0) of a run of `total` steps.
    pub fn scale(self, step: usize, total: usize) -> f64 {
        match self {
            Schedule::Constant => 1.0,
            Schedule::Restart { from, len, start } => {
                let t = (step - from) as f64 / len.max(1) as f64;
                (start + (1.0 - start) * t).min(1.0)
            }
            Schedule::Anneal { from } => {
                let t = (step - from) as f64 / (total - from).max(1) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    #[test]
    fn restart_ramps_up_to_one_and_anneal_decays_to_zero() {
        let restart = Schedule::Restart {
            from: 10,
            len: 4,
            start: 0.5,
        };
        assert_eq!(restart.scale(10, 100), 0.5);
        assert_eq!(restart.scale(12, 100), 0.75);
        assert_eq!(restart.scale(20, 100), 1.0);
        let anneal = Schedule::Anneal { from: 50 };
        assert_eq!(anneal.scale(50, 100), 1.0);
        assert!(anneal.scale(100, 100).abs() < 1e-12);
        assert_eq!(Schedule::Constant.scale(7, 10), 1.0);
    }
}
