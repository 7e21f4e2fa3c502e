//! What one channel of an activation looks like on the training data, as far as the graph alone
//! can tell: traced back through per-channel ops to the BatchNorm that normalised it, whose
//! output for channel c is taken to be N(beta_c, gamma_c² · var_c / (var_c + eps)).
//!
//! The traced value is `F(max of k iid N(mu, sigma²))`, F a composition of elementwise
//! functions (k = 1 without a MaxPool), or, after an average or a sum of non-Gaussian terms, only
//! its expected value. See docs/methods/datafree.md for what is exact and what is assumed.

use pare_ir::{Graph, NodeId, Op, ValueId, ValueSource};
use std::sync::OnceLock;

/// An elementwise function applied to every element of a channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Act {
    Relu,
    LeakyRelu(f64),
    Sigmoid,
    HardSigmoid {
        alpha: f64,
        beta: f64,
    },
    HardSwish,
    Clip {
        min: f64,
        max: f64,
    },
    /// x·scale + shift: a constant added, subtracted, multiplied or divided by.
    Affine {
        scale: f64,
        shift: f64,
    },
}

impl Act {
    pub(super) fn apply(self, x: f64) -> f64 {
        match self {
            Act::Relu => x.max(0.0),
            Act::LeakyRelu(alpha) => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Act::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            // ONNX Clip: min(max(x, min), max), so max wins when min > max.
            Act::Clip { min, max } => x.max(min).min(max),
            Act::Affine { scale, shift } => x * scale + shift,
        }
    }

    /// Non-decreasing, so that the max over a pooling window commutes with it.
    fn monotone(self) -> bool {
        match self {
            Act::LeakyRelu(alpha) => alpha >= 0.0,
            Act::HardSigmoid { alpha, .. } => alpha >= 0.0,
            Act::HardSwish => false,
            Act::Affine { scale, .. } => scale >= 0.0,
            Act::Relu | Act::Sigmoid | Act::Clip { .. } => true,
        }
    }
}

/// The distribution of one channel's elements, as far as it is known.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Channel {
    /// `acts` applied in order to the max of `k` iid N(mu, sigma²).
    Gaussian {
        mu: f64,
        sigma: f64,
        k: f64,
        acts: Vec<Act>,
    },
    /// Only the expected value is known.
    Mean(f64),
}

impl Channel {
    fn normal(mu: f64, sigma: f64) -> Channel {
        Channel::Gaussian {
            mu,
            sigma,
            k: 1.0,
            acts: Vec::new(),
        }
    }

    /// A plain N(mu, sigma²), its parameters.
    fn plain(&self) -> Option<(f64, f64)> {
        match self {
            Channel::Gaussian { mu, sigma, k, acts } if *k == 1.0 && acts.is_empty() => {
                Some((*mu, *sigma))
            }
            _ => None,
        }
    }

    /// The expected value of an element.
    pub(super) fn expected(&self) -> f64 {
        match self {
            Channel::Mean(m) => *m,
            Channel::Gaussian { mu, sigma, k, acts } => {
                let f = |x: f64| acts.iter().fold(x, |x, a| a.apply(x));
                if *sigma == 0.0 {
                    // A constant: the max of constants is the constant.
                    f(*mu)
                } else {
                    expected_max(*mu, *sigma, *k, f)
                }
            }
        }
    }

    /// The channel after `act`; None when only the mean is known and `act` is not affine.
    fn then(self, act: Act) -> Option<Channel> {
        match (self, act) {
            (Channel::Mean(m), Act::Affine { scale, shift }) => {
                Some(Channel::Mean(m * scale + shift))
            }
            (Channel::Mean(_), _) => None,
            (c, Act::Affine { scale, shift }) if c.plain().is_some() => {
                let (mu, sigma) = c.plain().expect("checked");
                Some(Channel::normal(mu * scale + shift, sigma * scale.abs()))
            }
            (
                Channel::Gaussian {
                    mu,
                    sigma,
                    k,
                    mut acts,
                },
                act,
            ) => {
                acts.push(act);
                Some(Channel::Gaussian { mu, sigma, k, acts })
            }
        }
    }

    /// The max over a window of `window` elements, taken as iid; None unless every function so
    /// far is non-decreasing (then max and functions commute).
    fn max_over(self, window: f64) -> Option<Channel> {
        match self {
            Channel::Gaussian { mu, sigma, k, acts } if acts.iter().all(|a| a.monotone()) => {
                Some(Channel::Gaussian {
                    mu,
                    sigma,
                    k: k * window,
                    acts,
                })
            }
            _ => None,
        }
    }

    /// `self + sign·other` elementwise: Gaussians add when both are plain (taken as
    /// independent); otherwise only the mean of the sum is known, and it is exact.
    fn plus(self, other: Channel, sign: f64) -> Channel {
        match (self.plain(), other.plain()) {
            (Some((m1, s1)), Some((m2, s2))) => Channel::normal(m1 + sign * m2, s1.hypot(s2)),
            _ => Channel::Mean(self.expected() + sign * other.expected()),
        }
    }
}

/// Half-width of the quadrature range in standard deviations: Φ(−10) ≈ 8e-24.
const Z_MAX: f64 = 10.0;
/// Quadrature steps over [−Z_MAX, Z_MAX].
const STEPS: usize = 8000;

/// Φ at the grid points −Z_MAX + i·h, i = 0..=STEPS, each step integrated by Simpson's rule
/// (error near 1e-13), starting from Φ(−Z_MAX) ≈ 0.
fn cdf_grid() -> &'static [f64] {
    static GRID: OnceLock<Vec<f64>> = OnceLock::new();
    GRID.get_or_init(|| {
        let h = 2.0 * Z_MAX / STEPS as f64;
        let pdf = |z: f64| (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let mut cdf = Vec::with_capacity(STEPS + 1);
        let mut sum = 0.0;
        cdf.push(sum);
        for i in 0..STEPS {
            let z = -Z_MAX + i as f64 * h;
            sum += h / 6.0 * (pdf(z) + 4.0 * pdf(z + h / 2.0) + pdf(z + h));
            cdf.push(sum);
        }
        cdf
    })
}

/// E[f(max of k iid N(mu, sigma²))] = ∫ f(mu + sigma·z) d(Φ(z)^k): a midpoint sum over the
/// grid with each step weighted by its exact share of Φ^k, so the weights sum to 1 for any k and
/// a kink of f (Relu, Clip) costs only O(h²).
pub(super) fn expected_max(mu: f64, sigma: f64, k: f64, f: impl Fn(f64) -> f64) -> f64 {
    let cdf = cdf_grid();
    let h = 2.0 * Z_MAX / STEPS as f64;
    let power = |p: f64| if k == 1.0 { p } else { p.powf(k) };
    let mut below = power(cdf[0]);
    let mut sum = f(mu - sigma * Z_MAX) * below;
    for (i, &p) in cdf.iter().enumerate().skip(1) {
        let next = power(p);
        let z = -Z_MAX + (i as f64 - 0.5) * h;
        sum += f(mu + sigma * z) * (next - below);
        below = next;
    }
    sum + f(mu + sigma * Z_MAX) * (1.0 - below)
}

/// Ops a trace may pass: longer traces (or ones that branch more) stop as unknown, so a hostile
/// graph cannot make the trace deep or exponential.
const MAX_STEPS: usize = 512;

/// The expected value of element `index` along axis 1 of `value` (a channel, or a feature after
/// Flatten), or why it is unknown.
pub(super) fn expected_value(graph: &Graph, value: ValueId, index: usize) -> Result<f64, String> {
    let m = Trace { graph, steps: 0 }.walk(value, index)?.expected();
    if m.is_finite() {
        Ok(m)
    } else {
        Err("the expected value is not finite".into())
    }
}

/// One trace: the graph and the ops passed so far.
struct Trace<'a> {
    graph: &'a Graph,
    steps: usize,
}

impl Trace<'_> {
    fn walk(&mut self, value: ValueId, index: usize) -> Result<Channel, String> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(format!("the trace passes more than {MAX_STEPS} ops"));
        }
        let graph = self.graph;
        let id = match graph.value(value).source {
            ValueSource::Node(id) => id,
            ValueSource::Input => return Err("the trace reaches a graph input".into()),
            ValueSource::Initializer(_) => return Err("the trace reaches a constant".into()),
        };
        let node = graph.node(id);
        // Reasons name the op type, not the node: they key a summary that a model with thousands
        // of layers would otherwise flood.
        let label = node.op.op_type().to_string();
        let x = node.inputs.first().copied().flatten();
        let through = |me: &mut Self, act: Act| -> Result<Channel, String> {
            me.input(x, index, &label)?
                .then(act)
                .ok_or_else(|| format!("{label} follows an average: only the mean is known"))
        };
        match &node.op {
            Op::BatchNorm { epsilon, .. } => batchnorm(graph, id, index, *epsilon, &label),
            Op::Relu => through(self, Act::Relu),
            Op::LeakyRelu { alpha } => through(self, Act::LeakyRelu(f64::from(*alpha))),
            Op::Sigmoid => through(self, Act::Sigmoid),
            Op::HardSigmoid { alpha, beta } => through(
                self,
                Act::HardSigmoid {
                    alpha: f64::from(*alpha),
                    beta: f64::from(*beta),
                },
            ),
            Op::HardSwish => through(self, Act::HardSwish),
            Op::Clip => {
                let bound = |i: usize, default: f64| match node.inputs.get(i).copied().flatten() {
                    None => Ok(default),
                    Some(_) => graph
                        .const_input(id, i)
                        .and_then(|t| t.as_f32())
                        .filter(|t| t.len() == 1)
                        .map(|t| f64::from(t.iter().copied().next().expect("one element")))
                        .ok_or_else(|| format!("{label} has a bound that is not a constant")),
                };
                let (min, max) = (bound(1, f64::NEG_INFINITY)?, bound(2, f64::INFINITY)?);
                through(self, Act::Clip { min, max })
            }
            Op::MaxPool(pool) => {
                let window = pool.window.kernel_shape.iter().map(|&k| k as f64).product();
                self.input(x, index, &label)?
                    .max_over(window)
                    .ok_or_else(|| format!("{label} follows a function that is not monotone"))
            }
            Op::AveragePool { .. } | Op::GlobalAveragePool => {
                Ok(Channel::Mean(self.input(x, index, &label)?.expected()))
            }
            Op::Dropout { .. } | Op::Identity => self.input(x, index, &label),
            Op::Flatten { .. } | Op::Reshape { .. } => {
                let index = unflattened(graph, id, index)
                    .ok_or_else(|| format!("{label} does not keep the channel axis"))?;
                self.input(x, index, &label)
            }
            Op::Concat { axis } => {
                let rank = graph
                    .value(node.outputs[0])
                    .shape
                    .as_ref()
                    .map_or(0, |s| s.rank());
                if *axis != 1 && *axis != 1 - rank as i64 {
                    return Err(format!(
                        "{label} joins along another axis than the channels"
                    ));
                }
                self.concat(id, index, &label)
            }
            Op::Add | Op::Sub | Op::Mul | Op::Div => self.elementwise(id, index, &label),
            Op::Conv(_) | Op::Gemm(_) | Op::MatMul => Err(format!(
                "the trace meets a {label} before any BatchNorm (folded into it, or none)"
            )),
            Op::Softmax { .. } | Op::Opaque(_) => Err(format!(
                "the trace meets {label}, which mixes channels or is not modelled"
            )),
        }
    }

    fn input(&mut self, x: Option<ValueId>, index: usize, label: &str) -> Result<Channel, String> {
        self.walk(x.ok_or_else(|| format!("{label} has no input"))?, index)
    }

    /// The input of a Concat (along axis 1, as channel analysis checked) that holds `index`.
    fn concat(&mut self, id: NodeId, index: usize, label: &str) -> Result<Channel, String> {
        let mut offset = 0;
        for &v in self.graph.node(id).inputs.iter().flatten() {
            let width = self
                .graph
                .value(v)
                .shape
                .as_ref()
                .and_then(|s| s.dim(1))
                .and_then(|d| d.known())
                .ok_or_else(|| format!("{label} has an input of unknown width"))?;
            if index < offset + width {
                return self.walk(v, index - offset);
            }
            offset += width;
        }
        Err(format!("{label} is narrower than the channel traced"))
    }

    /// Add, Sub, Mul or Div: of two activations (sums only), or of an activation and a constant
    /// that is one value per channel.
    fn elementwise(&mut self, id: NodeId, index: usize, label: &str) -> Result<Channel, String> {
        let graph = self.graph;
        let node = graph.node(id);
        let operand = |i: usize| node.inputs.get(i).copied().flatten();
        let (Some(a), Some(b)) = (operand(0), operand(1)) else {
            return Err(format!("{label} lacks an operand"));
        };
        let rank = graph
            .value(node.outputs[0])
            .shape
            .as_ref()
            .map(|s| s.rank());
        let constant = |v: ValueId| match &graph.value(v).source {
            ValueSource::Initializer(t) => Some(
                t.as_f32()
                    .and_then(|t| per_channel(t, rank?, index))
                    .ok_or_else(|| {
                        format!("{label} has a constant that is not one value per channel")
                    }),
            ),
            _ => None,
        };
        let (x, c, constant_first) = match (constant(a), constant(b)) {
            (None, None) => {
                let sign = match node.op {
                    Op::Add => 1.0,
                    Op::Sub => -1.0,
                    _ => return Err(format!("{label} multiplies or divides two activations")),
                };
                let left = self.walk(a, index)?;
                return Ok(left.plus(self.walk(b, index)?, sign));
            }
            (None, Some(c)) => (a, c?, false),
            (Some(c), None) => (b, c?, true),
            (Some(_), Some(_)) => return Err(format!("{label} has two constant operands")),
        };
        let act = match (&node.op, constant_first) {
            (Op::Add, _) => Act::Affine {
                scale: 1.0,
                shift: c,
            },
            (Op::Sub, false) => Act::Affine {
                scale: 1.0,
                shift: -c,
            },
            (Op::Sub, true) => Act::Affine {
                scale: -1.0,
                shift: c,
            },
            (Op::Mul, _) => Act::Affine {
                scale: c,
                shift: 0.0,
            },
            (Op::Div, false) if c != 0.0 => Act::Affine {
                scale: 1.0 / c,
                shift: 0.0,
            },
            _ => return Err(format!("{label} divides by its activation or by zero")),
        };
        Ok(self
            .walk(x, index)?
            .then(act)
            .expect("affine functions apply to means too"))
    }
}

/// BatchNorm's output at channel `index` as a Gaussian: normalised by its running statistics,
/// which describe its input on the training data, then scaled by gamma and shifted by beta.
fn batchnorm(
    graph: &Graph,
    id: NodeId,
    index: usize,
    epsilon: f32,
    label: &str,
) -> Result<Channel, String> {
    let param = |i: usize| {
        graph
            .const_input(id, i)
            .and_then(|t| t.as_f32())
            .filter(|t| t.ndim() == 1)
            .and_then(|t| t.iter().nth(index).copied())
            .map(f64::from)
            .ok_or_else(|| format!("{label} has no constant parameter {i} for the channel traced"))
    };
    let (gamma, beta, var) = (param(1)?, param(2)?, param(4)?);
    let sigma = gamma.abs() * (var / (var + f64::from(epsilon))).sqrt();
    if !(sigma.is_finite() && beta.is_finite()) || var < 0.0 {
        return Err(format!(
            "{label} has parameters that are not finite or a negative variance"
        ));
    }
    Ok(Channel::normal(beta, sigma))
}

/// The value of a constant at channel `index` of an activation of rank `rank` it broadcasts
/// against, if it holds one value per channel (or one value in all).
fn per_channel(t: &ndarray::ArrayD<f32>, rank: usize, index: usize) -> Option<f64> {
    if t.len() == 1 {
        return t.iter().next().map(|&v| f64::from(v));
    }
    // Broadcasting aligns trailing axes: axis 1 of the activation is this axis of the constant.
    let axis = (t.ndim() + 1).checked_sub(rank)?;
    let shape = t.shape();
    let only_channels = shape.iter().enumerate().all(|(i, &d)| i == axis || d == 1);
    (only_channels && *shape.get(axis)? > index)
        .then(|| t.iter().nth(index).map(|&v| f64::from(v)))
        .flatten()
}

/// The channel of element `index` along axis 1 of a Flatten or Reshape's output, if the op
/// keeps the input's shape or flattens everything after its channel axis.
fn unflattened(graph: &Graph, id: NodeId, index: usize) -> Option<usize> {
    let node = graph.node(id);
    let input = graph.value((*node.inputs.first()?)?).shape.as_ref()?;
    let output = graph.value(node.outputs[0]).shape.as_ref()?;
    if input == output {
        return Some(index);
    }
    let inner: usize = input
        .0
        .get(2..)?
        .iter()
        .map(|d| d.known())
        .product::<Option<usize>>()?;
    let flattens = output.rank() == 2
        && input.rank() >= 2
        && input.0[1].known()?.checked_mul(inner)? == output.0[1].known()?;
    (flattens && inner > 0).then(|| index / inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pare_kernels::rng::SplitMix64;

    fn phi(z: f64) -> f64 {
        (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
    }

    /// Φ by Marsaglia's series, Φ(x) = ½ + φ(x)·(x + x³/3 + x⁵/(3·5) + …): independent of the
    /// quadrature under test, accurate to double precision for |x| < 8.
    fn cdf(x: f64) -> f64 {
        let (mut sum, mut term) = (x, x);
        for n in 1..300 {
            term *= x * x / f64::from(2 * n + 1);
            sum += term;
        }
        0.5 + sum * phi(x)
    }

    #[test]
    fn the_expected_relu_of_a_gaussian_matches_its_closed_form() {
        assert!((cdf(1.0) - 0.841_344_746_068_543).abs() < 1e-14);
        for (mu, sigma) in [
            (0.0, 1.0),
            (0.3, 0.7),
            (-1.2, 0.5),
            (2.0, 3.0),
            (-0.05, 0.01),
        ] {
            // E[relu(N(mu, sigma²))] = mu·Φ(mu/sigma) + sigma·φ(mu/sigma).
            let t = mu / sigma;
            let want = mu * cdf(t) + sigma * phi(t);
            let got = expected_max(mu, sigma, 1.0, |x| x.max(0.0));
            assert!(
                (got - want).abs() < 1e-6 * sigma,
                "mu {mu} sigma {sigma}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn the_expected_max_of_four_matches_a_monte_carlo_estimate() {
        let mut rng = SplitMix64::new(11);
        let draws = 200_000;
        let (mu, sigma) = (-0.4, 1.3);
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let (mut plain, mut squashed) = (0.0, 0.0);
        for _ in 0..draws {
            let max = (0..4)
                .map(|_| mu + sigma * super::super::standard_normal(&mut rng))
                .fold(f64::NEG_INFINITY, f64::max);
            plain += max;
            squashed += sigmoid(max);
        }
        let (plain, squashed) = (plain / draws as f64, squashed / draws as f64);
        // E[max of 4 standard normals] = 1.0293754 (tabulated order statistics).
        let got = expected_max(mu, sigma, 4.0, |x| x);
        assert!((got - (mu + sigma * 1.029_375_4)).abs() < 1e-6, "{got}");
        assert!((got - plain).abs() < 0.01, "{got} vs Monte Carlo {plain}");
        let got = expected_max(mu, sigma, 4.0, sigmoid);
        assert!(
            (got - squashed).abs() < 0.003,
            "{got} vs Monte Carlo {squashed}"
        );
        // And not the mean of one draw: the max moves it.
        assert!((got - expected_max(mu, sigma, 1.0, sigmoid)).abs() > 0.1);
    }

    #[test]
    fn max_commutes_only_with_monotone_functions() {
        let c = Channel::normal(0.5, 1.0);
        assert!(c.clone().then(Act::Relu).unwrap().max_over(4.0).is_some());
        assert!(c
            .clone()
            .then(Act::HardSwish)
            .unwrap()
            .max_over(4.0)
            .is_none());
        // After the pool any function may follow.
        assert!(c
            .clone()
            .max_over(4.0)
            .unwrap()
            .then(Act::HardSwish)
            .is_some());
        // After an average only affine functions keep the mean known.
        assert_eq!(
            Channel::Mean(2.0).then(Act::Affine {
                scale: 3.0,
                shift: 1.0
            }),
            Some(Channel::Mean(7.0))
        );
        assert_eq!(Channel::Mean(2.0).then(Act::Relu), None);
    }

    #[test]
    fn plain_gaussians_add_and_others_add_their_means() {
        let sum = Channel::normal(1.0, 3.0).plus(Channel::normal(2.0, 4.0), -1.0);
        assert_eq!(sum, Channel::normal(-1.0, 5.0));
        let relu = Channel::normal(0.0, 1.0).then(Act::Relu).unwrap();
        let sum = relu.plus(Channel::normal(2.0, 4.0), 1.0);
        let Channel::Mean(m) = sum else {
            panic!("{sum:?}")
        };
        assert!((m - (2.0 + phi(0.0))).abs() < 1e-6, "{m}");
    }
}
