//! Accumulates each group's Gram matrix K_g = Σ_t B_tᵀB_t over calibration passes, where column c
//! of B_t is everything a consumer of the group sees of channel c on batch t: the loss gradient of
//! the consumer weights that read it, or (the activation variant) the activation itself.

use super::GramSource;
use crate::criteria::{channel_ranges, is_weight};
use crate::groups::{ChannelGroups, Group, Slice, SliceKind};
use nalgebra::DMatrix;
use ndarray::{ArrayD, Axis};
use pare_ir::{Graph, ValueId};
use pare_train::{Gradients, Tape};
use std::collections::HashSet;
use std::ops::Range;

/// The slices of `group` whose tensor is a weight that reads its channels: the input axis of
/// every Conv, Gemm and MatMul after it (residual streams, Concat inputs at their offsets,
/// Flatten→Gemm blocks) and depthwise weights, which read one channel each.
pub(crate) fn consumer_weights<'s>(
    graph: &Graph,
    groups: &'s ChannelGroups,
    group: &Group,
) -> Vec<&'s Slice> {
    group
        .slices
        .iter()
        .map(|&i| &groups.slices[i])
        .filter(|s| s.kind != SliceKind::Producer && is_weight(graph, s))
        .collect()
}

/// The feature range of each channel of `group` along `slice`'s axis, one list per time the slice
/// lays the group out (a Concat of an activation with itself reads each channel twice: each
/// occurrence is more rows of B). None for a layout whose ranges do not line up into columns.
pub(crate) fn channel_columns(
    groups: &ChannelGroups,
    slice: &Slice,
    group: &Group,
) -> Option<Vec<Vec<Range<usize>>>> {
    let ranges = channel_ranges(groups, slice, group.id);
    let even = ranges.windows(2).all(|w| w[0].len() == w[1].len());
    let whole = !ranges.is_empty() && ranges.len().is_multiple_of(group.channels);
    (even && whole).then(|| ranges.chunks(group.channels).map(<[_]>::to_vec).collect())
}

/// B for one slice: column c holds the entries of `tensor` along `axis` at channel c's range, in
/// logical order (every range has the same length, so the columns line up).
pub(crate) fn columns(tensor: &ArrayD<f32>, axis: usize, ranges: &[Range<usize>]) -> DMatrix<f64> {
    let parts: Vec<Vec<f64>> = ranges
        .iter()
        .map(|r| {
            tensor
                .slice_axis(Axis(axis), (r.start..r.end).into())
                .iter()
                .map(|&x| x as f64)
                .collect()
        })
        .collect();
    let rows = parts.first().map_or(0, Vec::len);
    DMatrix::from_fn(rows, parts.len(), |r, c| parts[c][r])
}

/// One group's Gram matrix in progress.
pub(crate) struct Gram {
    pub k: DMatrix<f64>,
    /// Whether any consumer contributed: a group nothing reads has no evidence of redundancy.
    pub evidence: bool,
}

impl Gram {
    pub fn new(channels: usize) -> Self {
        Gram {
            k: DMatrix::zeros(channels, channels),
            evidence: false,
        }
    }

    /// Adds one pass's B_tᵀB_t of `group`.
    pub fn add(
        &mut self,
        graph: &Graph,
        groups: &ChannelGroups,
        group: &Group,
        source: GramSource,
        tape: &Tape,
        grads: &Gradients,
    ) {
        let mut seen: HashSet<ValueId> = HashSet::new();
        for slice in consumer_weights(graph, groups, group) {
            let Some(occurrences) = channel_columns(groups, slice, group) else {
                continue;
            };
            let (tensor, axis) = match source {
                GramSource::Gradients => match grads.of(slice.tensor) {
                    Some(g) => (g, slice.axis),
                    None => continue,
                },
                GramSource::Activations => {
                    // The activation the consumer reads, channels on axis 1 laid out as the
                    // weight's axis is; each activation counted once however many layers read it.
                    let Some(Some(input)) = graph.node(slice.node).inputs.first().copied() else {
                        continue;
                    };
                    let Some(a) = tape.value(input) else {
                        continue;
                    };
                    let len: usize = slice.segments.iter().map(|s| s.len * s.block).sum();
                    if a.ndim() < 2 || a.shape()[1] != len || !seen.insert(input) {
                        continue;
                    }
                    (a, 1)
                }
            };
            for ranges in &occurrences {
                let b = columns(tensor, axis, ranges);
                if source == GramSource::Gradients && slice.kind == SliceKind::PerChannel {
                    // A depthwise weight reads one channel each: its entries are rows of their
                    // own, so they add to K's diagonal only.
                    for c in 0..b.ncols() {
                        self.k[(c, c)] += b.column(c).norm_squared();
                    }
                } else {
                    self.k += b.tr_mul(&b);
                }
            }
            self.evidence = true;
        }
    }
}

/// Per channel of `group`, whether every consumer weight that reads it is exactly zero: such a
/// channel contributes nothing downstream, whatever its activation (which K cannot see).
pub(crate) fn silent_channels(graph: &Graph, groups: &ChannelGroups, group: &Group) -> Vec<bool> {
    let consumers = consumer_weights(graph, groups, group);
    let mut silent = vec![!consumers.is_empty(); group.channels];
    for slice in consumers {
        let (Some(pare_ir::Tensor::F32(w)), Some(occurrences)) = (
            graph.value(slice.tensor).initializer(),
            channel_columns(groups, slice, group),
        ) else {
            silent.iter_mut().for_each(|s| *s = false);
            continue;
        };
        for ranges in &occurrences {
            for (c, r) in ranges.iter().enumerate() {
                let part = w.slice_axis(Axis(slice.axis), (r.start..r.end).into());
                if part.iter().any(|&x| x != 0.0) {
                    silent[c] = false;
                }
            }
        }
    }
    silent
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze;
    use crate::criteria::calibration_passes;
    use pare_data::Dataset;
    use pare_kernels::rng::SplitMix64;
    use pare_onnx::{attr, DimSpec, GraphBuilder};
    use pare_train::Loss;

    /// x[N,1,2,2] → Conv a (2, 1×1) → Relu ┐
    /// x          → Conv b (3, 1×1) → Relu ┴ Concat → Flatten [N,20] → Gemm (3) → y:
    /// each group is read by the Gemm through blocks of 4 features, b's at offset 8.
    fn graph() -> Graph {
        let mut rng = SplitMix64::new(5);
        let mut random =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.unit_f64() as f32 * 2.0 - 0.5).collect() };
        let mut b = GraphBuilder::new("concat", 17);
        b.input("x", [DimSpec::from("N"), 1.into(), 2.into(), 2.into()]);
        b.initializer(attr::tensor_f32("a.w", &[2, 1, 1, 1], random(2)));
        b.initializer(attr::tensor_f32("b.w", &[3, 1, 1, 1], random(3)));
        b.initializer(attr::tensor_f32("fc.w", &[3, 20], random(60)));
        b.node("Conv", &["x", "a.w"], &["a"], vec![]);
        b.node("Relu", &["a"], &["ra"], vec![]);
        b.node("Conv", &["x", "b.w"], &["b"], vec![]);
        b.node("Relu", &["b"], &["rb"], vec![]);
        b.node("Concat", &["ra", "rb"], &["c"], vec![attr::int("axis", 1)]);
        b.node("Flatten", &["c"], &["f"], vec![]);
        b.node("Gemm", &["f", "fc.w"], &["y"], vec![attr::int("transB", 1)]);
        b.output("y", [DimSpec::from("N"), 3.into()]);
        pare_ir::import(&b.build()).unwrap()
    }

    /// Σ over rows r of m[r, offset + 4i + t] · m[r, offset + 4j + t], t < 4: the naive K.
    fn naive(m: &ArrayD<f32>, offset: usize, channels: usize) -> DMatrix<f64> {
        let m = m.view().into_dimensionality::<ndarray::Ix2>().unwrap();
        DMatrix::from_fn(channels, channels, |i, j| {
            let mut sum = 0.0;
            for row in m.outer_iter() {
                for t in 0..4 {
                    sum += row[offset + 4 * i + t] as f64 * row[offset + 4 * j + t] as f64;
                }
            }
            sum
        })
    }

    #[test]
    fn concat_offsets_and_flatten_blocks_cut_the_columns_a_naive_loop_does() {
        let g = graph();
        let groups = analyze(&g);
        let mut rng = SplitMix64::new(9);
        let data = Dataset::new(
            ndarray::Array4::from_shape_fn((6, 1, 2, 2), |_| rng.unit_f64() as f32),
            vec![0, 1, 2, 0, 1, 2],
        );
        let mut stream = pare_train::BatchStream::new(&data, 6, 0);
        let fc = g.find_value("fc.w").unwrap();
        let flat = g.find_value("f").unwrap();
        let prunable: Vec<&Group> = groups.groups.iter().filter(|g| g.prunable()).collect();
        assert_eq!(
            prunable.iter().map(|g| g.channels).collect::<Vec<_>>(),
            vec![2, 3]
        );
        calibration_passes(
            &g,
            &mut stream,
            1,
            &Loss::CrossEntropy.into(),
            false,
            |tape, grads| {
                for (group, offset) in prunable.iter().zip([0, 8]) {
                    for (source, m) in [
                        (GramSource::Gradients, grads.of(fc).unwrap()),
                        (GramSource::Activations, tape.value(flat).unwrap()),
                    ] {
                        let mut gram = Gram::new(group.channels);
                        gram.add(&g, &groups, group, source, tape, grads);
                        assert!(gram.evidence);
                        let expected = naive(m, offset, group.channels);
                        let error = (&gram.k - &expected).abs().max();
                        assert!(error < 1e-9 * expected.abs().max().max(1.0), "{source:?}");
                    }
                }
            },
        )
        .unwrap();
    }

    #[test]
    fn a_depthwise_weight_adds_to_the_diagonal_only() {
        // x[N,1,3,3] → Conv p (3, 1×1) → depthwise Conv d (3, 3×3, pad 1) → Conv q (2, 1×1)
        // → GlobalAveragePool → Flatten → y: p's group is read by d (per channel) and by q.
        let mut rng = SplitMix64::new(11);
        let mut random =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.unit_f64() as f32 - 0.3).collect() };
        let mut b = GraphBuilder::new("depthwise", 17);
        b.input("x", [DimSpec::from("N"), 1.into(), 3.into(), 3.into()]);
        b.initializer(attr::tensor_f32("p.w", &[3, 1, 1, 1], random(3)));
        b.initializer(attr::tensor_f32("d.w", &[3, 1, 3, 3], random(27)));
        b.initializer(attr::tensor_f32("q.w", &[2, 3, 1, 1], random(6)));
        b.node("Conv", &["x", "p.w"], &["p"], vec![]);
        b.node(
            "Conv",
            &["p", "d.w"],
            &["d"],
            vec![attr::int("group", 3), attr::ints("pads", &[1, 1, 1, 1])],
        );
        b.node("Conv", &["d", "q.w"], &["q"], vec![]);
        b.node("GlobalAveragePool", &["q"], &["gap"], vec![]);
        b.node("Flatten", &["gap"], &["y"], vec![]);
        b.output("y", [DimSpec::from("N"), 2.into()]);
        let g = pare_ir::import(&b.build()).unwrap();
        let groups = analyze(&g);
        let group = groups.groups.iter().find(|g| g.prunable()).unwrap();
        assert_eq!(group.channels, 3);
        let data = Dataset::new(
            ndarray::Array4::from_shape_fn((4, 1, 3, 3), |_| rng.unit_f64() as f32),
            vec![0, 1, 0, 1],
        );
        let mut stream = pare_train::BatchStream::new(&data, 4, 0);
        let (dw, pw) = (g.find_value("d.w").unwrap(), g.find_value("q.w").unwrap());
        calibration_passes(
            &g,
            &mut stream,
            1,
            &Loss::CrossEntropy.into(),
            false,
            |tape, grads| {
                let mut gram = Gram::new(3);
                gram.add(&g, &groups, group, GramSource::Gradients, tape, grads);
                let (d, q) = (grads.of(dw).unwrap(), grads.of(pw).unwrap());
                let expected = DMatrix::from_fn(3, 3, |i, j| {
                    let pointwise: f64 = (0..2)
                        .map(|o| q[[o, i, 0, 0]] as f64 * q[[o, j, 0, 0]] as f64)
                        .sum();
                    let own: f64 = if i == j {
                        d.index_axis(Axis(0), i)
                            .iter()
                            .map(|&v| v as f64 * v as f64)
                            .sum()
                    } else {
                        0.0
                    };
                    pointwise + own
                });
                assert!(
                    (&gram.k - &expected).abs().max() < 1e-9,
                    "{} vs {expected}",
                    gram.k
                );
            },
        )
        .unwrap();
    }

    #[test]
    fn a_group_concatenated_with_itself_adds_both_readings() {
        // x[N,1,2,2] → Conv a (2) → Relu → Concat(r, r) → Conv b (3, reads 4) → GAP → Flatten.
        let mut b = GraphBuilder::new("twice", 17);
        b.input("x", [DimSpec::from("N"), 1.into(), 2.into(), 2.into()]);
        b.initializer(attr::tensor_f32("a.w", &[2, 1, 1, 1], vec![1.0, -0.5]));
        let reader = vec![
            0.5, -1.0, 0.25, 2.0, 1.0, 0.5, -0.75, 0.1, -0.2, 0.3, 1.5, -1.0,
        ];
        b.initializer(attr::tensor_f32("b.w", &[3, 4, 1, 1], reader));
        b.node("Conv", &["x", "a.w"], &["a"], vec![]);
        b.node("Relu", &["a"], &["r"], vec![]);
        b.node("Concat", &["r", "r"], &["c"], vec![attr::int("axis", 1)]);
        b.node("Conv", &["c", "b.w"], &["o"], vec![]);
        b.node("GlobalAveragePool", &["o"], &["gap"], vec![]);
        b.node("Flatten", &["gap"], &["y"], vec![]);
        b.output("y", [DimSpec::from("N"), 3.into()]);
        let g = pare_ir::import(&b.build()).unwrap();
        let groups = analyze(&g);
        let group = groups
            .groups
            .iter()
            .find(|g| g.prunable())
            .expect("a's group, read twice by b");
        let data = Dataset::new(
            ndarray::Array4::from_shape_fn((2, 1, 2, 2), |(n, _, i, j)| {
                (n + i + 2 * j) as f32 / 4.0 - 0.2
            }),
            vec![0, 2],
        );
        let mut stream = pare_train::BatchStream::new(&data, 2, 0);
        let w = g.find_value("b.w").unwrap();
        calibration_passes(
            &g,
            &mut stream,
            1,
            &Loss::CrossEntropy.into(),
            false,
            |tape, grads| {
                let mut gram = Gram::new(2);
                gram.add(&g, &groups, group, GramSource::Gradients, tape, grads);
                let d = grads.of(w).unwrap();
                let expected = DMatrix::from_fn(2, 2, |i, j| {
                    let at = |o: usize, c: usize| d[[o, c, 0, 0]] as f64;
                    (0..3)
                        .map(|o| at(o, i) * at(o, j) + at(o, 2 + i) * at(o, 2 + j))
                        .sum::<f64>()
                });
                assert!(
                    (&gram.k - &expected).abs().max() < 1e-9,
                    "{} vs {expected}",
                    gram.k
                );
                let mut activations = Gram::new(2);
                activations.add(&g, &groups, group, GramSource::Activations, tape, grads);
                assert!(activations.evidence);
            },
        )
        .unwrap();
    }
}
