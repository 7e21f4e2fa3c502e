//! Latency of single runs, alone or of two models side by side.

use crate::{Clock, TractModel, VerifyError};
use ndarray::ArrayView4;
use std::time::Instant;

/// Latency of single runs, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Latency {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub runs: usize,
}

/// Times `runs` runs of one batch after `warmup` untimed ones.
pub fn latency(
    model: &TractModel,
    images: ArrayView4<f32>,
    warmup: usize,
    runs: usize,
) -> Result<Latency, VerifyError> {
    for _ in 0..warmup {
        model.run(images)?;
    }
    let mut times: Vec<f64> = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        model.run(images)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(summarize(times))
}

/// Latency of two models on the same batch, measured side by side: their runs alternate, so
/// both see the same machine load.
pub fn latency_pair(
    a: &TractModel,
    b: &TractModel,
    images: ArrayView4<f32>,
    warmup: usize,
    runs: usize,
) -> Result<(Latency, Latency), VerifyError> {
    let [la, lb] = latency_interleaved(&[a, b], images, warmup, runs, Clock::Wall)?[..] else {
        unreachable!("one latency per model")
    };
    Ok((la, lb))
}

/// Latency of several models on the same batch, on `clock`: each round times one run of every
/// model in turn, so a change of machine load during the measurement reaches them all.
pub fn latency_interleaved(
    models: &[&TractModel],
    images: ArrayView4<f32>,
    warmup: usize,
    runs: usize,
    clock: Clock,
) -> Result<Vec<Latency>, VerifyError> {
    for _ in 0..warmup {
        for model in models {
            model.run(images)?;
        }
    }
    let mut times = vec![Vec::with_capacity(runs.max(1)); models.len()];
    for round in 0..runs.max(1) {
        // Each round starts one model further on, so no model always runs first.
        for i in (0..models.len()).map(|i| (i + round) % models.len()) {
            let (out, ms) = clock.time(|| models[i].run(images));
            out?;
            times[i].push(ms);
        }
    }
    Ok(times.into_iter().map(summarize).collect())
}

fn summarize(mut times: Vec<f64>) -> Latency {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Latency {
        median_ms: at(0.5),
        p90_ms: at(0.9),
        runs: times.len(),
    }
}
