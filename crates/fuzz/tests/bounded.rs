//! A bounded campaign in `cargo test`: a few hundred mutants of the shipped models through the
//! whole pipeline, with no panic and no broken invariant allowed. `cargo xtask fuzz` runs longer.

use pare_fuzz::Corpus;
use std::path::Path;

fn corpus() -> Corpus {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    Corpus::from_models(&models).unwrap()
}

#[test]
fn mutants_of_the_shipped_models_are_refused_or_pass_never_panic() {
    let corpus = corpus();
    assert!(corpus.seeds.len() >= 7, "the shipped models are the seeds");
    assert_eq!(
        corpus.data_files,
        ["lenet5_dynamo_extdata_opset18.onnx.data"],
        "the external data seed brings its data file"
    );
    let summary = pare_fuzz::run(&corpus, 18, 0, 300, |_| {});
    println!("{summary}");
    assert!(
        summary.panics.is_empty() && summary.broken.is_empty(),
        "{summary}"
    );
    // The mutants reach every stage: some pass it all, and refusals come from several stages.
    assert!(summary.passed > 0, "{summary}");
    for stage in ["decode", "import"] {
        assert!(
            summary.refused.keys().any(|k| k.starts_with(stage)),
            "no case was refused at {stage}: {summary}"
        );
    }
}

#[test]
fn a_case_replays_exactly() {
    let corpus = corpus();
    for index in [0, 7, 99] {
        assert_eq!(
            pare_fuzz::case_model(&corpus, 5, index),
            pare_fuzz::case_model(&corpus, 5, index)
        );
    }
    assert_ne!(
        pare_fuzz::case_model(&corpus, 5, 1).1,
        pare_fuzz::case_model(&corpus, 6, 1).1
    );
}
