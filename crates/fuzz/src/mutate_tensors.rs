//! Structure-level mutations of what a model declares about its tensors: the shapes of inputs,
//! outputs and value infos, and the dims, data types, bytes and external data of initializers.

use crate::corpus::{Corpus, LINK_OUT, OUTSIDE, PIPE};
use crate::dice::Dice;
use pare_onnx::proto::{
    tensor_proto::DataLocation, tensor_shape_proto::dimension, type_proto, GraphProto,
    StringStringEntryProto, TensorProto, ValueInfoProto,
};

/// Applies one mutation to a declared shape or an initializer.
pub fn mutate(graph: &mut GraphProto, corpus: &Corpus, dice: &mut Dice) {
    if dice.one_in(3) {
        let count = graph.input.len() + graph.output.len() + graph.value_info.len();
        let i = dice.below(count);
        let vi = graph
            .input
            .iter_mut()
            .chain(&mut graph.output)
            .chain(&mut graph.value_info)
            .nth(i);
        if let Some(vi) = vi {
            mutate_declared(vi, dice);
        }
        return;
    }
    let n = graph.initializer.len();
    let Some(t) = graph.initializer.get_mut(dice.below(n)) else {
        return;
    };
    if dice.one_in(4) {
        point_outside(t, corpus, dice);
    } else {
        mutate_tensor(t, dice);
    }
}

/// Changes a declared element type, or a dimension to an edge value or a symbol, or drops the
/// shape's last dimension.
fn mutate_declared(vi: &mut ValueInfoProto, dice: &mut Dice) {
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        return;
    };
    if dice.one_in(4) {
        t.elem_type = Some(dice.below(30) as i32);
        return;
    }
    let Some(shape) = t.shape.as_mut() else {
        return;
    };
    if dice.one_in(5) {
        shape.dim.pop();
        return;
    }
    let n = shape.dim.len();
    if let Some(d) = shape.dim.get_mut(dice.below(n)) {
        d.value = Some(if dice.one_in(4) {
            dimension::Value::DimParam(["N", "", "H"][dice.below(3)].into())
        } else {
            dimension::Value::DimValue(dice.edgy_int())
        });
    }
}

/// Changes one thing about a tensor: a dim, the rank, the data type, or the bytes.
pub fn mutate_tensor(t: &mut TensorProto, dice: &mut Dice) {
    match dice.below(5) {
        0 => {
            let n = t.dims.len();
            match t.dims.get_mut(dice.below(n)) {
                Some(d) => *d = dice.edgy_int(),
                None => t.dims.push(dice.edgy_int()),
            }
        }
        1 => {
            if dice.one_in(2) {
                t.dims.pop();
            } else {
                t.dims.push(dice.edgy_int());
            }
        }
        2 => t.data_type = Some(dice.below(30) as i32),
        3 => {
            if let Some(raw) = t.raw_data.as_mut() {
                raw.truncate(dice.below(raw.len()));
            } else {
                t.float_data.truncate(dice.below(t.float_data.len()));
                t.int64_data.truncate(dice.below(t.int64_data.len()));
            }
        }
        _ => {
            // Values that break arithmetic, where the tensor keeps its floats.
            if let Some(raw) = t.raw_data.as_mut().filter(|r| r.len() >= 4) {
                let at = dice.below(raw.len() / 4) * 4;
                raw[at..at + 4].copy_from_slice(&dice.edgy_float().to_le_bytes());
            } else if let Some(i) = t.int64_data.first_mut() {
                *i = dice.edgy_int();
            } else {
                t.float_data.push(dice.edgy_float());
            }
        }
    }
}

/// Moves a tensor's bytes to an external data location that is absolute, climbs out of the
/// model's folder, is a link or pipe, is missing, or is a real data file at an offset or length
/// that does not fit.
fn point_outside(t: &mut TensorProto, corpus: &Corpus, dice: &mut Dice) {
    let absolute = corpus.outside_path();
    let real = dice.pick(&corpus.data_files).cloned().unwrap_or_default();
    let locations = [
        absolute.to_string_lossy().into_owned(),
        OUTSIDE.to_string(),
        LINK_OUT.to_string(),
        PIPE.to_string(),
        "missing.bin".to_string(),
        String::new(),
        ".".to_string(),
        format!("sub/../{real}"),
        real.clone(),
        real,
    ];
    let location = locations[dice.below(locations.len())].clone();
    let mut entries = vec![("location", location)];
    if dice.one_in(2) {
        let offsets = ["0", "4096", "-1", "18446744073709551615", "x"];
        entries.push(("offset", offsets[dice.below(offsets.len())].into()));
    }
    if dice.one_in(2) {
        let lengths = ["0", "16", "18446744073709551615", "9223372036854775807"];
        entries.push(("length", lengths[dice.below(lengths.len())].into()));
    }
    t.raw_data = None;
    t.data_location = Some(DataLocation::External as i32);
    t.external_data = entries
        .into_iter()
        .map(|(k, v)| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        })
        .collect();
}
