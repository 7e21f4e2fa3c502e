//! Where a compression's training signal and its final check come from: the dataset's labels, or,
//! for unlabeled images, the original model itself (distillation from its scores, and top-1
//! agreement with it on images held out of training).

use crate::data_args;
use crate::distill_args::DistillArgs;
use anyhow::{bail, Result};
use pare_data::{Contents, Dataset, Splits};
use pare_ir::Graph;
use serde::Serialize;
use std::path::Path;

/// What the labels of a run are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Supervision {
    /// The dataset's own labels: the final check is test accuracy.
    Labels,
    /// Unlabeled images, labelled by the original model's top-1 class: training distils from
    /// its scores, and the final check is top-1 agreement with it on held-out images.
    Teacher,
    /// No data: no training, and the final check is top-1 agreement with the original on
    /// synthetic inputs.
    Synthetic,
}

impl Supervision {
    /// What the final check measures, as the table and messages say it.
    pub fn measure(self) -> &'static str {
        match self {
            Supervision::Labels => "test accuracy",
            Supervision::Teacher => "agreement with the original",
            Supervision::Synthetic => "agreement with the original on synthetic inputs",
        }
    }

    /// Points of validation accuracy (or agreement) a prune may lose and count as recovered.
    pub fn default_tolerance(self) -> f64 {
        match self {
            Supervision::Labels | Supervision::Synthetic => 0.5,
            Supervision::Teacher => 2.0,
        }
    }

    /// The gate's points when --max-drop is not given; none without data, where agreement on
    /// synthetic inputs says too little of accuracy to refuse a model on.
    pub fn default_max_drop(self) -> Option<f64> {
        match self {
            Supervision::Labels => Some(1.0),
            Supervision::Teacher => Some(3.0),
            Supervision::Synthetic => None,
        }
    }
}

/// Turns what `data` holds into train and test splits for `compress`: labelled splits as they
/// are (with the original's scores on the training images when --distill asks), unlabeled images
/// labelled and scored by the original model `graph`, `--test-fraction` of them held out (drawn
/// by `seed`) for the final check.
pub fn splits(
    graph: &Graph,
    model: &Path,
    data: &Path,
    contents: Contents,
    distill: &DistillArgs,
    seed: u64,
) -> Result<(Splits, Supervision)> {
    match contents {
        Contents::Labelled(mut splits) => {
            if distill.distill {
                add_teacher(graph, model, &mut splits.train)?;
            }
            Ok((splits, Supervision::Labels))
        }
        Contents::Unlabeled(images) => {
            let count = images.dim().0;
            if count < 2 {
                bail!(
                    "{}: {count} unlabeled image(s); training and the final check need at least \
                     two (and recovery checks a few more)",
                    data.display()
                );
            }
            let all = data_args::labelled_by(graph, model, images)?;
            Ok((
                hold_out(&all, distill.test_fraction, seed),
                Supervision::Teacher,
            ))
        }
    }
}

/// Keeps the original model's scores of every image of `data` as the teacher's.
pub fn add_teacher(graph: &Graph, model: &Path, data: &mut Dataset) -> Result<()> {
    data.teacher = Some(data_args::scores_of(graph, model, data.images.view())?);
    Ok(())
}

/// Splits `all` into (train, test), `fraction` of it (at least one image each) to test, drawn by
/// `seed`; both keep the images' order.
fn hold_out(all: &Dataset, fraction: f32, seed: u64) -> Splits {
    let n = all.len();
    let test_count = ((fraction * n as f32).round() as usize).clamp(1, n - 1);
    let mut to_test = vec![false; n];
    for i in pare_kernels::rng::permutation(n, seed ^ HOLD_OUT_STREAM)
        .into_iter()
        .take(test_count)
    {
        to_test[i] = true;
    }
    let (test, train): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| to_test[i]);
    let mut test = all.select(&test);
    // The final check reads labels (tract's own top-1, set later), never the teacher's scores.
    test.teacher = None;
    Splits {
        train: all.select(&train),
        test,
    }
}

/// Keeps the test draw apart from the validation split's, which uses the same seed.
const HOLD_OUT_STREAM: u64 = 0x7e57_0000_0000_0001;
