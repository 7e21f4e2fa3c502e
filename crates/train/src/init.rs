//! Fresh initialisation of a graph's parameters, for training from scratch (benchmarks, and
//! checking that an optimiser can learn rather than only fine-tune).
//!
//! Weights of Conv, Gemm and MatMul layers get Kaiming (He) uniform initialisation in fan-in mode
//! with the ReLU gain √2: W ~ U(−b, b) with b = √2·√(3/fan_in) = √(6/fan_in), so Var(W) =
//! 2/fan_in. Their biases become zero. This is He et al.'s rule for ReLU nets, not PyTorch's
//! layer default (kaiming_uniform with a = √5, i.e. b = 1/√fan_in, and biases drawn from the
//! same range): the larger He range keeps activations from shrinking layer by layer in the deep
//! ReLU stacks pare trains, and zero biases make the start independent of the layer width.
//! BatchNorm starts as the identity: scale 1, bias 0, running mean 0, running variance 1.
//!
//! The draws come from pare-kernels' SplitMix64, in node order, so one seed gives the same weights
//! on every platform.

use pare_ir::{Graph, Op, Tensor, ValueId, ValueSource};
use pare_kernels::rng::SplitMix64;
use std::collections::HashSet;

/// Uniform in [−bound, bound).
fn symmetric(rng: &mut SplitMix64, bound: f64) -> f32 {
    ((rng.unit_f64() * 2.0 - 1.0) * bound) as f32
}

/// What a parameter becomes.
enum Fill {
    /// Kaiming uniform for a weight with this fan-in.
    Kaiming {
        fan_in: usize,
    },
    Constant(f32),
}

/// Re-initialises every Conv/Gemm/MatMul weight (Kaiming uniform, gain √2, fan-in mode) and bias
/// (zero) and every BatchNorm (identity), deterministically from `seed`. Other initializers
/// (reshape targets, constants of element-wise ops) keep their values. A tensor shared by several
/// layers is drawn once, at its first use.
pub fn kaiming_init(graph: &mut Graph, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut done = HashSet::new();
    for id in graph.node_ids().collect::<Vec<_>>() {
        let node = graph.node(id);
        let input = |i: usize| node.inputs.get(i).copied().flatten();
        let shape = |i: usize| -> Option<Vec<usize>> {
            match graph.value(input(i)?).initializer()? {
                Tensor::F32(a) => Some(a.shape().to_vec()),
                _ => None,
            }
        };
        // The fan-in is the length of one output's input vector, as the RLS optimiser sees it.
        let fills: Vec<(Option<ValueId>, Fill)> = match &node.op {
            Op::Conv(_) => match shape(1) {
                Some(w) if w.len() >= 3 => vec![
                    (
                        input(1),
                        Fill::Kaiming {
                            fan_in: w[1..].iter().product(),
                        },
                    ),
                    (input(2), Fill::Constant(0.0)),
                ],
                _ => vec![],
            },
            Op::Gemm(g) => match shape(1) {
                Some(w) if w.len() == 2 => {
                    let fan_in = if g.trans_b { w[1] } else { w[0] };
                    vec![
                        (input(1), Fill::Kaiming { fan_in }),
                        (input(2), Fill::Constant(0.0)),
                    ]
                }
                _ => vec![],
            },
            Op::MatMul => match shape(1) {
                // B is [.., K, N]: each output column reads K inputs.
                Some(w) if w.len() >= 2 => vec![(
                    input(1),
                    Fill::Kaiming {
                        fan_in: w[w.len() - 2],
                    },
                )],
                _ => vec![],
            },
            Op::BatchNorm { .. } => vec![
                (input(1), Fill::Constant(1.0)),
                (input(2), Fill::Constant(0.0)),
                (input(3), Fill::Constant(0.0)),
                (input(4), Fill::Constant(1.0)),
            ],
            _ => vec![],
        };
        for (value, fill) in fills {
            let Some(v) = value else { continue };
            if !done.insert(v) {
                continue;
            }
            let ValueSource::Initializer(Tensor::F32(a)) = &mut graph.value_mut(v).source else {
                continue;
            };
            match fill {
                Fill::Kaiming { fan_in } => {
                    let bound = (6.0 / fan_in.max(1) as f64).sqrt();
                    a.iter_mut().for_each(|x| *x = symmetric(&mut rng, bound));
                }
                Fill::Constant(c) => a.fill(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn model(name: &str) -> Graph {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models")
            .join(name);
        pare_ir::import(&pare_onnx::read_model(&path).unwrap()).unwrap()
    }

    fn floats(graph: &Graph, v: ValueId) -> Vec<f32> {
        match graph.value(v).initializer() {
            Some(Tensor::F32(a)) => a.iter().copied().collect(),
            other => panic!("{other:?}"),
        }
    }

    /// (weight, fan-in, bias) of every Conv and Gemm in the graph.
    fn layers(graph: &Graph) -> Vec<(ValueId, usize, Option<ValueId>)> {
        graph
            .nodes
            .iter()
            .filter_map(|n| {
                let w = n.inputs.get(1).copied().flatten()?;
                let Some(Tensor::F32(a)) = graph.value(w).initializer() else {
                    return None;
                };
                let fan_in = match &n.op {
                    Op::Conv(_) => a.shape()[1..].iter().product(),
                    Op::Gemm(g) if g.trans_b => a.shape()[1],
                    Op::Gemm(_) => a.shape()[0],
                    _ => return None,
                };
                Some((w, fan_in, n.inputs.get(2).copied().flatten()))
            })
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_weights_and_another_seed_others() {
        let (mut a, mut b, mut c) = (
            model("lenet5_opset17.onnx"),
            model("lenet5_opset17.onnx"),
            model("lenet5_opset17.onnx"),
        );
        kaiming_init(&mut a, 0);
        kaiming_init(&mut b, 0);
        kaiming_init(&mut c, 1);
        assert_eq!(a, b);
        let (w, _, _) = layers(&a)[0];
        assert_ne!(floats(&a, w), floats(&c, w));
        assert_ne!(
            a,
            model("lenet5_opset17.onnx"),
            "the trained weights are replaced"
        );
    }

    #[test]
    fn weights_have_variance_two_over_fan_in_and_biases_are_zero() {
        let mut g = model("lenet5_opset17.onnx");
        kaiming_init(&mut g, 7);
        let found = layers(&g);
        assert_eq!(found.len(), 5, "LeNet-5 has two convs and three Gemms");
        for (w, fan_in, bias) in found {
            let x = floats(&g, w);
            let bound = (6.0 / fan_in as f64).sqrt();
            assert!(x.iter().all(|&v| (v as f64).abs() <= bound));
            // The sample variance of n uniform draws has a relative spread of about √(0.8/n):
            // only layers with enough weights are held to 10%.
            if x.len() >= 1000 {
                let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
                let var =
                    x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / x.len() as f64;
                let want = 2.0 / fan_in as f64;
                assert!(
                    (var / want - 1.0).abs() < 0.1,
                    "variance {var} against 2/fan_in = {want} (fan-in {fan_in})"
                );
            }
            let bias = bias.expect("LeNet-5 layers have biases");
            assert!(floats(&g, bias).iter().all(|&b| b == 0.0));
        }
    }

    #[test]
    fn batchnorm_starts_as_the_identity() {
        let mut g = model("vggbn_keepbn_opset17.onnx");
        kaiming_init(&mut g, 0);
        let bns: Vec<_> = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::BatchNorm { .. }))
            .collect();
        assert_eq!(bns.len(), 4);
        for bn in bns {
            for (slot, want) in [(1, 1.0), (2, 0.0), (3, 0.0), (4, 1.0)] {
                let v = bn.inputs[slot].unwrap();
                assert!(floats(&g, v).iter().all(|&x| x == want), "slot {slot}");
            }
        }
    }
}
