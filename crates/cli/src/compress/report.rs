//! What `compress` prints and writes with `--report`: both models' figures, the layers' widths,
//! the history, and the table people read.

use super::*;
use pare_prune::SyntheticSource;

#[derive(Serialize)]
pub(super) struct Figures {
    pub(super) params: u64,
    pub(super) macs: u64,
    pub(super) file_bytes: u64,
    #[serde(flatten)]
    pub(super) zeros: Zeros,
    pub(super) test_accuracy: f64,
    pub(super) latency: Latency,
}

#[derive(Serialize)]
pub(super) struct Report {
    pub(super) model: PathBuf,
    pub(super) output: PathBuf,
    pub(super) written: bool,
    pub(super) config: CompressConfig,
    /// How every split's images were prepared (resize, crop, channel order, mean and std); none
    /// without data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) preprocess: Option<pare_data::Preprocess>,
    pub(super) validation: String,
    /// Whether the validation images were held out of the training split.
    pub(super) validation_held_out: bool,
    /// Where the labels came from: the dataset, or (unlabeled data) the original model, in which
    /// case every `test_accuracy` and `validation_accuracy` is top-1 agreement with the original.
    pub(super) supervision: Supervision,
    pub(super) test_images: usize,
    pub(super) original: Figures,
    pub(super) compressed: Figures,
    pub(super) target_met: Option<bool>,
    /// The target asked for more than the analysis's caps allow; the model was pruned to them.
    pub(super) target_clamped: bool,
    /// A latency target: the latency model, the predicted and the measured fraction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) latency_target: Option<crate::latency_args::LatencyTarget>,
    /// Per group r_g and its cap, R_max, ε: when the run analysed the model.
    pub(super) analysis: Option<RedundancyReport>,
    /// Hierarchical: the least-squares refit of the layers that read removed channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) refit: Option<pare_prune::analysis::Refit>,
    /// `--strategy es`: the three models of the front, as tract measured them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) front: Option<Vec<front::VerifiedPick>>,
    pub(super) layers: Vec<LayerReport>,
    /// Per weight layer of the compressed model, its parameters that are not exactly zero.
    pub(super) sparsity: Vec<LayerSparsity>,
    pub(super) history: Vec<HistoryEntry>,
    /// Without data: the prune, its bias compensation and the synthetic inputs checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) no_data: Option<NoData>,
}

/// What a run without data did and checked on.
#[derive(Serialize)]
pub(super) struct NoData {
    pub(super) criterion: &'static str,
    /// Channels removed over all groups.
    pub(super) channels: usize,
    pub(super) compensation: pare_prune::Compensation,
    pub(super) synthetic: pare_prune::SyntheticSource,
}

#[derive(Serialize)]
pub(super) struct LayerReport {
    pub(super) name: String,
    pub(super) op: String,
    pub(super) outputs_before: Option<usize>,
    pub(super) outputs_after: Option<usize>,
    pub(super) macs_before: u64,
    pub(super) macs_after: u64,
    /// Milliseconds tract spent in the layer per batch-1 run (thread CPU time, median), before
    /// and after; None where tract fused the layer into another.
    pub(super) ms_before: Option<f64>,
    pub(super) ms_after: Option<f64>,
}

impl Figures {
    /// How much of the MACs removed shows as time saved: the MACs ratio over the latency ratio
    /// against `original` (1: every MAC removed saved its share of time).
    pub(super) fn efficiency(&self, original: &Figures) -> f64 {
        let macs = self.macs as f64 / original.macs.max(1) as f64;
        let latency = self.latency.median_ms / original.latency.median_ms.max(f64::MIN_POSITIVE);
        macs / latency.max(f64::MIN_POSITIVE)
    }
}

pub(super) fn figures(
    cost: Cost,
    bytes: u64,
    zeros: Zeros,
    accuracy: Accuracy,
    latency: Latency,
) -> Figures {
    Figures {
        params: cost.params,
        macs: cost.macs,
        file_bytes: bytes,
        zeros,
        test_accuracy: accuracy.percent(),
        latency,
    }
}

pub(super) fn layer_report(
    before: &[LayerWidth],
    after: &[LayerWidth],
    ms_before: &[Option<f64>],
    ms_after: &[Option<f64>],
) -> Vec<LayerReport> {
    before
        .iter()
        .zip(after)
        .zip(ms_before.iter().zip(ms_after))
        .map(|((b, a), (&ms_before, &ms_after))| LayerReport {
            name: b.name.clone(),
            op: b.op.clone(),
            outputs_before: b.outputs,
            outputs_after: a.outputs,
            macs_before: b.macs,
            macs_after: a.macs,
            ms_before,
            ms_after,
        })
        .collect()
}

fn width(w: Option<usize>) -> String {
    w.map_or_else(|| "?".into(), |w| w.to_string())
}

/// A layer's time in the table: "-" where tract fused it into another layer.
fn ms(t: Option<f64>) -> String {
    t.map_or_else(|| "-".into(), |t| format!("{t:.3}"))
}

pub(super) fn render(r: &Report) -> String {
    let (o, c) = (&r.original, &r.compressed);
    let ratio = |a: f64, b: f64| format!("{:.2}x", b / a.max(f64::MIN_POSITIVE));
    let mut rows = vec![
        vec![
            "params".into(),
            table::thousands(o.params),
            table::thousands(c.params),
            ratio(o.params as f64, c.params as f64),
        ],
        vec![
            "MACs".into(),
            table::thousands(o.macs),
            table::thousands(c.macs),
            ratio(o.macs as f64, c.macs as f64),
        ],
        vec![
            "file size (bytes)".into(),
            table::thousands(o.file_bytes),
            table::thousands(c.file_bytes),
            ratio(o.file_bytes as f64, c.file_bytes as f64),
        ],
        vec![
            match r.supervision {
                Supervision::Labels => format!("test accuracy ({} images)", r.test_images),
                Supervision::Teacher => format!(
                    "top-1 agreement with the original ({} held-out images)",
                    r.test_images
                ),
                Supervision::Synthetic => format!(
                    "top-1 agreement with the original ({} synthetic inputs)",
                    r.test_images
                ),
            },
            format!("{:.1}%", o.test_accuracy),
            format!("{:.1}%", c.test_accuracy),
            format!("{:+.1} pt", c.test_accuracy - o.test_accuracy),
        ],
        vec![
            "latency, batch 1 (median ms)".into(),
            format!("{:.3}", o.latency.median_ms),
            format!("{:.3}", c.latency.median_ms),
            ratio(o.latency.median_ms, c.latency.median_ms),
        ],
        vec![
            "efficiency (MACs/latency)".into(),
            String::new(),
            format!("{:.2}", r.compressed.efficiency(&r.original)),
            String::new(),
        ],
    ];
    let zeros = sparsity::has_zeros(&r.sparsity);
    if zeros {
        let (params, gzip) = sparsity::rows(o.params, &o.zeros, &c.zeros);
        rows.insert(3, gzip);
        rows.splice(1..1, params);
    }
    let mut out = table::render(&["", "original", "compressed", "ratio"], &rows);
    let widths: Vec<Vec<String>> = r
        .layers
        .iter()
        .zip(&r.sparsity)
        .map(|(l, s)| {
            let mut row = vec![
                l.name.clone(),
                l.op.clone(),
                width(l.outputs_before),
                width(l.outputs_after),
                table::thousands(l.macs_after),
            ];
            row.extend(zeros.then(|| sparsity::share(s)));
            row.extend([ms(l.ms_before), ms(l.ms_after)]);
            row
        })
        .collect();
    out.push_str("\nlayers\n\n");
    let mut header = vec!["name", "op", "outputs before", "after", "MACs after"];
    header.extend(zeros.then_some("nonzero"));
    header.extend(["ms before", "ms after"]);
    out.push_str(&table::render(&header, &widths));
    let prunes = r
        .history
        .iter()
        .filter(|h| matches!(h.event, Event::Prune { .. } | Event::Relief { .. }))
        .count();
    let rolled_back = r
        .history
        .iter()
        .any(|h| matches!(h.event, Event::RolledBack { .. }));
    if let Some(no_data) = &r.no_data {
        out.push_str(&render_no_data(no_data));
    } else {
        out.push_str(&format!(
            "\n{prunes} pruning event(s){}; validation: {}\n",
            if rolled_back {
                ", the last one rolled back"
            } else {
                ""
            },
            r.validation
        ));
    }
    if let Some(a) = &r.analysis {
        out.push_str("\neffective-filter analysis of the original model\n\n");
        out.push_str(&render_analysis(a));
        if r.target_clamped {
            out.push_str(&format!(
                "the target asks for more than the caps allow: pruned to the caps instead (estimated limit: {:.1}% of the MACs, {:.1}% of the parameters removed)\n",
                100.0 * a.r_max_macs,
                100.0 * a.r_max_params
            ));
        }
    }
    if let Some(refit) = &r.refit {
        out.push_str(&format!(
            "refit: {} layer(s) now read the removed channels through the kept ones, which explain {:.1}% of their signal\n",
            refit.layers,
            100.0 * refit.explained
        ));
    }
    if let Some(picks) = &r.front {
        out.push_str("\nfront (fine-tuned for the whole budget; test accuracy by tract)\n\n");
        let rows: Vec<Vec<String>> = picks
            .iter()
            .map(|p| {
                vec![
                    p.role.name().to_string(),
                    table::thousands(p.macs),
                    table::thousands(p.params),
                    format!("{:.1}%", p.validation_accuracy),
                    format!("{:.1}%", p.test_accuracy),
                    p.file
                        .as_ref()
                        .map_or("not written".into(), |f| f.display().to_string()),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["model", "MACs", "params", "validation", "test", "file"],
            &rows,
        ));
    }
    if let Some(t) = &r.latency_target {
        out.push_str(&render_latency_target(t));
    } else if r.target_met == Some(false) && !r.target_clamped {
        out.push_str("the target was not reached within the epoch budget\n");
    }
    let start = r.history.first().map_or(0.0, |h| h.validation_accuracy);
    // Agreement on images the original labelled starts at 100% by construction.
    let memorised = r.validation_held_out && start >= 99.0 && r.supervision == Supervision::Labels;
    if (rolled_back || (r.target_met == Some(false) && !r.target_clamped)) && memorised {
        out.push_str(&format!(
            "hint: validation accuracy was {start:.1}% before pruning: the model has probably memorised its training data, so images held out of it cannot show recovery; give a separate validation set with --val DIR\n"
        ));
    } else if r.front.is_some() && memorised {
        out.push_str(&format!(
            "hint: validation accuracy was {start:.1}% before pruning: the model has probably memorised its training data, so images held out of it tell the search's candidates apart poorly; give a separate validation set with --val DIR\n"
        ));
    }
    if r.written {
        out.push_str(&format!("wrote {}\n", r.output.display()));
    }
    out
}

/// The lines of a run without data: what was pruned and compensated, what the agreement was
/// measured on, and that accuracy was not.
fn render_no_data(n: &NoData) -> String {
    let c = &n.compensation;
    let inputs = match &n.synthetic {
        SyntheticSource::FirstBatchNorm {
            conv, batchnorm, ..
        } => format!(
            "drawn per channel so that '{conv}' meets the statistics of BatchNorm '{batchnorm}'"
        ),
        SyntheticSource::Uniform => {
            "uniform in [0, 1] (no BatchNorm after the first convolution to fit them to)".into()
        }
    };
    format!(
        "\npruned once without data: {} channel(s) by {} scores, no fine-tuning\n\
         bias compensation: {} of {} removed channel reads folded into their consumers' biases \
         from the BatchNorms before them ({} not traceable to one)\n\
         synthetic inputs: {inputs}\n\
         warning: accuracy was not measured (no --data). The agreement above is on synthetic \
         inputs: it shows how far the prune moved the model's decisions, not how accurate the \
         model is; give --data to measure accuracy and to fine-tune\n",
        n.channels, n.criterion, c.compensated, c.reads, c.unknown
    )
}

/// The line of a latency target: asked, predicted, measured, and whether it was met.
fn render_latency_target(t: &crate::latency_args::LatencyTarget) -> String {
    let asked = match t.ms {
        Some(ms) => format!("{ms} ms"),
        None => format!("{:.0}% of the original's latency", 100.0 * t.fraction),
    };
    format!(
        "\nlatency target {asked}: aimed at a predicted {:.0}%, reached a predicted {:.0}%, measured {:.1}% of the original's latency: {}\n",
        100.0 * t.aimed_fraction,
        100.0 * t.predicted_fraction,
        100.0 * t.measured_fraction,
        if t.met {
            "met"
        } else {
            "NOT met (the latency model's prediction was off, or the measurement was noisy; \
             give a slightly lower target)"
        }
    )
}
