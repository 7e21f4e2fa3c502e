//! Typed operators. Each modelled ONNX operator has its attributes as Rust fields; every other
//! node is `Op::Opaque` with its NodeProto, exported untouched.
//!
//! Parsing is strict: an attribute this module does not know, or an opset whose semantics differ
//! from the ones modelled here, makes the node Opaque rather than guessed.

use pare_onnx::attr;
use pare_onnx::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto};

/// How a Conv or pool pads its input.
#[derive(Debug, Clone, PartialEq)]
pub enum Padding {
    /// ONNX order: all begins, then all ends.
    Explicit(Vec<usize>),
    SameUpper,
    SameLower,
    Valid,
}

/// Window geometry shared by Conv and the pools.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Padding,
    pub dilations: Vec<usize>,
}

impl Window {
    /// The extent of one kernel along axis `i`, dilations included; None if it overflows.
    fn span(&self, i: usize) -> Option<usize> {
        (self.kernel_shape[i] - 1)
            .checked_mul(self.dilations[i])?
            .checked_add(1)
    }

    /// Pads (begins then ends) for an input of these spatial sizes; None if the arithmetic
    /// overflows (absurd attributes).
    pub fn resolved_pads(&self, input: &[usize]) -> Option<Vec<usize>> {
        let n = self.kernel_shape.len();
        match &self.pads {
            Padding::Explicit(p) => Some(p.clone()),
            Padding::Valid => Some(vec![0; 2 * n]),
            Padding::SameUpper | Padding::SameLower => {
                let mut begins = vec![0; n];
                let mut ends = vec![0; n];
                for i in 0..n {
                    let out = input[i].div_ceil(self.strides[i]);
                    let total = out
                        .saturating_sub(1)
                        .checked_mul(self.strides[i])?
                        .checked_add(self.span(i)?)?
                        .saturating_sub(input[i]);
                    let small = total / 2;
                    let (b, e) = if self.pads == Padding::SameUpper {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                    begins[i] = b;
                    ends[i] = e;
                }
                Some(begins.into_iter().chain(ends).collect())
            }
        }
    }

    /// Output spatial sizes for an input of these spatial sizes, or None if the window does not
    /// fit (or its arithmetic overflows).
    pub fn output_size(&self, input: &[usize], ceil_mode: bool) -> Option<Vec<usize>> {
        let n = self.kernel_shape.len();
        let pads = self.resolved_pads(input)?;
        (0..n)
            .map(|i| {
                let padded = input[i].checked_add(pads[i])?.checked_add(pads[i + n])?;
                let room = padded.checked_sub(self.span(i)?)?;
                let s = self.strides[i];
                let mut out = if ceil_mode {
                    room.div_ceil(s)
                } else {
                    room / s
                } + 1;
                // ONNX: with ceil_mode, a last window that starts in the end padding is dropped.
                if ceil_mode && (out - 1) * s >= input[i] + pads[i] {
                    out -= 1;
                }
                Some(out)
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub window: Window,
    pub group: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub window: Window,
    pub ceil_mode: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

/// A node's operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Conv(Conv),
    Gemm(Gemm),
    MatMul,
    BatchNorm {
        epsilon: f32,
        momentum: f32,
    },
    Relu,
    /// min and max come from the optional 2nd and 3rd inputs (opset 11+).
    Clip,
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Add,
    Sub,
    Mul,
    Div,
    MaxPool(Pool),
    AveragePool {
        pool: Pool,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    Flatten {
        axis: i64,
    },
    Reshape {
        allowzero: bool,
    },
    Concat {
        axis: i64,
    },
    /// Identity at inference; `ratio` is the attribute of opsets before 12.
    Dropout {
        ratio: Option<f32>,
    },
    Identity,
    Softmax {
        axis: i64,
    },
    Opaque(Box<NodeProto>),
}

/// Reads attributes by name and remembers which were read, so unknown ones can be detected. An
/// attribute of the wrong type, or a value outside what the spec allows, is an error: such a node
/// is invalid, not merely unmodelled.
struct Attrs<'a> {
    list: &'a [AttributeProto],
    used: Vec<bool>,
}

type Parsed<T> = Result<T, String>;

impl<'a> Attrs<'a> {
    fn new(list: &'a [AttributeProto]) -> Self {
        Attrs {
            list,
            used: vec![false; list.len()],
        }
    }

    fn get(&mut self, name: &str, kind: AttributeType) -> Parsed<Option<&'a AttributeProto>> {
        let Some(i) = self
            .list
            .iter()
            .position(|a| a.name.as_deref() == Some(name))
        else {
            return Ok(None);
        };
        self.used[i] = true;
        let a = &self.list[i];
        match a.r#type {
            Some(t) if t != kind as i32 => Err(format!(
                "attribute '{name}' has type {}, the spec says {}",
                AttributeType::try_from(t).map_or(format!("#{t}"), |t| t.as_str_name().into()),
                kind.as_str_name()
            )),
            _ => Ok(Some(a)),
        }
    }

    fn int(&mut self, name: &str, default: i64) -> Parsed<i64> {
        Ok(self
            .get(name, AttributeType::Int)?
            .map_or(default, |a| a.i.unwrap_or(0)))
    }

    fn float(&mut self, name: &str, default: f32) -> Parsed<f32> {
        Ok(self
            .get(name, AttributeType::Float)?
            .map_or(default, |a| a.f.unwrap_or(0.0)))
    }

    fn opt_float(&mut self, name: &str) -> Parsed<Option<f32>> {
        Ok(self
            .get(name, AttributeType::Float)?
            .map(|a| a.f.unwrap_or(0.0)))
    }

    fn ints(&mut self, name: &str) -> Parsed<Option<Vec<i64>>> {
        Ok(self.get(name, AttributeType::Ints)?.map(|a| a.ints.clone()))
    }

    fn string(&mut self, name: &str) -> Parsed<Option<String>> {
        Ok(self
            .get(name, AttributeType::String)?
            .map(|a| String::from_utf8_lossy(a.s.as_deref().unwrap_or_default()).into_owned()))
    }

    fn all_used(&self) -> bool {
        self.used.iter().all(|&u| u)
    }
}

/// The largest kernel size, stride, dilation or pad pare accepts: no axis of a value may be longer
/// (see `MAX_VALUE_ELEMENTS`), so anything larger is an attribute gone wrong, and bounding it keeps
/// every window computation far from overflow.
pub const MAX_WINDOW_ATTR: i64 = 1 << 30;

/// An ints attribute of `n` elements, each from `min` to `MAX_WINDOW_ATTR`.
fn bounded(name: &str, v: &[i64], n: usize, min: i64) -> Parsed<Vec<usize>> {
    if v.len() != n {
        return Err(format!(
            "'{name}' has {} values {v:?}, the kernel needs {n}",
            v.len()
        ));
    }
    v.iter()
        .map(|&x| {
            usize::try_from(x)
                .ok()
                .filter(|_| (min..=MAX_WINDOW_ATTR).contains(&x))
                .ok_or_else(|| format!("'{name}' {v:?} holds {x}; each must be from {min} to 2^30"))
        })
        .collect()
}

/// Reads the window attributes; `kernel_shape` falls back to `weight_kernel` (Conv may omit it)
/// and, when both are known, must agree with it. None when the kernel is neither given nor known.
fn window(
    a: &mut Attrs,
    weight_kernel: Option<&[usize]>,
    with_dilations: bool,
) -> Parsed<Option<Window>> {
    let kernel_shape = match (a.ints("kernel_shape")?, weight_kernel) {
        (Some(k), weight) => {
            let k = bounded("kernel_shape", &k, k.len(), 1)?;
            if k.is_empty() {
                return Err("'kernel_shape' is empty".into());
            }
            if let Some(w) = weight.filter(|w| *w != k.as_slice()) {
                return Err(format!(
                    "'kernel_shape' {k:?} disagrees with the weight's spatial shape {w:?}"
                ));
            }
            k
        }
        (None, Some(w)) if !w.is_empty() && !w.contains(&0) => w.to_vec(),
        (None, _) => return Ok(None),
    };
    let n = kernel_shape.len();
    let ones_or = |name: &str, v: Option<Vec<i64>>| -> Parsed<Vec<usize>> {
        v.map_or(Ok(vec![1; n]), |v| bounded(name, &v, n, 1))
    };
    let strides = ones_or("strides", a.ints("strides")?)?;
    let dilations = if with_dilations {
        ones_or("dilations", a.ints("dilations")?)?
    } else {
        vec![1; n]
    };
    let explicit = a.ints("pads")?;
    let pads = match a.string("auto_pad")?.as_deref() {
        None | Some("NOTSET") => Padding::Explicit(
            explicit.map_or(Ok(vec![0; 2 * n]), |p| bounded("pads", &p, 2 * n, 0))?,
        ),
        Some("SAME_UPPER") => Padding::SameUpper,
        Some("SAME_LOWER") => Padding::SameLower,
        Some("VALID") => Padding::Valid,
        Some(other) => {
            return Err(format!(
                "'auto_pad' is '{other}'; the spec allows NOTSET, SAME_UPPER, SAME_LOWER, VALID"
            ))
        }
    };
    Ok(Some(Window {
        kernel_shape,
        strides,
        pads,
        dilations,
    }))
}

impl Op {
    /// Parses a node of the default domain at the given opset. `weight_kernel` is the spatial
    /// shape of a Conv's weight, when known. Anything not modelled becomes Opaque; a modelled op
    /// whose attributes the spec forbids (a wrong type, a wrong length, a zero stride) is an error
    /// saying which attribute and why.
    pub fn from_node(
        node: &NodeProto,
        opset: i64,
        weight_kernel: Option<&[usize]>,
    ) -> Result<Op, String> {
        let domain = node.domain.as_deref().unwrap_or("");
        let plain = node.overload.as_deref().unwrap_or("").is_empty()
            && node.device_configurations.is_empty();
        let parsed = if plain && (domain.is_empty() || domain == "ai.onnx") {
            Self::parse(node, opset, weight_kernel)?
        } else {
            None
        };
        Ok(parsed.unwrap_or_else(|| Op::Opaque(Box::new(node.clone()))))
    }

    fn parse(node: &NodeProto, opset: i64, weight_kernel: Option<&[usize]>) -> Parsed<Option<Op>> {
        let mut a = Attrs::new(&node.attribute);
        let outputs = node.output.iter().filter(|o| !o.is_empty()).count();
        if outputs != 1 {
            return Ok(None);
        }
        let Some(op_type) = node.op_type.as_deref() else {
            return Ok(None);
        };
        let op = match op_type {
            "Conv" => {
                let Some(window) = window(&mut a, weight_kernel, true)? else {
                    return Ok(None);
                };
                let group = a.int("group", 1)?;
                let group = usize::try_from(group)
                    .ok()
                    .filter(|&g| g > 0)
                    .ok_or_else(|| format!("'group' is {group}; it must be 1 or more"))?;
                Op::Conv(Conv { window, group })
            }
            "Gemm" => Op::Gemm(Gemm {
                alpha: a.float("alpha", 1.0)?,
                beta: a.float("beta", 1.0)?,
                trans_a: a.int("transA", 0)? != 0,
                trans_b: a.int("transB", 0)? != 0,
            }),
            "MatMul" => Op::MatMul,
            "BatchNormalization" if opset >= 9 => {
                if a.int("training_mode", 0)? != 0 {
                    return Ok(None);
                }
                Op::BatchNorm {
                    epsilon: a.float("epsilon", 1e-5)?,
                    momentum: a.float("momentum", 0.9)?,
                }
            }
            "Relu" => Op::Relu,
            "Clip" if opset >= 11 => Op::Clip,
            "LeakyRelu" => Op::LeakyRelu {
                alpha: a.float("alpha", 0.01)?,
            },
            "Sigmoid" => Op::Sigmoid,
            "HardSigmoid" => Op::HardSigmoid {
                alpha: a.float("alpha", 0.2)?,
                beta: a.float("beta", 0.5)?,
            },
            "HardSwish" => Op::HardSwish,
            "Add" => Op::Add,
            "Sub" => Op::Sub,
            "Mul" => Op::Mul,
            "Div" => Op::Div,
            "MaxPool" => {
                if a.int("storage_order", 0)? != 0 {
                    return Ok(None);
                }
                let Some(window) = window(&mut a, None, true)? else {
                    return Err("'kernel_shape' is required".into());
                };
                Op::MaxPool(Pool {
                    window,
                    ceil_mode: a.int("ceil_mode", 0)? != 0,
                })
            }
            "AveragePool" => {
                let Some(window) = window(&mut a, None, opset >= 19)? else {
                    return Err("'kernel_shape' is required".into());
                };
                Op::AveragePool {
                    pool: Pool {
                        window,
                        ceil_mode: a.int("ceil_mode", 0)? != 0,
                    },
                    count_include_pad: a.int("count_include_pad", 0)? != 0,
                }
            }
            "GlobalAveragePool" => Op::GlobalAveragePool,
            "Flatten" => Op::Flatten {
                axis: a.int("axis", 1)?,
            },
            "Reshape" if opset >= 5 => Op::Reshape {
                allowzero: a.int("allowzero", 0)? != 0,
            },
            "Concat" => match a.get("axis", AttributeType::Int)? {
                Some(axis) => Op::Concat {
                    axis: axis.i.unwrap_or(0),
                },
                None => return Err("'axis' is required".into()),
            },
            "Dropout" if opset >= 7 => Op::Dropout {
                ratio: a.opt_float("ratio")?,
            },
            "Identity" => Op::Identity,
            "Softmax" if opset >= 13 => Op::Softmax {
                axis: a.int("axis", -1)?,
            },
            _ => return Ok(None),
        };
        Ok(a.all_used().then_some(op))
    }

    /// The ONNX operator type.
    pub fn op_type(&self) -> &str {
        match self {
            Op::Conv(_) => "Conv",
            Op::Gemm(_) => "Gemm",
            Op::MatMul => "MatMul",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Relu => "Relu",
            Op::Clip => "Clip",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::Sigmoid => "Sigmoid",
            Op::HardSigmoid { .. } => "HardSigmoid",
            Op::HardSwish => "HardSwish",
            Op::Add => "Add",
            Op::Sub => "Sub",
            Op::Mul => "Mul",
            Op::Div => "Div",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool { .. } => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Concat { .. } => "Concat",
            Op::Dropout { .. } => "Dropout",
            Op::Identity => "Identity",
            Op::Softmax { .. } => "Softmax",
            Op::Opaque(n) => n.op_type.as_deref().unwrap_or(""),
        }
    }

    /// The ONNX attributes of this op. Defaults are left out, so an attribute appears only where
    /// the opset it came from has it.
    pub fn attributes(&self) -> Vec<AttributeProto> {
        let mut out = Vec::new();
        let push_window = |w: &Window, out: &mut Vec<AttributeProto>| {
            let n = w.kernel_shape.len();
            let as_i64 = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
            out.push(attr::ints("kernel_shape", &as_i64(&w.kernel_shape)));
            if w.strides != vec![1; n] {
                out.push(attr::ints("strides", &as_i64(&w.strides)));
            }
            match &w.pads {
                Padding::Explicit(p) if p.iter().all(|&x| x == 0) => {}
                Padding::Explicit(p) => out.push(attr::ints("pads", &as_i64(p))),
                Padding::SameUpper => out.push(attr::string("auto_pad", "SAME_UPPER")),
                Padding::SameLower => out.push(attr::string("auto_pad", "SAME_LOWER")),
                Padding::Valid => out.push(attr::string("auto_pad", "VALID")),
            }
            if w.dilations != vec![1; n] {
                out.push(attr::ints("dilations", &as_i64(&w.dilations)));
            }
        };
        match self {
            Op::Conv(c) => {
                push_window(&c.window, &mut out);
                if c.group != 1 {
                    out.push(attr::int("group", c.group as i64));
                }
            }
            Op::Gemm(g) => {
                if g.alpha != 1.0 {
                    out.push(attr::float("alpha", g.alpha));
                }
                if g.beta != 1.0 {
                    out.push(attr::float("beta", g.beta));
                }
                if g.trans_a {
                    out.push(attr::int("transA", 1));
                }
                if g.trans_b {
                    out.push(attr::int("transB", 1));
                }
            }
            Op::BatchNorm { epsilon, momentum } => {
                out.push(attr::float("epsilon", *epsilon));
                out.push(attr::float("momentum", *momentum));
            }
            Op::LeakyRelu { alpha } => out.push(attr::float("alpha", *alpha)),
            Op::HardSigmoid { alpha, beta } => {
                out.push(attr::float("alpha", *alpha));
                out.push(attr::float("beta", *beta));
            }
            Op::MaxPool(p) | Op::AveragePool { pool: p, .. } => {
                push_window(&p.window, &mut out);
                if p.ceil_mode {
                    out.push(attr::int("ceil_mode", 1));
                }
                if let Op::AveragePool {
                    count_include_pad: true,
                    ..
                } = self
                {
                    out.push(attr::int("count_include_pad", 1));
                }
            }
            Op::Flatten { axis } => out.push(attr::int("axis", *axis)),
            Op::Reshape { allowzero: true } => out.push(attr::int("allowzero", 1)),
            Op::Concat { axis } => out.push(attr::int("axis", *axis)),
            Op::Dropout { ratio: Some(r) } => out.push(attr::float("ratio", *r)),
            Op::Softmax { axis } => out.push(attr::int("axis", *axis)),
            Op::Opaque(n) => out = n.attribute.clone(),
            _ => {}
        }
        out
    }

    /// True for ops with no effect at inference (Identity, Dropout).
    pub fn is_identity_at_inference(&self) -> bool {
        matches!(self, Op::Identity | Op::Dropout { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pare_onnx::GraphBuilder;

    fn node(op: &str, attributes: Vec<AttributeProto>) -> NodeProto {
        let mut b = GraphBuilder::new("t", 17);
        b.node(op, &["x", "w"], &["y"], attributes);
        b.build().graph.unwrap().node[0].clone()
    }

    #[test]
    fn conv_attributes_parse_and_round_trip() {
        let n = node(
            "Conv",
            vec![
                attr::ints("pads", &[1, 1, 1, 1]),
                attr::ints("strides", &[2, 2]),
                attr::int("group", 4),
            ],
        );
        let op = Op::from_node(&n, 17, Some(&[3, 3])).unwrap();
        let Op::Conv(c) = &op else { panic!("{op:?}") };
        assert_eq!(c.window.kernel_shape, vec![3, 3]);
        assert_eq!(c.group, 4);
        let again = Op::from_node(
            &NodeProto {
                attribute: op.attributes(),
                ..n
            },
            17,
            None,
        )
        .unwrap();
        assert_eq!(op, again);
    }

    #[test]
    fn unknown_attributes_and_old_semantics_stay_opaque() {
        let n = node("Relu", vec![attr::int("consumed_inputs", 1)]);
        assert!(matches!(Op::from_node(&n, 5, None).unwrap(), Op::Opaque(_)));
        assert!(matches!(
            Op::from_node(&node("Softmax", vec![]), 11, None).unwrap(),
            Op::Opaque(_)
        ));
        assert!(matches!(
            Op::from_node(&node("Clip", vec![]), 6, None).unwrap(),
            Op::Opaque(_)
        ));
        assert!(matches!(
            Op::from_node(&node("Erf", vec![]), 17, None).unwrap(),
            Op::Opaque(_)
        ));
    }

    #[test]
    fn same_padding_and_ceil_mode_follow_the_spec() {
        let w = Window {
            kernel_shape: vec![3],
            strides: vec![2],
            pads: Padding::SameUpper,
            dilations: vec![1],
        };
        assert_eq!(w.resolved_pads(&[8]), Some(vec![0, 1]));
        assert_eq!(w.output_size(&[8], false), Some(vec![4]));
        let p = Window {
            kernel_shape: vec![2],
            strides: vec![2],
            pads: Padding::Explicit(vec![0, 0]),
            dilations: vec![1],
        };
        assert_eq!(p.output_size(&[5], false), Some(vec![2]));
        assert_eq!(p.output_size(&[5], true), Some(vec![3]));
    }
}
