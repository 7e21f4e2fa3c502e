//! Reading and writing ONNX files.

use crate::{external, proto::ModelProto, OnnxError};
use prost::Message;
use std::io::Write;
use std::path::Path;

/// Decodes a model from protobuf bytes. `path` only names the source in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<ModelProto, OnnxError> {
    if bytes.is_empty() {
        return Err(OnnxError::Empty { path: path.into() });
    }
    let model = ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
        path: path.into(),
        reason: e.to_string(),
    })?;
    // Random bytes can decode as a message of unknown fields only; a model always has a graph.
    if model.graph.is_none() {
        return Err(OnnxError::NoGraph { path: path.into() });
    }
    Ok(model)
}

/// Encodes a model to protobuf bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Reads a model file and loads the tensors it keeps in external data files into memory, so the
/// returned message is self-contained.
pub fn read_model(path: &Path) -> Result<ModelProto, OnnxError> {
    let bytes = std::fs::read(path).map_err(|cause| OnnxError::Read {
        path: path.into(),
        cause,
    })?;
    let mut model = decode(&bytes, path)?;
    external::inline_external_data(&mut model, path)?;
    Ok(model)
}

/// Writes a self-contained model to `path` atomically.
pub fn write_model(path: &Path, model: &ModelProto) -> Result<(), OnnxError> {
    write_atomic(path, &encode(model))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so a reader never
/// sees a half-written file and a failed write leaves any existing file as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OnnxError> {
    let err = |cause| OnnxError::Write {
        path: path.into(),
        cause,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path names no file",
        ))
    })?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_random_bytes_are_refused_with_the_file_name() {
        let p = Path::new("bad.onnx");
        let e = decode(&[], p).unwrap_err().to_string();
        assert!(e.contains("bad.onnx") && e.contains("empty"), "{e}");
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let e = decode(&noise, p).unwrap_err().to_string();
        assert!(e.contains("bad.onnx"), "{e}");
    }

    #[test]
    fn atomic_write_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"old contents that are longer").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}
