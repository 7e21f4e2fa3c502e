//! Tensors stored outside the model file (ONNX "external data").
//!
//! Loading resolves every external tensor into `raw_data` so the rest of pare sees one
//! self-contained message. Locations must stay inside the model's folder: an absolute path or one
//! that climbs out with `..` is refused, as the ONNX spec requires.

use crate::proto::{tensor_proto::DataLocation, GraphProto, ModelProto, NodeProto, TensorProto};
use crate::OnnxError;
use std::path::{Component, Path};

/// The number of bytes the raw data of a tensor with this ONNX data type and shape occupies, or
/// None for types with no fixed size (strings, undefined) or an invalid shape.
pub fn tensor_byte_len(data_type: i32, dims: &[i64]) -> Option<u64> {
    let bits: u64 = match data_type {
        2 | 3 | 9 | 17..=20 | 24 => 8,
        4 | 5 | 10 | 16 => 16,
        1 | 6 | 12 => 32,
        7 | 11 | 13 | 14 => 64,
        15 => 128,
        21..=23 => 4,
        25 | 26 => 2,
        _ => return None,
    };
    let mut count: u64 = 1;
    for &d in dims {
        count = count.checked_mul(u64::try_from(d).ok()?)?;
    }
    count.checked_mul(bits).map(|b| b.div_ceil(8))
}

/// Replaces every external tensor of `model` (initializers, Constant attributes, subgraphs and
/// functions) by its bytes read from the file next to `model_path`.
pub fn inline_external_data(model: &mut ModelProto, model_path: &Path) -> Result<(), OnnxError> {
    let dir = model_path.parent().unwrap_or(Path::new(""));
    let mut visit = |t: &mut TensorProto| inline_tensor(t, dir, model_path);
    if let Some(graph) = model.graph.as_mut() {
        for_each_tensor_in_graph(graph, &mut visit)?;
    }
    for function in &mut model.functions {
        for node in &mut function.node {
            for_each_tensor_in_node(node, &mut visit)?;
        }
    }
    Ok(())
}

fn for_each_tensor_in_graph(
    graph: &mut GraphProto,
    f: &mut impl FnMut(&mut TensorProto) -> Result<(), OnnxError>,
) -> Result<(), OnnxError> {
    for t in &mut graph.initializer {
        f(t)?;
    }
    for s in &mut graph.sparse_initializer {
        s.values.as_mut().map(&mut *f).transpose()?;
        s.indices.as_mut().map(&mut *f).transpose()?;
    }
    for node in &mut graph.node {
        for_each_tensor_in_node(node, f)?;
    }
    Ok(())
}

fn for_each_tensor_in_node(
    node: &mut NodeProto,
    f: &mut impl FnMut(&mut TensorProto) -> Result<(), OnnxError>,
) -> Result<(), OnnxError> {
    for a in &mut node.attribute {
        if let Some(t) = a.t.as_mut() {
            f(t)?;
        }
        for t in &mut a.tensors {
            f(t)?;
        }
        for s in a
            .sparse_tensor
            .iter_mut()
            .chain(a.sparse_tensors.iter_mut())
        {
            s.values.as_mut().map(&mut *f).transpose()?;
            s.indices.as_mut().map(&mut *f).transpose()?;
        }
        for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
            for_each_tensor_in_graph(g, f)?;
        }
    }
    Ok(())
}

fn inline_tensor(t: &mut TensorProto, dir: &Path, model_path: &Path) -> Result<(), OnnxError> {
    if t.data_location != Some(DataLocation::External as i32) {
        return Ok(());
    }
    let name = t.name.clone().unwrap_or_default();
    let fail = |problem: String| OnnxError::ExternalData {
        path: model_path.into(),
        tensor: name.clone(),
        problem,
    };
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    let location =
        entry("location").ok_or_else(|| fail("external data without a 'location' entry".into()))?;
    let number = |key: &str| -> Result<Option<u64>, OnnxError> {
        entry(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| fail(format!("external data '{key}' is not a number: {v}")))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let declared_len = number("length")?;

    let relative = Path::new(&location);
    let escapes = relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(fail(format!(
            "external data location '{location}' leaves the model's folder; \
             ONNX requires a relative path inside it"
        )));
    }
    let data_path = dir.join(relative);
    let bytes = std::fs::read(&data_path).map_err(|e| {
        fail(format!(
            "cannot read external data file {}: {e}; keep it next to the model",
            data_path.display()
        ))
    })?;
    let expected = tensor_byte_len(t.data_type.unwrap_or_default(), &t.dims);
    let len = declared_len
        .or(expected)
        .unwrap_or((bytes.len() as u64).saturating_sub(offset));
    if let (Some(expected), Some(declared)) = (expected, declared_len) {
        if expected != declared {
            return Err(fail(format!(
                "declares {declared} bytes of external data but its type and shape need {expected}"
            )));
        }
    }
    let end = offset.checked_add(len).filter(|&e| e <= bytes.len() as u64);
    let Some(end) = end else {
        return Err(fail(format!(
            "needs bytes {offset}..{} of {}, but the file has only {} bytes; is it truncated?",
            offset.saturating_add(len),
            data_path.display(),
            bytes.len()
        )));
    };
    t.raw_data = Some(bytes[offset as usize..end as usize].to_vec());
    t.external_data.clear();
    t.data_location = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::StringStringEntryProto;

    fn external_tensor(location: &str, dims: Vec<i64>, length: Option<u64>) -> TensorProto {
        let mut entries = vec![("location", location.to_string())];
        if let Some(l) = length {
            entries.push(("length", l.to_string()));
        }
        TensorProto {
            name: Some("w".into()),
            data_type: Some(1),
            dims,
            data_location: Some(DataLocation::External as i32),
            external_data: entries
                .into_iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: Some(k.into()),
                    value: Some(v),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn model_with(t: TensorProto) -> ModelProto {
        ModelProto {
            graph: Some(GraphProto {
                initializer: vec![t],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn byte_lengths_follow_the_data_type() {
        assert_eq!(tensor_byte_len(1, &[2, 3]), Some(24));
        assert_eq!(tensor_byte_len(7, &[5]), Some(40));
        assert_eq!(tensor_byte_len(22, &[3]), Some(2));
        assert_eq!(tensor_byte_len(8, &[3]), None);
        assert_eq!(tensor_byte_len(1, &[-1]), None);
    }

    #[test]
    fn external_tensors_are_read_into_raw_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.data"), [0u8; 8]).unwrap();
        let mut m = model_with(external_tensor("m.data", vec![2], None));
        inline_external_data(&mut m, &dir.path().join("m.onnx")).unwrap();
        let t = &m.graph.unwrap().initializer[0];
        assert_eq!(t.raw_data.as_deref(), Some(&[0u8; 8][..]));
        assert!(t.external_data.is_empty());
    }

    #[test]
    fn missing_short_and_escaping_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(dir.path().join("short.data"), [0u8; 4]).unwrap();
        let cases = [
            (external_tensor("absent.data", vec![2], None), "cannot read"),
            (external_tensor("short.data", vec![2], None), "truncated"),
            (external_tensor("short.data", vec![2], Some(4)), "declares"),
            (
                external_tensor("../x.data", vec![2], None),
                "leaves the model's folder",
            ),
            (
                external_tensor("/etc/passwd", vec![2], None),
                "leaves the model's folder",
            ),
        ];
        for (tensor, expected) in cases {
            let e = inline_external_data(&mut model_with(tensor), &model)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected) && e.contains("m.onnx"), "{e}");
        }
    }
}
