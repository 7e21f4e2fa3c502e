//! Synthetic input images for a model without data. When the input goes straight into a Conv
//! whose output goes only into a BatchNorm, that BatchNorm's running statistics say what the
//! Conv's outputs looked like on the training data; pixels are drawn iid per channel from the
//! Gaussian that reproduces them. Otherwise pixels are uniform in [0, 1), the range pare's
//! loaders scale images to.

use super::standard_normal;
use crate::PruneError;
use nalgebra::{DMatrix, DVector};
use ndarray::{Array4, ArrayD};
use pare_ir::{Graph, NodeId, Op, ValueId};
use pare_kernels::rng::SplitMix64;
use pare_train::TrainError;

/// The most values (images × pixels × channels) one call may draw: 1 GiB of f32.
pub const MAX_SYNTHETIC_ELEMENTS: usize = 1 << 28;

/// Where synthetic images come from, for the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum SyntheticSource {
    /// Pixels of channel c iid N(mean[c], std[c]²), fitted so that Conv `conv`'s outputs have the
    /// running mean and variance of BatchNorm `batchnorm`. The misfits are relative RMS errors
    /// of the fit (0 when the statistics are reproduced exactly).
    FirstBatchNorm {
        conv: String,
        batchnorm: String,
        mean: Vec<f32>,
        std: Vec<f32>,
        mean_misfit: f32,
        variance_misfit: f32,
    },
    /// Pixels iid uniform in [0, 1).
    Uniform,
}

/// `count` images shaped like the graph's first input (NCHW, its channels, height and width
/// known), drawn from SplitMix64 seeded by `seed`, and where they come from.
pub fn synthetic_inputs(
    graph: &Graph,
    count: usize,
    seed: u64,
) -> Result<(Array4<f32>, SyntheticSource), PruneError> {
    let input = *graph.inputs.first().ok_or_else(|| TrainError::NoInput {
        graph: graph
            .meta
            .graph_name
            .clone()
            .unwrap_or_else(|| "unnamed".into()),
    })?;
    let value = graph.value(input);
    let dims = value
        .shape
        .as_ref()
        .filter(|s| s.rank() == 4)
        .and_then(|s| {
            s.0[1..]
                .iter()
                .map(|d| d.known())
                .collect::<Option<Vec<usize>>>()
        })
        .ok_or_else(|| PruneError::SyntheticShape {
            input: value.name.clone(),
            shape: value
                .shape
                .as_ref()
                .map_or_else(|| "unknown".into(), |s| s.to_string()),
        })?;
    let (channels, height, width) = (dims[0], dims[1], dims[2]);
    let too_large = || PruneError::SyntheticTooLarge {
        count,
        per_image: channels.saturating_mul(height).saturating_mul(width),
        limit: MAX_SYNTHETIC_ELEMENTS,
    };
    let plane = height.checked_mul(width).ok_or_else(too_large)?;
    channels
        .checked_mul(plane)
        .and_then(|per_image| per_image.checked_mul(count))
        .filter(|&total| total <= MAX_SYNTHETIC_ELEMENTS)
        .ok_or_else(too_large)?;

    let source = fit_first_batchnorm(graph, input, channels).unwrap_or(SyntheticSource::Uniform);
    let mut rng = SplitMix64::new(seed);
    let mut images = Array4::<f32>::zeros((count, channels, height, width));
    for mut image in images.outer_iter_mut() {
        for (c, mut pixels) in image.outer_iter_mut().enumerate() {
            for p in pixels.iter_mut() {
                *p = match &source {
                    SyntheticSource::FirstBatchNorm { mean, std, .. } => {
                        (f64::from(mean[c]) + f64::from(std[c]) * standard_normal(&mut rng)) as f32
                    }
                    SyntheticSource::Uniform => rng.unit_f64() as f32,
                };
            }
        }
    }
    Ok((images, source))
}

/// The per-channel pixel mean a and variance s² under which Conv outputs with iid pixels match
/// the BatchNorm after it: mean_o = b_o + Σ_c a_c·ΣW[o,c] (least squares) and
/// var_o = Σ_c s_c²·ΣW[o,c]² (non-negative least squares). None when the input does not go
/// (only) into such a Conv, or the fit is not finite.
fn fit_first_batchnorm(graph: &Graph, input: ValueId, channels: usize) -> Option<SyntheticSource> {
    let readers = graph.consumers();
    let only_reader = |v: ValueId| match readers[v.0 as usize].as_slice() {
        [n] => Some(*n),
        _ => None,
    };
    let conv = only_reader(input)?;
    let node = graph.node(conv);
    let Op::Conv(c) = &node.op else { return None };
    let weight = graph.const_input(conv, 1)?.as_f32()?;
    let outputs = *weight.shape().first()?;
    if c.group != 1
        || node.inputs.first() != Some(&Some(input))
        || weight.ndim() < 3
        || weight.shape()[1] != channels
    {
        return None;
    }
    let bias = match node.inputs.get(2).copied().flatten() {
        Some(_) => Some(vector(graph, conv, 2, outputs)?),
        None => None,
    };
    let bn = only_reader(node.outputs[0])?;
    if !matches!(graph.node(bn).op, Op::BatchNorm { .. })
        || graph.node(bn).inputs.first() != Some(&Some(node.outputs[0]))
    {
        return None;
    }
    let (running_mean, running_var) = (
        vector(graph, bn, 3, outputs)?,
        vector(graph, bn, 4, outputs)?,
    );

    let (sums, squares) = weight_sums(weight, outputs, channels);
    let target_mean = DVector::from_fn(outputs, |o, _| {
        running_mean[o] - bias.as_ref().map_or(0.0, |b| b[o])
    });
    let target_var = DVector::from_vec(running_var);
    let mean = sums
        .clone()
        .svd(true, true)
        .solve(&target_mean, 1e-12)
        .ok()?;
    let var = nnls(&squares, &target_var);
    let misfit = |a: &DMatrix<f64>, x: &DVector<f64>, b: &DVector<f64>| {
        ((a * x - b).norm() / b.norm().max(f64::MIN_POSITIVE)) as f32
    };
    let pixel_mean: Vec<f32> = mean.iter().map(|&a| a as f32).collect();
    let pixel_std: Vec<f32> = var.iter().map(|&v| v.max(0.0).sqrt() as f32).collect();
    if !pixel_mean.iter().chain(&pixel_std).all(|v| v.is_finite()) {
        return None;
    }
    Some(SyntheticSource::FirstBatchNorm {
        conv: node.name.clone(),
        batchnorm: graph.node(bn).name.clone(),
        mean: pixel_mean,
        std: pixel_std,
        mean_misfit: misfit(&sums, &mean, &target_mean),
        variance_misfit: misfit(&squares, &var, &target_var),
    })
}

/// A float constant input of a node holding `len` values, as f64.
fn vector(graph: &Graph, node: NodeId, input: usize, len: usize) -> Option<Vec<f64>> {
    let t = graph.const_input(node, input)?.as_f32()?;
    (t.len() == len).then(|| t.iter().map(|&v| f64::from(v)).collect())
}

/// Per output o and input channel c: Σ over the kernel of W[o,c] and of W[o,c]².
fn weight_sums(
    weight: &ArrayD<f32>,
    outputs: usize,
    channels: usize,
) -> (DMatrix<f64>, DMatrix<f64>) {
    let mut sums = DMatrix::zeros(outputs, channels);
    let mut squares = DMatrix::zeros(outputs, channels);
    for (o, filter) in weight.outer_iter().enumerate() {
        for (c, kernel) in filter.outer_iter().enumerate() {
            for &w in kernel.iter() {
                sums[(o, c)] += f64::from(w);
                squares[(o, c)] += f64::from(w) * f64::from(w);
            }
        }
    }
    (sums, squares)
}

/// min ‖A·x − b‖ subject to x ≥ 0, by Lawson and Hanson's active-set method. Each outer step
/// frees one variable and each inner step fixes at least one, so both loops are bounded.
fn nnls(a: &DMatrix<f64>, b: &DVector<f64>) -> DVector<f64> {
    let n = a.ncols();
    let mut x = DVector::zeros(n);
    let mut free = vec![false; n];
    let tolerance = 1e-12 * (a.norm() * b.norm()).max(f64::MIN_POSITIVE);
    for _ in 0..3 * n + 3 {
        let gradient = a.transpose() * (b - a * &x);
        let next = (0..n)
            .filter(|&j| !free[j] && gradient[j] > tolerance)
            .max_by(|&i, &j| gradient[i].total_cmp(&gradient[j]));
        let Some(j) = next else { break };
        free[j] = true;
        for _ in 0..=n {
            let z = least_squares_on(a, b, &free);
            if (0..n).all(|i| !free[i] || z[i] > 0.0) {
                x = z;
                break;
            }
            // Step from x toward z until the first free variable reaches 0, and fix it there.
            let step = (0..n)
                .filter(|&i| free[i] && z[i] <= 0.0)
                .map(|i| {
                    if x[i] - z[i] > 0.0 {
                        x[i] / (x[i] - z[i])
                    } else {
                        0.0
                    }
                })
                .fold(1.0, f64::min);
            x += (z - &x) * step;
            for i in 0..n {
                if free[i] && x[i] <= 0.0 {
                    free[i] = false;
                    x[i] = 0.0;
                }
            }
        }
    }
    x
}

/// The least-squares solution using only the `free` columns of `a`, zero elsewhere.
fn least_squares_on(a: &DMatrix<f64>, b: &DVector<f64>, free: &[bool]) -> DVector<f64> {
    let columns: Vec<usize> = (0..free.len()).filter(|&i| free[i]).collect();
    let sub = a.select_columns(&columns);
    let mut out = DVector::zeros(free.len());
    if let Ok(solution) = sub.svd(true, true).solve(b, 1e-12) {
        for (k, &i) in columns.iter().enumerate() {
            out[i] = solution[k];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Axis;
    use pare_onnx::attr::tensor_f32;
    use pare_onnx::{DimSpec, GraphBuilder};
    use pare_train::{forward, Mode};

    const PIXEL_MEAN: [f64; 3] = [0.2, -0.5, 1.0];
    const PIXEL_STD: [f64; 3] = [0.5, 1.0, 0.25];

    /// Weights in [-1, 1), irregular so that the per-channel kernel sums are independent.
    fn weights(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| (rng.unit_f64() * 2.0 - 1.0) as f32)
            .collect()
    }

    /// x[N,3,12,12] → Conv(8, 3×3, bias) → BN → y, the BN's running statistics those of the
    /// Conv's outputs when pixels of channel c are iid N(PIXEL_MEAN[c], PIXEL_STD[c]²).
    fn conv_bn(input: [DimSpec; 4]) -> Graph {
        let (w, bias) = (weights(8 * 27, 1), weights(8, 2));
        let mut mean = vec![0.0f32; 8];
        let mut var = vec![0.0f32; 8];
        for o in 0..8 {
            let (mut m, mut v) = (f64::from(bias[o]), 0.0);
            for c in 0..3 {
                let kernel = &w[o * 27 + c * 9..o * 27 + (c + 1) * 9];
                let sum: f64 = kernel.iter().map(|&x| f64::from(x)).sum();
                let squares: f64 = kernel.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
                m += PIXEL_MEAN[c] * sum;
                v += PIXEL_STD[c] * PIXEL_STD[c] * squares;
            }
            (mean[o], var[o]) = (m as f32, v as f32);
        }
        let mut b = GraphBuilder::new("t", 17);
        b.input("x", input);
        b.initializer(tensor_f32("w", &[8, 3, 3, 3], w));
        b.initializer(tensor_f32("b", &[8], bias));
        b.initializer(tensor_f32("g", &[8], vec![1.0; 8]));
        b.initializer(tensor_f32("beta", &[8], vec![0.0; 8]));
        b.initializer(tensor_f32("m", &[8], mean));
        b.initializer(tensor_f32("v", &[8], var));
        b.node("Conv", &["x", "w", "b"], &["c"], vec![]);
        b.node(
            "BatchNormalization",
            &["c", "g", "beta", "m", "v"],
            &["y"],
            vec![],
        );
        b.output("y", ["N", "C", "H", "W"]);
        pare_ir::import(&b.build()).unwrap()
    }

    fn fixed() -> [DimSpec; 4] {
        ["N".into(), 3.into(), 12.into(), 12.into()]
    }

    #[test]
    fn the_fit_recovers_the_pixel_distribution_the_statistics_came_from() {
        let graph = conv_bn(fixed());
        let (images, source) = synthetic_inputs(&graph, 64, 7).unwrap();
        assert_eq!(images.shape(), [64, 3, 12, 12]);
        let SyntheticSource::FirstBatchNorm {
            mean,
            std,
            mean_misfit,
            variance_misfit,
            ..
        } = &source
        else {
            panic!("{source:?}")
        };
        for c in 0..3 {
            assert!(
                (f64::from(mean[c]) - PIXEL_MEAN[c]).abs() < 1e-4,
                "{mean:?}"
            );
            assert!((f64::from(std[c]) - PIXEL_STD[c]).abs() < 1e-4, "{std:?}");
        }
        assert!(*mean_misfit < 1e-5 && *variance_misfit < 1e-5, "{source:?}");
        // Through the Conv and BatchNorm (gamma 1, beta 0) the drawn images come out near
        // N(0, 1) in every channel.
        let tape = forward(&graph, images.into_dyn(), Mode::Eval, false, None).unwrap();
        let y = tape.value(graph.outputs[0]).unwrap();
        for (o, channel) in y.axis_iter(Axis(1)).enumerate() {
            let n = channel.len() as f64;
            let m = channel.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let v = channel
                .iter()
                .map(|&v| (f64::from(v) - m).powi(2))
                .sum::<f64>()
                / n;
            assert!(
                m.abs() < 0.1 && (v - 1.0).abs() < 0.15,
                "channel {o}: mean {m}, variance {v}"
            );
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_images() {
        let graph = conv_bn(fixed());
        let (a, _) = synthetic_inputs(&graph, 4, 1).unwrap();
        let (b, _) = synthetic_inputs(&graph, 4, 1).unwrap();
        let (c, _) = synthetic_inputs(&graph, 4, 2).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn without_a_batchnorm_at_the_input_pixels_are_uniform() {
        let mut b = GraphBuilder::new("t", 17);
        b.input("x", [1i64, 3, 8, 8]);
        b.initializer(tensor_f32("w", &[4, 3, 3, 3], weights(108, 1)));
        b.node("Conv", &["x", "w"], &["c"], vec![]);
        b.node("Relu", &["c"], &["y"], vec![]);
        b.output("y", [1i64, 4, 6, 6]);
        let graph = pare_ir::import(&b.build()).unwrap();
        let (images, source) = synthetic_inputs(&graph, 16, 3).unwrap();
        assert_eq!(source, SyntheticSource::Uniform);
        assert!(images.iter().all(|&p| (0.0..1.0).contains(&p)));
        let mean = images.mean().unwrap();
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn an_open_image_size_or_too_many_images_is_refused_by_name() {
        let open = conv_bn(["N".into(), 3.into(), "H".into(), "W".into()]);
        let err = synthetic_inputs(&open, 1, 0).unwrap_err().to_string();
        assert!(
            err.contains("'x'") && err.contains("--input-shape"),
            "{err}"
        );
        let graph = conv_bn(fixed());
        let err = synthetic_inputs(&graph, usize::MAX / 4, 0).unwrap_err();
        assert!(matches!(err, PruneError::SyntheticTooLarge { .. }), "{err}");
        let most = MAX_SYNTHETIC_ELEMENTS / (3 * 12 * 12);
        assert!(synthetic_inputs(&graph, most + 1, 0).is_err());
    }

    #[test]
    fn nnls_keeps_variances_non_negative() {
        // Unconstrained, the second variable would be −1; held at 0, the first fits alone.
        let a = DMatrix::from_row_slice(3, 2, &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let b = DVector::from_vec(vec![2.0, -1.0, 1.0]);
        let x = nnls(&a, &b);
        assert!((x[0] - 1.5).abs() < 1e-12 && x[1] == 0.0, "{x}");
    }
}
