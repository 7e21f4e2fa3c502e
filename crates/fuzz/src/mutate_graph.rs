//! Structure-level mutations of a model's graph: its nodes, the names that wire them, their op
//! types and attributes, and the opsets the model imports.

use crate::dice::Dice;
use pare_onnx::proto::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, OperatorSetIdProto,
};

/// Op types pare models or folds, a few it does not, and names that are not ops at all.
const OP_TYPES: [&str; 34] = [
    "Conv",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Clip",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Concat",
    "Flatten",
    "Reshape",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Softmax",
    "Dropout",
    "Identity",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Slice",
    "Transpose",
    "Constant",
    "ReduceMean",
    "Pad",
    "Split",
    "NotAnOp",
];

/// Attributes the modelled ops read, to add where they do not belong or with values they do not
/// allow.
const ATTRIBUTES: [&str; 16] = [
    "kernel_shape",
    "strides",
    "pads",
    "dilations",
    "group",
    "auto_pad",
    "ceil_mode",
    "axis",
    "axes",
    "perm",
    "transA",
    "transB",
    "alpha",
    "beta",
    "epsilon",
    "allowzero",
];

/// Applies one structural mutation to the graph or the model's header.
pub fn mutate(model: &mut ModelProto, dice: &mut Dice) {
    if dice.one_in(12) {
        mutate_opsets(model, dice);
        return;
    }
    let Some(graph) = model.graph.as_mut() else {
        return;
    };
    match dice.below(5) {
        0 => mutate_node_list(graph, dice),
        1 => rewire(graph, dice),
        2 => {
            if let Some(i) = node_index(graph, dice) {
                let op = OP_TYPES[dice.below(OP_TYPES.len())];
                graph.node[i].op_type = Some(op.into());
            }
        }
        _ => mutate_attribute(graph, dice),
    }
}

fn node_index(graph: &GraphProto, dice: &mut Dice) -> Option<usize> {
    (!graph.node.is_empty()).then(|| dice.below(graph.node.len()))
}

/// Drops, duplicates or moves a node, or reverses the order of them all.
fn mutate_node_list(graph: &mut GraphProto, dice: &mut Dice) {
    let Some(i) = node_index(graph, dice) else {
        return;
    };
    match dice.below(4) {
        0 => {
            graph.node.remove(i);
        }
        1 => {
            let copy = graph.node[i].clone();
            graph.node.insert(dice.below(graph.node.len() + 1), copy);
        }
        2 => {
            let j = dice.below(graph.node.len());
            graph.node.swap(i, j);
        }
        _ => graph.node.reverse(),
    }
}

/// Renames one reference: a node input to a later node's output (a cycle when that node reads
/// this one), to a name nothing defines, or to nothing; a node output to an existing name; a
/// graph input or output.
fn rewire(graph: &mut GraphProto, dice: &mut Dice) {
    let outputs: Vec<String> = graph.node.iter().flat_map(|n| n.output.clone()).collect();
    let names = ["", "dangling", "x"];
    let some_name = |dice: &mut Dice| -> String {
        if dice.one_in(3) {
            names[dice.below(names.len())].to_string()
        } else {
            dice.pick(&outputs).cloned().unwrap_or_default()
        }
    };
    match dice.below(4) {
        0 | 1 => {
            if let Some(i) = node_index(graph, dice) {
                let name = some_name(dice);
                let node = &mut graph.node[i];
                let slot = dice.below(node.input.len() + 1);
                match node.input.get_mut(slot) {
                    Some(input) => *input = name,
                    None => node.input.push(name),
                }
            }
        }
        2 => {
            if let Some(i) = node_index(graph, dice) {
                let name = some_name(dice);
                let node = &mut graph.node[i];
                match node.output.first_mut() {
                    Some(output) if !dice.one_in(4) => *output = name,
                    _ => node.output.clear(),
                }
            }
        }
        _ => {
            let name = some_name(dice);
            let list = if dice.one_in(2) {
                &mut graph.input
            } else {
                &mut graph.output
            };
            let slot = dice.below(list.len());
            match list.get_mut(slot) {
                Some(vi) if !dice.one_in(4) => vi.name = Some(name),
                Some(_) => {
                    list.remove(slot);
                }
                None => {}
            }
        }
    }
}

/// Changes, retypes, drops or adds one attribute of one node.
fn mutate_attribute(graph: &mut GraphProto, dice: &mut Dice) {
    let Some(i) = node_index(graph, dice) else {
        return;
    };
    let node = &mut graph.node[i];
    if node.attribute.is_empty() || dice.one_in(3) {
        let name = ATTRIBUTES[dice.below(ATTRIBUTES.len())];
        node.attribute.push(AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Ints as i32),
            ..Default::default()
        });
    }
    let slot = dice.below(node.attribute.len());
    let a = &mut node.attribute[slot];
    match dice.below(6) {
        0 => {
            node.attribute.remove(slot);
        }
        1 => {
            // The declared type no longer matches the field that holds the value.
            let types = [
                AttributeType::Undefined,
                AttributeType::Float,
                AttributeType::Int,
                AttributeType::String,
                AttributeType::Tensor,
                AttributeType::Ints,
                AttributeType::Floats,
            ];
            a.r#type = Some(types[dice.below(types.len())] as i32);
        }
        2 => a.i = Some(dice.edgy_int()),
        3 => a.f = Some(dice.edgy_float()),
        4 => {
            if let Some(t) = a.t.as_mut() {
                crate::mutate_tensors::mutate_tensor(t, dice);
            } else {
                a.s = Some((0..dice.below(8)).map(|_| dice.byte()).collect());
            }
        }
        _ => {
            let len = dice.below(7);
            let keep = dice.one_in(2) && !a.ints.is_empty();
            if keep {
                let at = dice.below(a.ints.len());
                a.ints[at] = dice.edgy_int();
            } else {
                a.ints = (0..len).map(|_| dice.edgy_int()).collect();
            }
        }
    }
}

/// Sets the default opset to an edge, adds a second entry for it, drops them all, or names an
/// unknown domain.
fn mutate_opsets(model: &mut ModelProto, dice: &mut Dice) {
    match dice.below(4) {
        0 => model.opset_import.clear(),
        1 => model.opset_import.push(OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(dice.edgy_int()),
        }),
        2 => model.ir_version = Some(dice.edgy_int()),
        _ => {
            let version = dice.edgy_int();
            let domain = ["", "ai.onnx", "com.microsoft", "ai.onnx.ml"][dice.below(4)];
            if let Some(o) = model.opset_import.first_mut() {
                o.version = Some(version);
                o.domain = Some(domain.into());
            }
        }
    }
}
