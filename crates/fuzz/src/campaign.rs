//! A campaign: many cases, each under `catch_unwind`, with their outcomes counted, panics and
//! broken invariants kept with what replays them, and slow cases noted. A watchdog names a case
//! that runs for over a minute, so a hang can be replayed even if the run has to be killed.

use crate::corpus::Corpus;
use crate::pipeline::{run_case, Outcome};
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// A case slower than this is listed (it is not an error: debug builds are slow).
const SLOW: Duration = Duration::from_secs(2);
/// A case running longer than this is reported by the watchdog while it runs.
const HANG: Duration = Duration::from_secs(60);

/// A case that panicked or broke an invariant: replay it with the run seed and its index.
#[derive(Debug, Clone)]
pub struct Finding {
    pub index: u64,
    pub seed_model: String,
    pub what: String,
}

/// What a campaign did.
#[derive(Debug, Default)]
pub struct Summary {
    pub run_seed: u64,
    pub cases: u64,
    pub passed: u64,
    /// Refusals by stage and error variant.
    pub refused: BTreeMap<String, u64>,
    pub panics: Vec<Finding>,
    pub broken: Vec<Finding>,
    /// Cases slower than two seconds, with their time.
    pub slow: Vec<(u64, Duration)>,
    pub elapsed: Duration,
}

/// The message and place of the last panic, recorded by the hook the campaign installs.
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

/// Runs cases `first..first + count` of the run seeded with `run_seed`; `progress` is called
/// after each case with the summary so far.
pub fn run(
    corpus: &Corpus,
    run_seed: u64,
    first: u64,
    count: u64,
    mut progress: impl FnMut(&Summary),
) -> Summary {
    let mut summary = Summary {
        run_seed,
        ..Default::default()
    };
    let start = Instant::now();
    let previous_hook = panic::take_hook();
    panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let place = info.location().map(|l| l.to_string()).unwrap_or_default();
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = format!("{message} at {place}");
    }));
    let (running, watched) = mpsc::channel::<Option<u64>>();
    let watchdog = std::thread::spawn(move || watch(watched, run_seed));
    for index in first..first + count {
        let _ = running.send(Some(index));
        let case_start = Instant::now();
        let mut seed_model = String::new();
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            run_case(corpus, run_seed, index, &mut seed_model)
        }));
        let took = case_start.elapsed();
        summary.cases += 1;
        if took > SLOW {
            summary.slow.push((index, took));
        }
        match result {
            Ok(Outcome::Passed) => summary.passed += 1,
            Ok(Outcome::Refused { kind }) => *summary.refused.entry(kind).or_default() += 1,
            Ok(Outcome::Broken { stage, error }) => summary.broken.push(Finding {
                index,
                seed_model,
                what: format!("{stage}: {error}"),
            }),
            Err(_) => summary.panics.push(Finding {
                index,
                seed_model,
                what: LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            }),
        }
        progress(&summary);
    }
    drop(running);
    let _ = watchdog.join();
    panic::set_hook(previous_hook);
    summary.elapsed = start.elapsed();
    summary
}

/// Prints the case that has been running for over `HANG`, once per case.
fn watch(cases: mpsc::Receiver<Option<u64>>, run_seed: u64) {
    let mut current = None;
    loop {
        match cases.recv_timeout(HANG) {
            Ok(case) => current = case,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(index) = current.take() {
                    eprintln!(
                        "case {index} has run for over {} s; replay it with \
                         `cargo xtask fuzz --seed {run_seed} --replay {index}`",
                        HANG.as_secs()
                    );
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.cases as f64 / self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "seed {}: {} cases in {:.1} s ({rate:.0}/s): {} passed every stage, {} refused, \
             {} panics, {} broken invariants, {} slow (over {} s)",
            self.run_seed,
            self.cases,
            self.elapsed.as_secs_f64(),
            self.passed,
            self.refused.values().sum::<u64>(),
            self.panics.len(),
            self.broken.len(),
            self.slow.len(),
            SLOW.as_secs(),
        )?;
        for (kind, n) in &self.refused {
            writeln!(f, "  refused at {kind}: {n}")?;
        }
        for (label, findings) in [("PANIC", &self.panics), ("BROKEN", &self.broken)] {
            for x in findings {
                writeln!(
                    f,
                    "  {label} case {} ({}): {}\n    replay: cargo xtask fuzz --seed {} --replay {}",
                    x.index, x.seed_model, x.what, self.run_seed, x.index
                )?;
            }
        }
        for (index, took) in &self.slow {
            writeln!(f, "  slow: case {index} took {:.1} s", took.as_secs_f64())?;
        }
        Ok(())
    }
}
