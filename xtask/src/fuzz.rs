//! `cargo xtask fuzz`: a long structured-mutation campaign over the shipped models (pare-fuzz),
//! or the replay of one case.

use anyhow::{bail, Context, Result};
use pare_fuzz::{Corpus, Outcome};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Options {
    /// How many cases to run.
    #[arg(long, default_value_t = 20_000)]
    cases: u64,
    /// The run's seed: with a case's index it fixes the case.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start at this case index (to resume or split a run).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Run only this case, with panics shown as they happen (backtrace with RUST_BACKTRACE=1).
    #[arg(long)]
    replay: Option<u64>,
    /// With --replay: also write the case's model here, to try it with `compress`.
    #[arg(long, requires = "replay")]
    write_case: Option<PathBuf>,
}

pub fn run(options: &Options) -> Result<()> {
    let models = crate::bench::models_dir();
    let corpus = Corpus::from_models(&models)
        .with_context(|| format!("cannot load the seed models of {}", models.display()))?;
    if let Some(index) = options.replay {
        return replay(&corpus, options.seed, index, options.write_case.as_ref());
    }
    println!(
        "fuzzing {} cases from {} seed models ({}), seed {}",
        options.cases,
        corpus.seeds.len(),
        corpus
            .seeds
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        options.seed
    );
    let summary = pare_fuzz::run(
        &corpus,
        options.seed,
        options.first,
        options.cases,
        |so_far| {
            if so_far.cases % 1000 == 0 {
                eprintln!(
                    "{} cases: {} passed, {} panics, {} broken",
                    so_far.cases,
                    so_far.passed,
                    so_far.panics.len(),
                    so_far.broken.len()
                );
            }
        },
    );
    print!("{summary}");
    if !summary.panics.is_empty() || !summary.broken.is_empty() {
        bail!("the campaign found panics or broken invariants (listed above)");
    }
    Ok(())
}

fn replay(corpus: &Corpus, seed: u64, index: u64, write: Option<&PathBuf>) -> Result<()> {
    if let Some(path) = write {
        let (_, bytes) = pare_fuzz::case_model(corpus, seed, index);
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote case {index} to {}", path.display());
    }
    let mut seed_model = String::new();
    let outcome = pare_fuzz::run_case(corpus, seed, index, &mut seed_model);
    println!("case {index} (from {seed_model}): {outcome:?}");
    if let Outcome::Broken { .. } = outcome {
        bail!("case {index} broke an invariant");
    }
    Ok(())
}
