//! ModelProto → Graph.
//!
//! Import resolves names to ids, turns Constant nodes into initializers, sorts nodes
//! topologically, types every node's op, then infers shapes and folds shape subgraphs. It never
//! changes what the model computes.

use crate::graph::{Graph, ModelMeta, Node, NodeId, Value, ValueId, ValueSource};
use crate::{settle, IrError, Op, Tensor};
use pare_onnx::proto::{
    tensor_shape_proto::dimension, type_proto, GraphProto, ModelProto, NodeProto, TypeProto,
    ValueInfoProto,
};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

/// The newest default-domain opset whose operators pare knows (ONNX 1.19). A newer one may
/// change the semantics of ops pare models, so it is refused rather than guessed.
pub const MAX_OPSET: i64 = 24;

/// Imports a self-contained model (external data already inlined).
pub fn import(model: &ModelProto) -> Result<Graph, IrError> {
    let proto = model.graph.as_ref().ok_or(IrError::NoGraph)?;
    let meta = ModelMeta {
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        producer_name: model.producer_name.clone(),
        producer_version: model.producer_version.clone(),
        domain: model.domain.clone(),
        model_version: model.model_version,
        doc_string: model.doc_string.clone(),
        metadata_props: model.metadata_props.clone(),
        functions: model.functions.clone(),
        training_info: model.training_info.clone(),
        graph_name: proto.name.clone(),
        graph_doc_string: proto.doc_string.clone(),
        graph_metadata_props: proto.metadata_props.clone(),
    };
    let opset = meta.opset();
    if !(1..=MAX_OPSET).contains(&opset) {
        return Err(IrError::Opset {
            opset,
            max: MAX_OPSET,
        });
    }
    let mut b = Builder {
        graph: Graph {
            meta,
            ..Default::default()
        },
        by_name: HashMap::new(),
    };

    // Graph inputs and outputs come after value_info so their declarations win.
    let declared: HashMap<&str, &ValueInfoProto> = proto
        .value_info
        .iter()
        .chain(&proto.input)
        .chain(&proto.output)
        .filter_map(|vi| Some((vi.name.as_deref()?, vi)))
        .collect();

    for t in &proto.initializer {
        let name = t.name.clone().unwrap_or_default();
        b.add(&name, ValueSource::Initializer(Tensor::from_proto(t)?));
    }
    // Before IR version 4 initializers were also listed as inputs; those are constants, not inputs.
    for vi in &proto.input {
        let name = vi.name.clone().unwrap_or_default();
        if !b.by_name.contains_key(&name) {
            let id = b.add(&name, ValueSource::Input);
            b.graph.inputs.push(id);
        }
    }
    if let (true, Some(shadowed)) = (b.graph.inputs.is_empty(), proto.input.first()) {
        return Err(IrError::InputIsInitializer {
            name: shadowed.name.clone().unwrap_or_default(),
        });
    }

    for node in sort_nodes(proto)? {
        if let Some((name, tensor)) = constant_value(node)? {
            b.add(name, ValueSource::Initializer(tensor));
            continue;
        }
        check_captures(node, &b.by_name)?;
        if node.output.is_empty() {
            return Err(IrError::Node {
                node: node_label(node),
                op: node.op_type.clone().unwrap_or_default(),
                problem: "has no outputs; remove the node or name what it computes".into(),
            });
        }
        let id = NodeId(b.graph.nodes.len() as u32);
        let inputs = node
            .input
            .iter()
            .map(|name| {
                if name.is_empty() {
                    return Ok(None);
                }
                b.by_name
                    .get(name)
                    .copied()
                    .map(Some)
                    .ok_or_else(|| IrError::Node {
                        node: node_label(node),
                        op: node.op_type.clone().unwrap_or_default(),
                        problem: format!("input '{name}' is not defined"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut outputs = Vec::new();
        for name in &node.output {
            if let Some(&existing) = b.by_name.get(name) {
                let first = match b.graph.value(existing).source {
                    ValueSource::Node(n) => format!("node '{}'", b.graph.node(n).name),
                    _ => "an input or initializer".into(),
                };
                return Err(IrError::Reassigned {
                    name: name.clone(),
                    first,
                    second: format!("node '{}'", node_label(node)),
                });
            }
            // Unnamed optional outputs still get a value so the node keeps its arity.
            outputs.push(b.add(name, ValueSource::Node(id)));
        }
        let weight_kernel = inputs
            .get(1)
            .copied()
            .flatten()
            .and_then(|w| declared_or_const_shape(&b.graph, w, &declared))
            .filter(|s| s.len() > 2)
            .map(|s| s[2..].to_vec());
        let op = Op::from_node(node, opset, weight_kernel.as_deref()).map_err(|problem| {
            IrError::Node {
                node: node_label(node),
                op: node.op_type.clone().unwrap_or_default(),
                problem: format!("{problem}; fix the attribute in the exporter"),
            }
        })?;
        b.graph.nodes.push(Node {
            name: node.name.clone().unwrap_or_default(),
            op,
            inputs,
            outputs,
            doc_string: node.doc_string.clone(),
            metadata_props: node.metadata_props.clone(),
        });
    }

    for vi in &proto.output {
        let name = vi.name.as_deref().unwrap_or_default();
        let id = *b.by_name.get(name).ok_or_else(|| IrError::Undefined {
            what: "output",
            name: name.into(),
        })?;
        b.graph.outputs.push(id);
    }

    for v in &mut b.graph.values {
        v.declared = declared.get(v.name.as_str()).map(|vi| (*vi).clone());
        let ty = v.declared.as_ref().and_then(|vi| vi.r#type.as_ref());
        v.elem_type = match &v.source {
            ValueSource::Initializer(t) => t.data_type(),
            _ => ty.map_or(0, elem_type_of),
        };
        v.shape = ty.and_then(crate::export::shape_of_type);
    }

    let mut graph = b.graph;
    settle::settle(&mut graph)?;
    Ok(graph)
}

struct Builder {
    graph: Graph,
    by_name: HashMap<String, ValueId>,
}

impl Builder {
    fn add(&mut self, name: &str, source: ValueSource) -> ValueId {
        let id = ValueId(self.graph.values.len() as u32);
        self.graph.values.push(Value {
            name: name.to_string(),
            source,
            shape: None,
            elem_type: 0,
            declared: None,
        });
        if !name.is_empty() {
            self.by_name.insert(name.to_string(), id);
        }
        id
    }
}

fn node_label(node: &NodeProto) -> String {
    match node.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!(
            "<unnamed, output '{}'>",
            node.output.first().cloned().unwrap_or_default()
        ),
    }
}

fn elem_type_of(t: &TypeProto) -> i32 {
    match &t.value {
        Some(type_proto::Value::TensorType(tt)) => tt.elem_type.unwrap_or(0),
        _ => 0,
    }
}

fn declared_or_const_shape(
    graph: &Graph,
    v: ValueId,
    declared: &HashMap<&str, &ValueInfoProto>,
) -> Option<Vec<usize>> {
    let value = graph.value(v);
    if let Some(t) = value.initializer() {
        return Some(t.shape());
    }
    let Some(type_proto::Value::TensorType(tt)) =
        &declared.get(value.name.as_str())?.r#type.as_ref()?.value
    else {
        return None;
    };
    tt.shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match d.value {
            Some(dimension::Value::DimValue(v)) => usize::try_from(v).ok(),
            _ => None,
        })
        .collect()
}

/// The output name and tensor of a Constant node, or None for any other node (or a Constant form
/// kept Opaque).
fn constant_value(node: &NodeProto) -> Result<Option<(&str, Tensor)>, IrError> {
    let default_domain = matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx"));
    if node.op_type.as_deref() != Some("Constant") || !default_domain || node.attribute.len() != 1 {
        return Ok(None);
    }
    let [name] = node.output.as_slice() else {
        return Err(IrError::Node {
            node: node_label(node),
            op: "Constant".into(),
            problem: format!(
                "has {} outputs; a Constant has exactly one",
                node.output.len()
            ),
        });
    };
    let a = &node.attribute[0];
    let proto = match a.name.as_deref() {
        Some("value") => match &a.t {
            Some(t) => t.clone(),
            None => return Ok(None),
        },
        Some("value_float") => pare_onnx::attr::tensor_f32(name, &[], vec![a.f.unwrap_or(0.0)]),
        Some("value_floats") => {
            pare_onnx::attr::tensor_f32(name, &[a.floats.len() as i64], a.floats.clone())
        }
        Some("value_int") => pare_onnx::attr::tensor_i64(name, &[], vec![a.i.unwrap_or(0)]),
        Some("value_ints") => {
            pare_onnx::attr::tensor_i64(name, &[a.ints.len() as i64], a.ints.clone())
        }
        _ => return Ok(None),
    };
    Ok(Some((name.as_str(), Tensor::from_proto(&proto)?)))
}

/// Refuses subgraphs (If, Loop, Scan) that read values of the outer graph: pare could not see
/// those uses, so rewriting the outer graph might break them.
fn check_captures(node: &NodeProto, outer: &HashMap<String, ValueId>) -> Result<(), IrError> {
    fn defined_in(g: &GraphProto) -> HashSet<&str> {
        let mut names: HashSet<&str> = g.input.iter().filter_map(|v| v.name.as_deref()).collect();
        names.extend(g.initializer.iter().filter_map(|t| t.name.as_deref()));
        names.extend(
            g.node
                .iter()
                .flat_map(|n| n.output.iter().map(String::as_str)),
        );
        names
    }
    for a in &node.attribute {
        for g in a.g.iter().chain(&a.graphs) {
            let inner = defined_in(g);
            let captured = g.node.iter().flat_map(|n| &n.input).find(|name| {
                !name.is_empty() && !inner.contains(name.as_str()) && outer.contains_key(*name)
            });
            if let Some(name) = captured {
                return Err(IrError::Node {
                    node: node_label(node),
                    op: node.op_type.clone().unwrap_or_default(),
                    problem: format!(
                        "its subgraph reads outer value '{name}'; control flow that captures \
                         values is not supported"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The nodes in an order where each reads only what earlier nodes, inputs or initializers
/// define. ONNX requires files to be sorted already; some writers do not comply. Kahn's
/// algorithm, taking the earliest ready node in file order first, so a sorted graph keeps its
/// order and the cost stays O(n log n) however the nodes are shuffled.
fn sort_nodes(proto: &GraphProto) -> Result<Vec<&NodeProto>, IrError> {
    let mut available: HashSet<&str> = proto
        .input
        .iter()
        .filter_map(|v| v.name.as_deref())
        .collect();
    available.extend(proto.initializer.iter().filter_map(|t| t.name.as_deref()));
    available.insert("");
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, node) in proto.node.iter().enumerate() {
        for o in &node.output {
            producer.entry(o.as_str()).or_insert(i);
        }
    }
    // For each node, how many of its inputs are still to be produced, and who waits on whom.
    let mut waiting = vec![0usize; proto.node.len()];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); proto.node.len()];
    let mut ready = BinaryHeap::new();
    for (i, node) in proto.node.iter().enumerate() {
        let mut needs: Vec<usize> = node
            .input
            .iter()
            .filter(|name| !available.contains(name.as_str()))
            .filter_map(|name| producer.get(name.as_str()).copied())
            .collect();
        needs.sort_unstable();
        needs.dedup();
        let undefined = node.input.iter().find(|name| {
            !available.contains(name.as_str()) && !producer.contains_key(name.as_str())
        });
        if let Some(missing) = undefined {
            return Err(IrError::Node {
                node: node_label(node),
                op: node.op_type.clone().unwrap_or_default(),
                problem: format!(
                    "input '{missing}' is not defined by any input, initializer or node"
                ),
            });
        }
        waiting[i] = needs.len();
        for p in needs {
            readers[p].push(i);
        }
        if waiting[i] == 0 {
            ready.push(Reverse(i));
        }
    }
    let mut sorted = Vec::with_capacity(proto.node.len());
    while let Some(Reverse(i)) = ready.pop() {
        sorted.push(&proto.node[i]);
        for &r in &readers[i] {
            waiting[r] -= 1;
            if waiting[r] == 0 {
                ready.push(Reverse(r));
            }
        }
    }
    if let Some(stuck) = waiting.iter().position(|&w| w > 0) {
        return Err(IrError::Cycle {
            node: node_label(&proto.node[stuck]),
        });
    }
    Ok(sorted)
}
