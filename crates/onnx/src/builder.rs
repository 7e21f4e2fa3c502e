//! A small builder for ONNX models, for tests and tools that need a graph without an exporter.

use crate::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Builds a single-graph model in the default ONNX domain.
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    opset: i64,
    graph: GraphProto,
}

/// One dimension of a declared input or output: a size, or a symbolic name such as "batch".
#[derive(Debug, Clone)]
pub enum DimSpec {
    Size(i64),
    Name(String),
}

impl From<i64> for DimSpec {
    fn from(v: i64) -> Self {
        DimSpec::Size(v)
    }
}

impl From<&str> for DimSpec {
    fn from(v: &str) -> Self {
        DimSpec::Name(v.to_string())
    }
}

impl GraphBuilder {
    pub fn new(name: &str, opset: i64) -> Self {
        GraphBuilder {
            opset,
            graph: GraphProto {
                name: Some(name.into()),
                ..Default::default()
            },
        }
    }

    /// Declares a float32 graph input.
    pub fn input(
        &mut self,
        name: &str,
        dims: impl IntoIterator<Item = impl Into<DimSpec>>,
    ) -> &mut Self {
        self.graph.input.push(value_info(name, dims));
        self
    }

    /// Declares a float32 graph output.
    pub fn output(
        &mut self,
        name: &str,
        dims: impl IntoIterator<Item = impl Into<DimSpec>>,
    ) -> &mut Self {
        self.graph.output.push(value_info(name, dims));
        self
    }

    pub fn initializer(&mut self, tensor: TensorProto) -> &mut Self {
        self.graph.initializer.push(tensor);
        self
    }

    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> &mut Self {
        let index = self.graph.node.len();
        self.graph.node.push(NodeProto {
            name: Some(format!("{op_type}_{index}")),
            op_type: Some(op_type.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attributes,
            ..Default::default()
        });
        self
    }

    pub fn build(&self) -> ModelProto {
        ModelProto {
            ir_version: Some(8),
            producer_name: Some("pare-onnx builder".into()),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(self.graph.clone()),
            ..Default::default()
        }
    }
}

fn value_info(name: &str, dims: impl IntoIterator<Item = impl Into<DimSpec>>) -> ValueInfoProto {
    let dim = dims
        .into_iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d.into() {
                DimSpec::Size(v) => tensor_shape_proto::dimension::Value::DimValue(v),
                DimSpec::Name(n) => tensor_shape_proto::dimension::Value::DimParam(n),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A float32 tensor with its values in `float_data`.
pub fn tensor_f32(name: &str, dims: &[i64], values: Vec<f32>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: values,
        ..Default::default()
    }
}

/// An int64 tensor with its values in `int64_data`.
pub fn tensor_i64(name: &str, dims: &[i64], values: Vec<i64>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Int64 as i32),
        int64_data: values,
        ..Default::default()
    }
}

/// Attribute constructors.
pub mod attr {
    use super::*;

    fn base(name: &str, kind: AttributeType) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(kind as i32),
            ..Default::default()
        }
    }

    pub fn int(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            i: Some(v),
            ..base(name, AttributeType::Int)
        }
    }

    pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            ints: v.to_vec(),
            ..base(name, AttributeType::Ints)
        }
    }

    pub fn float(name: &str, v: f32) -> AttributeProto {
        AttributeProto {
            f: Some(v),
            ..base(name, AttributeType::Float)
        }
    }

    pub fn string(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            s: Some(v.as_bytes().to_vec()),
            ..base(name, AttributeType::String)
        }
    }

    pub fn tensor(name: &str, t: TensorProto) -> AttributeProto {
        AttributeProto {
            t: Some(t),
            ..base(name, AttributeType::Tensor)
        }
    }

    pub use super::{tensor_f32, tensor_i64};
}
