//! Tensors stored outside the model file (ONNX "external data").
//!
//! Loading resolves every external tensor into `raw_data` so the rest of pare sees one
//! self-contained message. Locations must stay inside the model's folder: an absolute path, one
//! that climbs out with `..`, or a symbolic link that points out is refused, as the ONNX spec
//! requires. Declared ranges are checked against the file's length before any allocation.

use crate::file::regular_file_size;
use crate::proto::{tensor_proto::DataLocation, GraphProto, ModelProto, NodeProto, TensorProto};
use crate::OnnxError;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

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
/// functions) by its bytes read from the file next to `model_path`, and returns the files read
/// (canonical paths). Each file is opened once and only the ranges the tensors name are read.
pub fn inline_external_data(
    model: &mut ModelProto,
    model_path: &Path,
) -> Result<Vec<PathBuf>, OnnxError> {
    let mut files = DataFiles {
        dir: model_path.parent().unwrap_or(Path::new("")).to_path_buf(),
        model_path: model_path.to_path_buf(),
        open: BTreeMap::new(),
    };
    let mut visit = |t: &mut TensorProto| files.inline(t);
    if let Some(graph) = model.graph.as_mut() {
        for_each_tensor_in_graph(graph, &mut visit)?;
    }
    for function in &mut model.functions {
        for node in &mut function.node {
            for_each_tensor_in_node(node, &mut visit)?;
        }
    }
    Ok(files.open.into_keys().collect())
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

/// The external data files of one model, each opened once.
struct DataFiles {
    dir: PathBuf,
    model_path: PathBuf,
    /// By canonical path: the open file and its length.
    open: BTreeMap<PathBuf, (File, u64)>,
}

impl DataFiles {
    fn inline(&mut self, t: &mut TensorProto) -> Result<(), OnnxError> {
        if t.data_location != Some(DataLocation::External as i32) {
            return Ok(());
        }
        let name = t.name.clone().unwrap_or_default();
        let model_path = self.model_path.clone();
        let fail = |problem: String| OnnxError::ExternalData {
            path: model_path.clone(),
            tensor: name.clone(),
            problem,
        };
        let entry = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key.as_deref() == Some(key))
                .and_then(|e| e.value.clone())
        };
        let location = entry("location")
            .ok_or_else(|| fail("external data without a 'location' entry".into()))?;
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
        let expected = tensor_byte_len(t.data_type.unwrap_or_default(), &t.dims);
        if let (Some(expected), Some(declared)) = (expected, declared_len) {
            if expected != declared {
                return Err(fail(format!(
                    "declares {declared} bytes of external data but its type and shape need {expected}"
                )));
            }
        }

        let (path, file, file_len) = self.open(&location).map_err(fail)?;
        let len = declared_len
            .or(expected)
            .unwrap_or(file_len.saturating_sub(offset));
        // The range is checked against the bytes present before anything is allocated.
        match offset.checked_add(len) {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(fail(format!(
                    "needs bytes {offset}..{} of {}, but the file has only {file_len} bytes; is it truncated?",
                    offset.saturating_add(len),
                    path.display(),
                )))
            }
        }
        let mut bytes = vec![0u8; len as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        t.raw_data = Some(bytes);
        t.external_data.clear();
        t.data_location = None;
        Ok(())
    }

    /// Opens the data file at `location`, which must be a regular file inside the model's folder
    /// once every symbolic link is resolved.
    fn open(&mut self, location: &str) -> Result<(PathBuf, &mut File, u64), String> {
        let relative = Path::new(location);
        let escapes = relative.is_absolute()
            || relative
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        let outside = || {
            format!(
                "external data location '{location}' leaves the model's folder; \
                 ONNX requires a relative path inside it"
            )
        };
        if escapes {
            return Err(outside());
        }
        let joined = self.dir.join(relative);
        let path = joined.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "cannot find external data file {}; keep it in the model's folder",
                joined.display()
            ),
            _ => format!("cannot open external data file {}: {e}", joined.display()),
        })?;
        let dir = self
            .dir
            .canonicalize()
            .or_else(|_| Path::new(".").canonicalize())
            .map_err(|e| format!("cannot resolve the model's folder: {e}"))?;
        if !path.starts_with(&dir) {
            return Err(format!(
                "{} (a symbolic link to {}): {}",
                joined.display(),
                path.display(),
                outside()
            ));
        }
        if !self.open.contains_key(&path) {
            let len = regular_file_size(&path)
                .map_err(|e| format!("external data file {}: {e}", joined.display()))?;
            let file = File::open(&path)
                .map_err(|e| format!("cannot open external data file {}: {e}", joined.display()))?;
            self.open.insert(path.clone(), (file, len));
        }
        let (file, len) = self.open.get_mut(&path).expect("inserted above");
        Ok((path, file, *len))
    }
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
            (external_tensor("absent.data", vec![2], None), "cannot find"),
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

    fn with_offset(mut t: TensorProto, offset: u64) -> TensorProto {
        t.external_data.push(StringStringEntryProto {
            key: Some("offset".into()),
            value: Some(offset.to_string()),
        });
        t
    }

    #[test]
    fn many_tensors_share_one_file_and_each_gets_its_own_range() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..2000u32 * 4).map(|i| (i / 4) as u8).collect();
        std::fs::write(dir.path().join("w.bin"), &bytes).unwrap();
        let mut m = ModelProto {
            graph: Some(GraphProto {
                initializer: (0..2000u64)
                    .map(|i| with_offset(external_tensor("w.bin", vec![1], None), 4 * i))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let files = inline_external_data(&mut m, &dir.path().join("m.onnx")).unwrap();
        assert_eq!(files, [dir.path().join("w.bin").canonicalize().unwrap()]);
        for (i, t) in m.graph.unwrap().initializer.iter().enumerate() {
            assert_eq!(t.raw_data.as_deref(), Some(&[i as u8; 4][..]));
        }
    }

    #[test]
    fn an_offset_past_the_end_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w.bin"), [0u8; 8]).unwrap();
        // 10 GB in, and a tensor of 10 GB: refused from the file's length alone.
        let far = with_offset(external_tensor("w.bin", vec![1], None), 10 << 30);
        let huge = external_tensor("w.bin", vec![1 << 31, 5], None);
        for t in [far, huge] {
            let e = inline_external_data(&mut model_with(t), &dir.path().join("m.onnx"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("truncated"), "{e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn links_out_of_the_folder_and_pipes_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), [0u8; 8]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("w.bin"))
            .unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(dir.path().join("pipe.bin"))
            .status()
            .unwrap();
        assert!(made.success());
        let model = dir.path().join("m.onnx");
        let e = inline_external_data(
            &mut model_with(external_tensor("w.bin", vec![2], None)),
            &model,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("symbolic link") && e.contains("leaves the model's folder"),
            "{e}"
        );
        let e = inline_external_data(
            &mut model_with(external_tensor("pipe.bin", vec![2], None)),
            &model,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("pipe.bin") && e.contains("a pipe"), "{e}");
    }
}
