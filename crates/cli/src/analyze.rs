//! `compress analyze`: how far each channel group, and the whole model, can be pruned, from the
//! effective-filter analysis (docs/methods/hierarchical.md). Trains nothing, writes nothing.

use crate::data_args::{self, PreprocessArgs};
use crate::{model, progress, table};
use anyhow::{bail, Context, Result};
use pare_data::Contents;
use pare_prune::analysis::{self, AnalysisSettings, GramSource, RedundancyReport};
use pare_train::{BatchStream, Loss};
use serde::Serialize;
use std::path::PathBuf;

/// What the columns of each group's Gram matrix are.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum GramKind {
    /// The loss gradient of every weight that reads the channel (the method's matrix).
    Gradients,
    /// The channel's activations where each weight reads them (forward only, for comparison).
    Activations,
}

impl GramKind {
    pub fn source(self) -> GramSource {
        match self {
            GramKind::Gradients => GramSource::Gradients,
            GramKind::Activations => GramSource::Activations,
        }
    }
}

/// The energy rule's flags, shared by `analyze` and the `compress` runs that analyse.
#[derive(clap::Args)]
pub struct EnergyArgs {
    /// Energy tolerance ε: a group's effective rank is the fewest eigenvalues of its Gram matrix
    /// that hold 1 − ε of their sum.
    #[arg(long, default_value_t = 2e-2)]
    pub epsilon: f64,
    /// What the Gram matrix is built from.
    #[arg(long, value_enum, default_value_t = GramKind::Gradients)]
    pub gram: GramKind,
}

impl EnergyArgs {
    /// The analysis settings over `batches` batches.
    pub fn settings(&self, batches: usize) -> AnalysisSettings {
        AnalysisSettings {
            batches,
            epsilon: self.epsilon,
            gram: self.gram.source(),
        }
    }
}

/// Estimate how far a model can be pruned: each channel group's effective filters, its cap, and
/// the model's limit R_max.
///
/// A group's effective filters are the rank (by the energy rule) of a Gram matrix of what the
/// weights reading it see on training batches; the cap is the width that leaves. R_max is the
/// share of MACs and parameters saved with every group at its cap, measured on a pruned copy of
/// the graph.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to analyse.
    model: PathBuf,
    /// Dataset (as for `finetune`): the analysis reads batches of its train split. Unlabeled
    /// images (a folder of images, an .npz of x alone) work too, labelled by the model's own
    /// top-1 classes.
    #[arg(long)]
    data: PathBuf,
    /// Training batches the Gram matrices are summed over.
    #[arg(long, default_value_t = 32)]
    batches: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[command(flatten)]
    energy: EnergyArgs,
    /// Fraction of its width every group keeps whatever the analysis says (at least one channel).
    #[arg(long, default_value_t = 0.05)]
    min_keep: f64,
    /// Seed of the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON instead of a table, for pipelines.
    #[arg(long)]
    json: bool,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    shape: model::InputShapeArg,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

/// The most batches `analyze` sums over: beyond this a typo, not an analysis.
pub const MAX_BATCHES: usize = 100_000;

#[derive(Serialize)]
struct Report {
    model: PathBuf,
    data: PathBuf,
    preprocess: pare_data::Preprocess,
    batch_size: usize,
    seed: u64,
    #[serde(flatten)]
    analysis: RedundancyReport,
}

pub fn run(args: Args) -> Result<()> {
    if args.batches == 0 || args.batches > MAX_BATCHES || args.batch == 0 {
        bail!("--batches must be between 1 and {MAX_BATCHES}, --batch at least 1");
    }
    if !(0.0..1.0).contains(&args.min_keep) {
        bail!("--min-keep must be in [0, 1)");
    }
    let (graph, preprocess, contents) = data_args::load_model_and_contents(
        &args.model,
        &args.shape,
        &args.data,
        &args.preprocess,
        &mut Default::default(),
    )?;
    let train = &match contents {
        Contents::Labelled(splits) => splits.train,
        // Gradients of the original's own top-1 classes: what `compress` trains unlabeled data on.
        Contents::Unlabeled(images) => data_args::labelled_by(&graph, &args.model, images)?,
    };
    pare_verify::input_shape_for(&graph, &args.model, &args.data, "train", train, 1)?;
    let groups = pare_prune::analyze(&graph);
    if !groups.groups.iter().any(|g| g.prunable()) {
        bail!(
            "{}: no prunable channel group (see `compress inspect` for why each is frozen)",
            args.model.display()
        );
    }
    let mut stream = BatchStream::new(train, args.batch.min(train.len()), args.seed);
    let bar = progress::bar(
        args.batches,
        args.quiet,
        "analysing [{bar:30}] {pos}/{len} batches ({eta})",
    );
    let filters = analysis::effective_filters(
        &graph,
        &groups,
        &mut stream,
        args.energy.settings(args.batches),
        &Loss::CrossEntropy.into(),
        args.min_keep,
        &mut |done| bar.set_position(done as u64),
    )
    .with_context(|| format!("{}: analysis failed", args.model.display()))?;
    bar.finish_and_clear();
    let report = Report {
        analysis: filters.report(&graph, &groups)?,
        model: args.model,
        data: args.data,
        preprocess,
        batch_size: args.batch,
        seed: args.seed,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn percent(f: f64) -> String {
    format!("{:.1}%", 100.0 * f)
}

/// The table of groups and the network's limit, as `compress` also prints it.
pub fn render_analysis(a: &RedundancyReport) -> String {
    let rows: Vec<Vec<String>> = a
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group.0.to_string(),
                g.name.clone(),
                g.channels.to_string(),
                g.effective.to_string(),
                g.silent.to_string(),
                percent(g.max_prune_ratio),
                table::thousands(g.macs_saved),
                table::thousands(g.params_saved),
            ]
        })
        .collect();
    let mut out = table::render(
        &[
            "group",
            "written by",
            "channels",
            "effective",
            "silent",
            "max prune",
            "MACs saved",
            "params saved",
        ],
        &rows,
    );
    out.push_str(&format!(
        "\nR_max: {} of the MACs ({} → {}), {} of the parameters ({} → {})\n",
        percent(a.r_max_macs),
        table::thousands(a.original.macs),
        table::thousands(a.at_caps.macs),
        percent(a.r_max_params),
        table::thousands(a.original.params),
        table::thousands(a.at_caps.params),
    ));
    out.push_str(&format!(
        "ε = {:e}, {} Gram over {} batches\n",
        a.settings.epsilon,
        a.settings.gram.name(),
        a.settings.batches
    ));
    out
}

fn render(r: &Report) -> String {
    format!(
        "{} on {} ({} images per batch, seed {})\n\n{}",
        r.model.display(),
        r.data.display(),
        r.batch_size,
        r.seed,
        render_analysis(&r.analysis)
    )
}
