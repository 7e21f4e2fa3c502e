//! Typed operators. Each modelled ONNX operator has its attributes as Rust fields; every other
//! node is `Op::Opaque` with its NodeProto, exported untouched.
//!
//! Parsing is strict: an attribute this module does not know, or an opset whose semantics differ
//! from the ones modelled here, makes the node Opaque rather than guessed.

use pare_onnx::attr;
use pare_onnx::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto};

mod attrs;
mod window;

use attrs::{Attrs, Parsed};
use window::window;
pub use window::{Padding, Window, MAX_WINDOW_ATTR};

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
