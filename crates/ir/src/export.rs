//! Graph → ModelProto. Keeps what import kept: opsets, producer, names, doc strings, metadata,
//! declarations; weights are written inline.

use crate::graph::{Graph, Value, ValueSource};
use crate::shape::{Dim, Shape};
use crate::Op;
use pare_onnx::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, GraphProto, ModelProto, NodeProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Exports the graph as a self-contained model.
pub fn export(graph: &Graph) -> ModelProto {
    let meta = &graph.meta;
    let info = |v: &Value| value_info(v);
    let mut proto = GraphProto {
        name: meta.graph_name.clone(),
        doc_string: meta.graph_doc_string.clone(),
        metadata_props: meta.graph_metadata_props.clone(),
        ..Default::default()
    };
    proto.input = graph.inputs.iter().map(|&v| info(graph.value(v))).collect();
    for v in &graph.values {
        if let ValueSource::Initializer(t) = &v.source {
            proto.initializer.push(t.to_proto(&v.name));
            // Before IR version 4 every initializer had to be listed as an input too.
            if meta.ir_version.is_some_and(|ir| ir < 4) {
                proto.input.push(info(v));
            }
        }
    }
    proto.output = graph
        .outputs
        .iter()
        .map(|&v| info(graph.value(v)))
        .collect();
    proto.value_info = graph
        .value_ids()
        .filter(|id| !graph.outputs.contains(id) && !graph.inputs.contains(id))
        .map(|id| graph.value(id))
        .filter(|v| v.declared.is_some())
        .map(info)
        .collect();
    proto.node = graph
        .nodes
        .iter()
        .map(|node| {
            let names = |ids: &mut dyn Iterator<Item = Option<crate::ValueId>>| {
                ids.map(|v| v.map_or(String::new(), |v| graph.value(v).name.clone()))
                    .collect::<Vec<_>>()
            };
            let input = names(&mut node.inputs.iter().copied());
            let output = names(&mut node.outputs.iter().map(|&v| Some(v)));
            match &node.op {
                Op::Opaque(original) => NodeProto {
                    input,
                    output,
                    ..(**original).clone()
                },
                op => NodeProto {
                    input,
                    output,
                    name: Some(node.name.clone()),
                    op_type: Some(op.op_type().to_string()),
                    attribute: op.attributes(),
                    doc_string: node.doc_string.clone(),
                    metadata_props: node.metadata_props.clone(),
                    ..Default::default()
                },
            }
        })
        .collect();
    ModelProto {
        ir_version: meta.ir_version,
        opset_import: meta.opset_import.clone(),
        producer_name: meta.producer_name.clone(),
        producer_version: meta.producer_version.clone(),
        domain: meta.domain.clone(),
        model_version: meta.model_version,
        doc_string: meta.doc_string.clone(),
        graph: Some(proto),
        metadata_props: meta.metadata_props.clone(),
        training_info: meta.training_info.clone(),
        functions: meta.functions.clone(),
        ..Default::default()
    }
}

/// The declaration of a value: the model's own, with the shape the graph now has.
fn value_info(v: &Value) -> ValueInfoProto {
    let mut info = v.declared.clone().unwrap_or_default();
    let ty = info.r#type.get_or_insert_with(|| TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(v.elem_type),
            shape: None,
        })),
        ..Default::default()
    });
    if let (Some(shape), Some(type_proto::Value::TensorType(tt))) = (&v.shape, ty.value.as_mut()) {
        let old = tt.shape.take().unwrap_or_default();
        let dim = shape
            .0
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let previous = old.dim.get(i).cloned().unwrap_or_default();
                Dimension {
                    value: Some(match d {
                        Dim::Known(n) => dimension::Value::DimValue(*n as i64),
                        // An inferred unknown keeps whatever the declaration said.
                        Dim::Sym(s) if s.starts_with('?') => match previous.value {
                            Some(v) => v,
                            None => dimension::Value::DimParam(String::new()),
                        },
                        Dim::Sym(s) => dimension::Value::DimParam(s.clone()),
                    }),
                    ..previous
                }
            })
            .collect();
        tt.shape = Some(TensorShapeProto { dim });
    }
    info.name = Some(v.name.clone());
    info
}

/// The shape a type declares, if it is a tensor type with a shape. Unnamed unknown dimensions
/// become `?`.
pub fn shape_of_type(t: &TypeProto) -> Option<Shape> {
    let Some(type_proto::Value::TensorType(tt)) = &t.value else {
        return None;
    };
    let dims = tt
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
            Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
            _ => Dim::Sym("?".into()),
        })
        .collect();
    Some(Shape(dims))
}
