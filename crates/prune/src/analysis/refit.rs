//! The least-squares refit after a prune (docs/methods/hierarchical.md, "Refit"): where a layer
//! reads a group, each removed channel's activation is regressed on the group's kept channels
//! and a constant over calibration batches, x_p ≈ Σ_k a_pk·x_k + c_p, and the layer's weights
//! over x_p are folded into those over the kept channels (W_k += Σ_p a_pk·W_p) and its bias
//! (b += Σ_p c_p·ΣW_p). The fit is the projection of x_p onto the kept channels, so for any
//! weights the layer's output changes as little as a linear function of its kept inputs allows.

use super::gram::{channel_columns, columns};
use crate::bias::BiasTarget;
use crate::groups::{ChannelGroups, GroupId, SliceKind};
use crate::{PruneError, PruningPlan};
use nalgebra::DMatrix;
use ndarray::{ArrayViewMutD, Axis};
use pare_ir::{Graph, Op, Tensor, ValueId, ValueSource};
use pare_train::{BatchStream, Mode};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// Relative ridge on the kept channels' Gram diagonal: it keeps the solve defined when kept
/// channels are themselves dependent, and is far below any signal a fit would use.
const RIDGE: f64 = 1e-6;

/// What the refit did, for the report.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Refit {
    /// Layers whose weights over kept channels now carry the removed ones.
    pub layers: usize,
    /// Of the removed channels' signal where those layers read it (Σx_p² over the calibration
    /// batches), the share the fit reproduces from the kept channels.
    pub explained: f64,
    /// Layers reading removed channels that were left alone, by reason.
    pub skipped: BTreeMap<String, usize>,
}

/// One removed-and-kept split of a group as one layer reads it.
struct Reading {
    slice: usize,
    group: GroupId,
    /// Feature range of each channel of the group along the layer's input axis.
    ranges: Vec<Range<usize>>,
    /// Index into the accumulated statistics (layers reading one tensor share them).
    stats: usize,
}

/// Σ zzᵀ over rows z = (the group's channels, 1) of one activation: the Gram matrix of the
/// channels augmented with a constant.
struct Moments {
    input: ValueId,
    ranges: Vec<Range<usize>>,
    features: usize,
    gram: DMatrix<f64>,
}

/// Refits, for `plan`, every Conv (ungrouped), Gemm and MatMul that reads a channel the plan
/// removes, from `batches` forward passes of `stream` through the unpruned `graph`. Call it right
/// before `plan.apply(graph, groups)`: a consumer without a bias may get a zero one (with its
/// slice added to `groups`, so surgery cuts it with the layer's outputs).
pub fn refit_consumers(
    graph: &mut Graph,
    groups: &mut ChannelGroups,
    plan: &PruningPlan,
    stream: &mut BatchStream,
    batches: usize,
) -> Result<Refit, PruneError> {
    plan.check(groups)?;
    let mut out = Refit::default();
    let (readings, mut moments) = readings(graph, groups, plan, &mut out);
    if readings.is_empty() {
        return Ok(out);
    }
    for _ in 0..batches {
        let batch = stream.next_batch();
        let tape = pare_train::forward(graph, batch.images.into_dyn(), Mode::Eval, false, None)?;
        for m in &mut moments {
            let Some(a) = tape.value(m.input).filter(|a| a.ndim() >= 2) else {
                continue;
            };
            if a.shape()[1] != m.features {
                continue;
            }
            add_rows(&mut m.gram, &columns(a, 1, &m.ranges));
        }
    }
    let readers = graph.consumers();
    let (mut signal, mut residual) = (0.0, 0.0);
    for r in &readings {
        let slice = groups.slices[r.slice].clone();
        let target = BiasTarget::of(graph, &readers, &slice);
        let m = &moments[r.stats];
        let n = m.gram.nrows() - 1;
        let (kept, removed) = (plan.kept(r.group, n), &plan.drop[&r.group]);
        let Some(fit) = Fit::solve(&m.gram, &kept, removed, target.is_ok()) else {
            *out.skipped
                .entry("the calibration batches gave its kept channels no signal".into())
                .or_default() += 1;
            continue;
        };
        signal += fit.signal;
        residual += fit.residual;
        let mut delta = vec![0.0f64; target.as_ref().map_or(0, |t| t.outputs)];
        if let Ok(target) = &target {
            for (&p, &c) in fit.removed.iter().zip(&fit.constant) {
                target.add_reads(slice.axis, r.ranges[p].clone(), c, &mut delta);
            }
        }
        if let ValueSource::Initializer(Tensor::F32(w)) = &mut graph.value_mut(slice.tensor).source
        {
            fit.fold(w.view_mut(), slice.axis, &r.ranges);
        }
        if let Ok(target) = target {
            target.add(graph, groups, &slice, &delta);
        }
        out.layers += 1;
    }
    out.explained = if signal > 0.0 {
        1.0 - residual / signal
    } else {
        1.0
    };
    Ok(out)
}

/// The layers that read a channel `plan` removes and can be refit, each with the statistics it
/// needs; the others are counted in `out.skipped`.
fn readings(
    graph: &Graph,
    groups: &ChannelGroups,
    plan: &PruningPlan,
    out: &mut Refit,
) -> (Vec<Reading>, Vec<Moments>) {
    let readers = graph.consumers();
    let mut readings = Vec::new();
    let mut moments: Vec<Moments> = Vec::new();
    let mut shared: HashMap<(ValueId, usize), usize> = HashMap::new();
    for (index, slice) in groups.slices.iter().enumerate() {
        if slice.kind != SliceKind::Consumer || slice.input != 1 {
            continue;
        }
        let touched: Vec<GroupId> = plan
            .drop
            .keys()
            .copied()
            .filter(|&g| {
                slice
                    .segments
                    .iter()
                    .any(|s| groups.group_of_space(s.space) == g)
            })
            .collect();
        if touched.is_empty() {
            continue;
        }
        let node = graph.node(slice.node);
        let why = match &node.op {
            Op::Conv(c) if c.group != 1 => Some("a grouped Conv mixes no channels across groups"),
            Op::Conv(_) | Op::Gemm(_) | Op::MatMul => None,
            _ => Some("it is not a Conv, Gemm or MatMul weight"),
        };
        let input = node.inputs.first().copied().flatten();
        let why = why.or_else(|| match graph.value(slice.tensor).initializer() {
            Some(Tensor::F32(_)) if readers[slice.tensor.0 as usize].len() == 1 => None,
            _ => Some("its weight is not a float constant of its own"),
        });
        let (Some(input), None) = (input, why) else {
            *out.skipped
                .entry(why.unwrap_or("it has no data input").into())
                .or_default() += touched.len();
            continue;
        };
        let features = slice.segments.iter().map(|s| s.len * s.block).sum();
        for group in touched {
            let group_ref = &groups.groups[group.0 as usize];
            let Some(occurrences) = channel_columns(groups, slice, group_ref) else {
                *out.skipped
                    .entry("its layout of the group's channels is uneven".into())
                    .or_default() += 1;
                continue;
            };
            for ranges in occurrences {
                let key = (input, ranges[0].start);
                let stats = *shared.entry(key).or_insert_with(|| {
                    let n = ranges.len();
                    moments.push(Moments {
                        input,
                        ranges: ranges.clone(),
                        features,
                        gram: DMatrix::zeros(n + 1, n + 1),
                    });
                    moments.len() - 1
                });
                readings.push(Reading {
                    slice: index,
                    group,
                    ranges,
                    stats,
                });
            }
        }
    }
    (readings, moments)
}

/// Adds the rows of `b` (one column per channel), each augmented with a constant 1, to the
/// Gram matrix `gram` (the constant's row and column last).
fn add_rows(gram: &mut DMatrix<f64>, b: &DMatrix<f64>) {
    let n = b.ncols();
    gram.view_mut((0, 0), (n, n)).gemm_tr(1.0, b, b, 1.0);
    for (c, column) in b.column_iter().enumerate() {
        let sum = column.sum();
        gram[(c, n)] += sum;
        gram[(n, c)] += sum;
    }
    gram[(n, n)] += b.nrows() as f64;
}

/// The regression of removed channels on kept ones (and a constant): the projection of each
/// removed channel onto the span of the kept ones.
struct Fit {
    removed: Vec<usize>,
    /// Kept channels with any signal; the others take no coefficient.
    kept: Vec<usize>,
    /// a_pk, one row per removed channel.
    coefficients: DMatrix<f64>,
    /// c_p, zeros without a constant.
    constant: Vec<f64>,
    /// Σx_p² and the residual Σ(x_p − fit)² over the removed channels.
    signal: f64,
    residual: f64,
}

impl Fit {
    /// Solves the normal equations on the augmented Gram matrix `gram` (from `add_rows`) for
    /// `removed` on `kept`, with the constant when `constant`; None when no regressor has any
    /// signal.
    fn solve(
        gram: &DMatrix<f64>,
        kept: &[usize],
        removed: &[usize],
        constant: bool,
    ) -> Option<Fit> {
        let n = gram.nrows() - 1;
        let kept: Vec<usize> = kept
            .iter()
            .copied()
            .filter(|&k| gram[(k, k)] > 0.0)
            .collect();
        // The regressors: the kept channels, then the constant (index n) when the layer has a bias.
        let mut basis = kept.clone();
        if constant {
            basis.push(n);
        }
        if basis.is_empty() || gram[(n, n)] == 0.0 {
            return None;
        }
        let g = DMatrix::from_fn(basis.len(), basis.len(), |i, j| {
            let v = gram[(basis[i], basis[j])];
            if i == j {
                v * (1.0 + RIDGE)
            } else {
                v
            }
        });
        let rhs = DMatrix::from_fn(basis.len(), removed.len(), |i, j| {
            gram[(basis[i], removed[j])]
        });
        let solution = g.cholesky()?.solve(&rhs);
        let signal: f64 = removed.iter().map(|&p| gram[(p, p)]).sum();
        let explained: f64 = rhs.component_mul(&solution).sum();
        let coefficients = solution.rows(0, kept.len()).transpose();
        let constant = if constant {
            solution.row(kept.len()).iter().copied().collect()
        } else {
            vec![0.0; removed.len()]
        };
        Some(Fit {
            removed: removed.to_vec(),
            kept,
            coefficients,
            constant,
            signal,
            residual: (signal - explained).max(0.0),
        })
    }

    /// Folds the fit into weight `w`, whose `axis` reads channel c at elements `ranges[c]`:
    /// W_k += Σ_p a_pk·W_p, element by element of the channels' ranges.
    fn fold(&self, mut w: ArrayViewMutD<f32>, axis: usize, ranges: &[Range<usize>]) {
        for (i, &p) in self.removed.iter().enumerate() {
            for (t, from) in ranges[p].clone().enumerate() {
                let source = w.index_axis(Axis(axis), from).to_owned();
                for (j, &k) in self.kept.iter().enumerate() {
                    let a = self.coefficients[(i, j)] as f32;
                    w.index_axis_mut(Axis(axis), ranges[k].start + t)
                        .scaled_add(a, &source);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze;
    use pare_data::Dataset;
    use pare_kernels::rng::SplitMix64;
    use pare_onnx::{attr, DimSpec, GraphBuilder};

    /// x[N,2,5,5] → Conv a (3, 1×1, bias) → Conv b (3, 3×3, bias) → Flatten [N,27] → Gemm (2) → y,
    /// no activation between them, so channel 2 of a (2·a₀ − a₁ + 0.5) and channel 2 of b
    /// (b₀ + b₁ − 1) are exact affine combinations of the others.
    fn graph() -> Graph {
        let mut rng = SplitMix64::new(3);
        let mut random =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.unit_f64() as f32 * 2.0 - 1.0).collect() };
        let mut aw = random(4);
        aw.extend([2.0 * aw[0] - aw[2], 2.0 * aw[1] - aw[3]]);
        let mut ab = random(2);
        ab.push(2.0 * ab[0] - ab[1] + 0.5);
        let mut bw = random(54);
        let third: Vec<f32> = (0..27).map(|i| bw[i] + bw[27 + i]).collect();
        bw.extend(third);
        let mut bb = random(2);
        bb.push(bb[0] + bb[1] - 1.0);
        let mut b = GraphBuilder::new("affine", 17);
        b.input("x", [DimSpec::from("N"), 2.into(), 5.into(), 5.into()]);
        b.initializer(attr::tensor_f32("a.w", &[3, 2, 1, 1], aw));
        b.initializer(attr::tensor_f32("a.b", &[3], ab));
        b.initializer(attr::tensor_f32("b.w", &[3, 3, 3, 3], bw));
        b.initializer(attr::tensor_f32("b.b", &[3], bb));
        b.initializer(attr::tensor_f32("fc.w", &[2, 27], random(54)));
        b.node("Conv", &["x", "a.w", "a.b"], &["a"], vec![]);
        b.node("Conv", &["a", "b.w", "b.b"], &["b"], vec![]);
        b.node("Flatten", &["b"], &["f"], vec![]);
        b.node("Gemm", &["f", "fc.w"], &["y"], vec![attr::int("transB", 1)]);
        b.output("y", [DimSpec::from("N"), 2.into()]);
        pare_ir::import(&b.build()).unwrap()
    }

    fn images(seed: u64, n: usize) -> ndarray::Array4<f32> {
        let mut rng = SplitMix64::new(seed);
        ndarray::Array4::from_shape_fn((n, 2, 5, 5), |_| rng.unit_f64() as f32)
    }

    fn outputs(graph: &Graph, x: &ndarray::Array4<f32>) -> ndarray::ArrayD<f32> {
        let tape =
            pare_train::forward(graph, x.clone().into_dyn(), Mode::Eval, false, None).unwrap();
        let y = pare_train::scores_value(graph).unwrap();
        tape.value(y).unwrap().clone()
    }

    /// Drops channel 2 of both groups.
    fn plan(groups: &ChannelGroups) -> PruningPlan {
        let mut plan = PruningPlan::default();
        for g in groups.groups.iter().filter(|g| g.prunable()) {
            plan.drop_channels(g.id, [2]);
        }
        assert_eq!(plan.drop.len(), 2);
        plan
    }

    #[test]
    fn removed_affine_combinations_are_folded_into_the_consumers_exactly() {
        let original = graph();
        let mut groups = analyze(&original);
        let plan = plan(&groups);
        let data = Dataset::new(images(1, 8), vec![0; 8]);
        let mut stream = BatchStream::new(&data, 4, 0);
        let mut refit = original.clone();
        let report = refit_consumers(&mut refit, &mut groups, &plan, &mut stream, 2).unwrap();
        assert_eq!(report.layers, 2, "{report:?}");
        assert!(report.skipped.is_empty(), "{report:?}");
        assert!(report.explained > 1.0 - 1e-5, "{report:?}");
        // Gemm fc had no bias: the constant part of b's channel 2 needed one.
        let fc = refit
            .node_ids()
            .find(|&n| matches!(refit.node(n).op, Op::Gemm(_)));
        assert!(refit
            .node(fc.unwrap())
            .inputs
            .get(2)
            .copied()
            .flatten()
            .is_some());
        plan.apply(&mut refit, &groups).unwrap();
        let mut cut = original.clone();
        plan.apply(&mut cut, &analyze(&original)).unwrap();

        // Fresh inputs, not the calibration ones: the relation is exact, so it holds anywhere.
        let x = images(2, 5);
        let expected = outputs(&original, &x);
        let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let error = |g: &Graph| {
            (&outputs(g, &x) - &expected)
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()))
        };
        assert!(error(&refit) < 1e-3 * scale, "{} of {scale}", error(&refit));
        assert!(error(&cut) > 0.1 * scale, "{} of {scale}", error(&cut));
    }

    #[test]
    fn a_plan_that_removes_nothing_read_by_a_layer_changes_nothing() {
        let original = graph();
        let mut groups = analyze(&original);
        let data = Dataset::new(images(1, 4), vec![0; 4]);
        let mut stream = BatchStream::new(&data, 4, 0);
        let mut copy = original.clone();
        let report = refit_consumers(
            &mut copy,
            &mut groups,
            &PruningPlan::default(),
            &mut stream,
            1,
        )
        .unwrap();
        assert_eq!(report.layers, 0);
        assert_eq!(copy, original);
    }
}
