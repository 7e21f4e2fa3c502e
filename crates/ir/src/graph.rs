//! The graph: nodes in topological order over named values, with small typed ids.

use crate::{Op, Shape, Tensor};
use pare_onnx::proto::{
    FunctionProto, OperatorSetIdProto, StringStringEntryProto, TrainingInfoProto, ValueInfoProto,
};

/// Index of a value in `Graph::values`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// Index of a node in `Graph::nodes` (its position in topological order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueSource {
    /// A graph input fed at run time.
    Input,
    /// A constant: a parameter or a constant tensor.
    Initializer(Tensor),
    /// The given output of a node.
    Node(NodeId),
}

/// A named tensor flowing through the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub name: String,
    pub source: ValueSource,
    /// Inferred or declared shape; None only downstream of an Opaque op whose output the model
    /// does not declare.
    pub shape: Option<Shape>,
    /// ONNX element type (1 = float32, 7 = int64, …); 0 when unknown.
    pub elem_type: i32,
    /// The model's own declaration (graph input/output or value_info, with its doc string and
    /// metadata), exported as it was except for the shape, which follows the graph.
    pub declared: Option<ValueInfoProto>,
}

impl Value {
    pub fn initializer(&self) -> Option<&Tensor> {
        match &self.source {
            ValueSource::Initializer(t) => Some(t),
            _ => None,
        }
    }
}

/// One operator application.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// None where an optional ONNX input is left out (an empty name).
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
    pub doc_string: Option<String>,
    /// The node's own metadata (exporters record the source module here).
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// What the model carries beside its graph, kept so export is faithful.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelMeta {
    pub ir_version: Option<i64>,
    pub opset_import: Vec<OperatorSetIdProto>,
    pub producer_name: Option<String>,
    pub producer_version: Option<String>,
    pub domain: Option<String>,
    pub model_version: Option<i64>,
    pub doc_string: Option<String>,
    pub metadata_props: Vec<StringStringEntryProto>,
    pub functions: Vec<FunctionProto>,
    pub training_info: Vec<TrainingInfoProto>,
    pub graph_name: Option<String>,
    pub graph_doc_string: Option<String>,
    pub graph_metadata_props: Vec<StringStringEntryProto>,
}

impl ModelMeta {
    /// The version of the default ONNX operator set the model imports.
    pub fn opset(&self) -> i64 {
        self.opset_import
            .iter()
            .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
            .and_then(|o| o.version)
            .unwrap_or(1)
    }
}

/// A model's computation graph. Invariant: `nodes` is in topological order, and every input of a
/// node is a graph input, an initializer or an output of an earlier node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub meta: ModelMeta,
}

impl Graph {
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0 as usize]
    }

    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.0 as usize]
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    pub fn value_ids(&self) -> impl Iterator<Item = ValueId> {
        (0..self.values.len() as u32).map(ValueId)
    }

    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.value_ids().find(|&v| self.value(v).name == name)
    }

    /// The constant behind an input of a node, if that input is an initializer.
    pub fn const_input(&self, node: NodeId, index: usize) -> Option<&Tensor> {
        let v = (*self.node(node).inputs.get(index)?)?;
        self.value(v).initializer()
    }

    /// The shape of an input of a node, if known.
    pub fn input_shape(&self, node: NodeId, index: usize) -> Option<&Shape> {
        let v = (*self.node(node).inputs.get(index)?)?;
        self.value(v).shape.as_ref()
    }

    /// The nodes that read each value, indexed by ValueId.
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut out = vec![Vec::new(); self.values.len()];
        for id in self.node_ids() {
            for v in self.node(id).inputs.iter().flatten() {
                if !out[v.0 as usize].contains(&id) {
                    out[v.0 as usize].push(id);
                }
            }
        }
        out
    }

    /// Adds a value and returns its id.
    pub fn add_value(&mut self, name: &str, source: ValueSource) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        let (shape, elem_type) = match &source {
            ValueSource::Initializer(t) => (Some(Shape::known(&t.shape())), t.data_type()),
            _ => (None, 0),
        };
        self.values.push(Value {
            name: name.to_string(),
            source,
            shape,
            elem_type,
            declared: None,
        });
        id
    }

    /// Keeps the nodes for which `keep` holds. The outputs of removed nodes must no longer refer
    /// to them (they were replaced by initializers) or be unused.
    pub fn retain_nodes(&mut self, keep: impl Fn(NodeId) -> bool) {
        let keep_nodes: Vec<bool> = self.node_ids().map(keep).collect();
        let keep_values = vec![true; self.values.len()];
        self.compact(&keep_nodes, &keep_values);
    }

    /// Removes nodes whose outputs reach no graph output and values nobody uses, keeping graph
    /// inputs. Ids are renumbered; order is preserved.
    pub fn remove_unused(&mut self) {
        let mut live_values = vec![false; self.values.len()];
        for v in self.inputs.iter().chain(&self.outputs) {
            live_values[v.0 as usize] = true;
        }
        let mut live_nodes = vec![false; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|o| live_values[o.0 as usize]) {
                live_nodes[i] = true;
                for v in node.inputs.iter().flatten() {
                    live_values[v.0 as usize] = true;
                }
                // A live node keeps all its outputs, even unread ones, so its arity is unchanged.
                for o in &node.outputs {
                    live_values[o.0 as usize] = true;
                }
            }
        }
        self.compact(&live_nodes, &live_values);
    }

    fn compact(&mut self, keep_nodes: &[bool], keep_values: &[bool]) {
        let renumber = |keep: &[bool]| -> Vec<Option<u32>> {
            let mut next = 0;
            keep.iter()
                .map(|&k| {
                    k.then(|| {
                        next += 1;
                        next - 1
                    })
                })
                .collect()
        };
        let node_map = renumber(keep_nodes);
        let value_map = renumber(keep_values);
        let vmap = |v: ValueId| ValueId(value_map[v.0 as usize].expect("kept value"));
        let values = std::mem::take(&mut self.values);
        self.values = values
            .into_iter()
            .zip(keep_values)
            .filter(|(_, &k)| k)
            .map(|(mut value, _)| {
                if let ValueSource::Node(n) = value.source {
                    let kept = node_map[n.0 as usize].expect("a kept value's producer is kept");
                    value.source = ValueSource::Node(NodeId(kept));
                }
                value
            })
            .collect();
        let nodes = std::mem::take(&mut self.nodes);
        self.nodes = nodes
            .into_iter()
            .zip(keep_nodes)
            .filter(|(_, &k)| k)
            .map(|(mut n, _)| {
                n.inputs = n.inputs.iter().map(|v| v.map(vmap)).collect();
                n.outputs = n.outputs.iter().map(|&v| vmap(v)).collect();
                n
            })
            .collect();
        self.inputs = self.inputs.iter().map(|&v| vmap(v)).collect();
        self.outputs = self.outputs.iter().map(|&v| vmap(v)).collect();
    }
}
