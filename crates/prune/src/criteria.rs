//! Importance criteria: a score per channel of every prunable group, low = prune first.
//!
//! A group's score sums what each of its members says about the channel (Torch-Pruning's group
//! importance), so a residual stream is judged by every layer that reads or writes it. Scores are
//! comparable within a group only; `selection` normalises them for a global ranking. This module
//! does not choose channels.

use crate::groups::{ChannelGroups, GroupId, Slice, SliceKind};
use crate::PruneError;
use ndarray::{ArrayD, Axis};
use pare_ir::{Graph, Op, Tensor, ValueId};
use pare_kernels::rng::SplitMix64;
use pare_train::optim::Rls;
use pare_train::{BatchStream, Gradients, Mode, Objective, Tape, TrainError};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// How channels are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    /// OBS saliency from each consumer's RLS P and W: ½·tr(W_S P_SS⁻¹ W_Sᵀ) (docs/methods/rls.md).
    Rls,
    /// Sum of |w| of the filters that write the channel (Li et al.).
    L1,
    /// Group L2 norm over every weight that reads or writes the channel and its BatchNorm scale.
    L2,
    /// Sum of |γ| of the BatchNorms on the channel (Network Slimming).
    BnScale,
    /// Σ|w·∂L/∂w| over the channel's weights, with the gradient averaged over calibration batches.
    Taylor,
    /// Uniform random, from the seed.
    Random,
}

impl Criterion {
    /// Every criterion, in the order users see them listed.
    pub const ALL: [Criterion; 6] = [
        Criterion::Rls,
        Criterion::L1,
        Criterion::L2,
        Criterion::BnScale,
        Criterion::Taylor,
        Criterion::Random,
    ];

    /// The name users give it, as in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Criterion::Rls => "rls",
            Criterion::L1 => "l1",
            Criterion::L2 => "l2",
            Criterion::BnScale => "bn-scale",
            Criterion::Taylor => "taylor",
            Criterion::Random => "random",
        }
    }

    /// One line on what it scores, for users.
    pub fn help(self) -> &'static str {
        match self {
            Criterion::Rls => "OBS saliency from RLS's P and the weights",
            Criterion::L1 => "L1 norm of the filters writing the channel",
            Criterion::L2 => "Group L2 norm of every weight on the channel",
            Criterion::BnScale => "|γ| of the channel's BatchNorms",
            Criterion::Taylor => "|w·∂L/∂w| summed over the channel's weights",
            Criterion::Random => "Random, from --seed",
        }
    }

    /// The criterion called `name`.
    pub fn from_name(name: &str) -> Option<Criterion> {
        Criterion::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// Per prunable group, one score per channel.
pub type Scores = BTreeMap<GroupId, Vec<f64>>;

/// What a criterion may read besides the weights.
pub struct Evidence<'a> {
    /// The RLS state of the network (its P per layer).
    pub rls: Option<&'a Rls>,
    /// Mean parameter gradients over some batches.
    pub gradients: Option<&'a HashMap<ValueId, ArrayD<f32>>>,
    pub seed: u64,
}

/// Runs `batches` forward and backward passes on training data (BatchNorm in inference mode, no
/// weight moves), handing each pass's tape and gradients to `pass`; `mean_inputs` records the
/// input means RLS observes on the tape.
pub fn calibration_passes(
    graph: &Graph,
    stream: &mut BatchStream,
    batches: usize,
    loss: &Objective,
    mean_inputs: bool,
    mut pass: impl FnMut(&Tape, &Gradients),
) -> Result<(), TrainError> {
    let target = pare_train::scores_value(graph)?;
    for _ in 0..batches {
        let batch = stream.next_batch();
        let (labels, teacher) = (&batch.labels, batch.teacher.as_ref().map(|t| t.view()));
        let tape = pare_train::forward(
            graph,
            batch.images.clone().into_dyn(),
            Mode::Eval,
            mean_inputs,
            None,
        )?;
        let s = tape.value(target).expect("forward computed the scores");
        let scores = s
            .view()
            .into_dimensionality::<ndarray::Ix2>()
            .map_err(|_| TrainError::OutputShape(s.shape().to_vec()))?;
        if let Some(&label) = labels.iter().find(|&&l| l >= scores.ncols()) {
            return Err(TrainError::Label {
                label,
                classes: scores.ncols(),
            });
        }
        let out = loss.evaluate(scores, labels, teacher)?;
        let grads = pare_train::backward(graph, &tape, target, out.grad.into_dyn())?;
        pass(&tape, &grads);
    }
    Ok(())
}

/// The mean gradient of every parameter over `batches` calibration passes, updating `rls`'s P
/// from the same passes when given.
pub fn calibrate(
    graph: &Graph,
    stream: &mut BatchStream,
    batches: usize,
    loss: &Objective,
    mut rls: Option<&mut Rls>,
) -> Result<HashMap<ValueId, ArrayD<f32>>, TrainError> {
    let mut sums: HashMap<ValueId, ArrayD<f32>> = HashMap::new();
    calibration_passes(
        graph,
        stream,
        batches,
        loss,
        rls.is_some(),
        |tape, grads| {
            for v in pare_train::optim::parameters(graph, grads) {
                let g = grads.of(v).expect("parameters have gradients");
                match sums.get_mut(&v) {
                    Some(s) => *s += g,
                    None => {
                        sums.insert(v, g.clone());
                    }
                }
            }
            if let Some(rls) = rls.as_deref_mut() {
                rls.observe(tape);
            }
        },
    )?;
    let n = batches.max(1) as f32;
    sums.values_mut().for_each(|s| s.mapv_inplace(|x| x / n));
    Ok(sums)
}

/// The feature range of each channel of `group` along a slice's axis.
pub(crate) fn channel_ranges(
    groups: &ChannelGroups,
    slice: &Slice,
    group: GroupId,
) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut offset = 0;
    for s in &slice.segments {
        if groups.group_of_space(s.space) == group {
            out.extend((0..s.len).map(|c| offset + c * s.block..offset + (c + 1) * s.block));
        }
        offset += s.len * s.block;
    }
    out
}

fn f32_tensor(graph: &Graph, v: ValueId) -> Option<&ArrayD<f32>> {
    match graph.value(v).initializer()? {
        Tensor::F32(a) => Some(a),
        _ => None,
    }
}

/// Whether a slice is a layer's weight (Conv/Gemm/MatMul input 1), not a bias or statistic.
pub(crate) fn is_weight(graph: &Graph, slice: &Slice) -> bool {
    slice.input == 1
        && matches!(
            graph.node(slice.node).op,
            Op::Conv(_) | Op::Gemm(_) | Op::MatMul
        )
}

fn is_bn_scale(graph: &Graph, slice: &Slice) -> bool {
    slice.input == 1 && matches!(graph.node(slice.node).op, Op::BatchNorm { .. })
}

/// Σ f(x) over each channel's entries of a slice's tensor (or of `values`, same shape).
fn per_channel(
    tensor: &ArrayD<f32>,
    axis: usize,
    ranges: &[Range<usize>],
    f: impl Fn(&[f32]) -> f64,
) -> Vec<f64> {
    ranges
        .iter()
        .map(|r| {
            let part = tensor.slice_axis(Axis(axis), (r.start..r.end).into());
            let flat: Vec<f32> = part.iter().copied().collect();
            f(&flat)
        })
        .collect()
}

/// Scores every channel of every prunable group.
pub fn score(
    criterion: Criterion,
    graph: &Graph,
    groups: &ChannelGroups,
    evidence: &Evidence,
) -> Result<Scores, PruneError> {
    let mut scores = Scores::new();
    let mut rng = SplitMix64::new(evidence.seed);
    for group in groups.groups.iter().filter(|g| g.prunable()) {
        let mut total = vec![0.0f64; group.channels];
        let mut scored = false;
        for &i in &group.slices {
            let slice = &groups.slices[i];
            let ranges = channel_ranges(groups, slice, group.id);
            let Some(t) = f32_tensor(graph, slice.tensor) else {
                continue;
            };
            let part: Option<Vec<f64>> = match criterion {
                Criterion::L1 => (is_weight(graph, slice) && slice.kind == SliceKind::Producer)
                    .then(|| {
                        per_channel(t, slice.axis, &ranges, |x| {
                            x.iter().map(|v| v.abs() as f64).sum()
                        })
                    }),
                Criterion::L2 => {
                    (is_weight(graph, slice) || is_bn_scale(graph, slice)).then(|| {
                        per_channel(t, slice.axis, &ranges, |x| {
                            x.iter().map(|&v| v as f64 * v as f64).sum()
                        })
                    })
                }
                Criterion::BnScale => is_bn_scale(graph, slice).then(|| {
                    per_channel(t, slice.axis, &ranges, |x| {
                        x.iter().map(|v| v.abs() as f64).sum()
                    })
                }),
                Criterion::Taylor => {
                    let grads = evidence.gradients.ok_or(PruneError::CriterionNeeds(
                        criterion,
                        "gradients from calibration",
                    ))?;
                    match (is_weight(graph, slice), grads.get(&slice.tensor)) {
                        (true, Some(g)) => {
                            let wg = t * g;
                            Some(per_channel(&wg, slice.axis, &ranges, |x| {
                                x.iter().map(|v| v.abs() as f64).sum()
                            }))
                        }
                        _ => None,
                    }
                }
                Criterion::Rls => {
                    let rls = evidence.rls.ok_or(PruneError::CriterionNeeds(
                        criterion,
                        "the RLS state of the network",
                    ))?;
                    (is_weight(graph, slice) && slice.kind == SliceKind::Consumer)
                        .then(|| rls.saliency(graph, slice.node, &ranges))
                        .flatten()
                }
                Criterion::Random => None,
            };
            if let Some(part) = part {
                scored = true;
                total.iter_mut().zip(part).for_each(|(a, b)| *a += b);
            }
        }
        if criterion == Criterion::Random {
            total.iter_mut().for_each(|x| *x = rng.unit_f64());
            scored = true;
        }
        if criterion == Criterion::L2 {
            total.iter_mut().for_each(|x| *x = x.sqrt());
        }
        if scored {
            scores.insert(group.id, total);
        }
    }
    if criterion == Criterion::BnScale && scores.is_empty() {
        return Err(PruneError::NoBatchNorm);
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze;
    use pare_onnx::{attr, GraphBuilder};

    #[test]
    fn names_are_the_kebab_case_variant_names_the_report_uses() {
        for c in Criterion::ALL {
            let mut kebab = String::new();
            for (i, ch) in format!("{c:?}").chars().enumerate() {
                if ch.is_uppercase() && i > 0 {
                    kebab.push('-');
                }
                kebab.push(ch.to_ascii_lowercase());
            }
            assert_eq!(c.name(), kebab);
            assert_eq!(Criterion::from_name(c.name()), Some(c));
        }
    }

    /// x[N,1,4,4] → Conv c1 (3 channels) → BN → Relu → Conv c2 (2) → GAP → Flatten → y.
    /// Channel 1 is dead: its BN shift of −100 keeps it below zero for inputs in [0, 1).
    fn graph() -> Graph {
        let mut b = GraphBuilder::new("small", 17);
        b.input(
            "x",
            ["N".into(), 1.into(), 4.into(), 4.into()]
                .into_iter()
                .collect::<Vec<pare_onnx::DimSpec>>(),
        );
        b.initializer(attr::tensor_f32(
            "c1.w",
            &[3, 1, 1, 1],
            vec![1.0, -2.0, 3.0],
        ));
        b.node("Conv", &["x", "c1.w"], &["a"], vec![]);
        for (n, v) in [
            ("g", vec![0.5, -4.0, 1.0]),
            ("be", vec![0.0, -100.0, 0.0]),
            ("m", vec![0.0; 3]),
            ("v", vec![1.0; 3]),
        ] {
            b.initializer(attr::tensor_f32(n, &[3], v));
        }
        b.node(
            "BatchNormalization",
            &["a", "g", "be", "m", "v"],
            &["bn"],
            vec![],
        );
        b.node("Relu", &["bn"], &["r"], vec![]);
        b.initializer(attr::tensor_f32(
            "c2.w",
            &[2, 3, 1, 1],
            vec![1.0, 0.0, 2.0, 1.0, 1.0, 0.0],
        ));
        b.node("Conv", &["r", "c2.w"], &["c"], vec![]);
        b.node("GlobalAveragePool", &["c"], &["gap"], vec![]);
        b.node("Flatten", &["gap"], &["y"], vec![]);
        b.output(
            "y",
            ["N".into(), 2.into()]
                .into_iter()
                .collect::<Vec<pare_onnx::DimSpec>>(),
        );
        pare_ir::import(&b.build()).unwrap()
    }

    fn scores_of(criterion: Criterion, graph: &Graph, evidence: &Evidence) -> Vec<f64> {
        let groups = analyze(graph);
        let s = score(criterion, graph, &groups, evidence).unwrap();
        assert_eq!(s.len(), 1, "one prunable group: {s:?}");
        s.into_values().next().unwrap()
    }

    fn close(a: &[f64], b: &[f64]) {
        assert!(
            a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6),
            "{a:?} != {b:?}"
        );
    }

    #[test]
    fn magnitude_criteria_read_the_right_members_of_the_group() {
        let g = graph();
        let none = Evidence {
            rls: None,
            gradients: None,
            seed: 0,
        };
        close(&scores_of(Criterion::L1, &g, &none), &[1.0, 2.0, 3.0]);
        close(&scores_of(Criterion::BnScale, &g, &none), &[0.5, 4.0, 1.0]);
        // Producer filter² + γ² + the consumer's input column².
        close(
            &scores_of(Criterion::L2, &g, &none),
            &[3.25f64.sqrt(), 21f64.sqrt(), 14f64.sqrt()],
        );
    }

    #[test]
    fn taylor_multiplies_weights_by_their_gradients() {
        let g = graph();
        let ones = |name: &str| {
            let v = g.find_value(name).unwrap();
            let shape = f32_tensor(&g, v).unwrap().raw_dim();
            (v, ArrayD::from_elem(shape, 1.0f32))
        };
        let grads: HashMap<_, _> = [ones("c1.w"), ones("c2.w")].into_iter().collect();
        let ev = Evidence {
            rls: None,
            gradients: Some(&grads),
            seed: 0,
        };
        close(&scores_of(Criterion::Taylor, &g, &ev), &[3.0, 3.0, 5.0]);
        let none = Evidence {
            rls: None,
            gradients: None,
            seed: 0,
        };
        assert!(score(Criterion::Taylor, &g, &analyze(&g), &none).is_err());
    }

    #[test]
    fn random_scores_follow_the_seed() {
        let g = graph();
        let at = |seed| {
            scores_of(
                Criterion::Random,
                &g,
                &Evidence {
                    rls: None,
                    gradients: None,
                    seed,
                },
            )
        };
        assert_eq!(at(1), at(1));
        assert_ne!(at(1), at(2));
    }

    #[test]
    fn rls_scores_a_dead_channel_zero_and_live_ones_above() {
        let g = graph();
        let mut rls = Rls::new(pare_train::RlsConfig::default(), &g);
        let data = pare_data::Dataset::new(
            ndarray::Array4::from_shape_fn((16, 1, 4, 4), |(n, _, i, j)| {
                ((n * 7 + i * 3 + j) % 10) as f32 / 10.0
            }),
            (0..16).map(|i| i % 2).collect(),
        );
        let mut stream = BatchStream::new(&data, 8, 0);
        calibrate(
            &g,
            &mut stream,
            2,
            &pare_train::Loss::CrossEntropy.into(),
            Some(&mut rls),
        )
        .unwrap();
        let s = scores_of(
            Criterion::Rls,
            &g,
            &Evidence {
                rls: Some(&rls),
                gradients: None,
                seed: 0,
            },
        );
        assert_eq!(s[1], 0.0, "{s:?}");
        assert!(s[0] > 0.0 && s[2] > 0.0, "{s:?}");
    }
}
