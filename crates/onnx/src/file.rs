//! Reading and writing ONNX files.
//!
//! Reads accept regular files only (a pipe or device could block or never end) of at most the
//! 2 GiB protobuf allows. Writes go to a temporary file beside the destination that is renamed
//! over it, so a reader never sees half a model; a destination that is not a regular file (a
//! device, pipe or folder) is refused rather than replaced, and `remove_unfinished_writes` lets an
//! interrupt handler delete the temporary files of writes in flight.

use crate::{external, proto::ModelProto, OnnxError};
use prost::Message;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Protobuf messages cannot exceed 2 GiB; larger models keep their weights as external data.
const MAX_MODEL_BYTES: u64 = 2 << 30;

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
    read_model_and_data_files(path).map(|(model, _)| model)
}

/// `read_model`, also returning the external data files it read (canonical paths), so a caller
/// can refuse to write over any file the model came from.
pub fn read_model_and_data_files(path: &Path) -> Result<(ModelProto, Vec<PathBuf>), OnnxError> {
    let size = regular_file_size(path).map_err(|cause| OnnxError::Read {
        path: path.into(),
        cause,
    })?;
    if size > MAX_MODEL_BYTES {
        return Err(OnnxError::TooLarge {
            path: path.into(),
            bytes: size,
        });
    }
    let bytes = std::fs::read(path).map_err(|cause| OnnxError::Read {
        path: path.into(),
        cause,
    })?;
    let mut model = decode(&bytes, path)?;
    let files = external::inline_external_data(&mut model, path)?;
    Ok((model, files))
}

/// The size of the regular file at `path` (symbolic links followed); an error for anything else.
pub(crate) fn regular_file_size(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file (it is {})", kind_of(&meta)),
        ));
    }
    Ok(meta.len())
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a pipe";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// Writes a self-contained model to `path` atomically.
pub fn write_model(path: &Path, model: &ModelProto) -> Result<(), OnnxError> {
    write_atomic(path, &encode(model))
}

/// Temporary files of writes in flight. The rename that finishes a write happens under this
/// lock, so an interrupt sees each write either pending (and deletes its file) or finished.
struct Unfinished(Mutex<BTreeSet<PathBuf>>);

impl Unfinished {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<PathBuf>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove_all(&self) {
        for tmp in std::mem::take(&mut *self.lock()) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

static UNFINISHED: Unfinished = Unfinished(Mutex::new(BTreeSet::new()));

/// Deletes the temporary files of writes still in flight; an interrupt handler calls it before the
/// process exits, so no hidden `.name.tmp` files are left beside the destinations.
pub fn remove_unfinished_writes() {
    UNFINISHED.remove_all();
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so a reader never
/// sees a half-written file and a failed write leaves any existing file as it was. A symbolic link
/// is written through (the link stays, its target is replaced); a destination that exists but is
/// not a regular file is refused.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OnnxError> {
    let err = |cause| OnnxError::Write {
        path: path.into(),
        cause,
    };
    // A replaced file keeps its permissions.
    let mut replaced_permissions = None;
    let destination = match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {
            replaced_permissions = Some(meta.permissions());
            path.canonicalize().map_err(err)?
        }
        Ok(meta) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "it is {}, not a regular file; pare writes models and reports to regular files only",
                    kind_of(&meta)
                ),
            )))
        }
        Err(_) => path.to_path_buf(),
    };
    let dir = match destination.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = destination.file_name().ok_or_else(|| {
        err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path names no file",
        ))
    })?;
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Created as 0666 less the umask, as File::create would, not tempfile's private 0600.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(err)?;
    if let Some(permissions) = replaced_permissions {
        tmp.as_file().set_permissions(permissions).map_err(err)?;
    }
    let tmp_path = tmp.path().to_path_buf();
    UNFINISHED.lock().insert(tmp_path.clone());
    let written = tmp.write_all(bytes).and_then(|()| tmp.as_file().sync_all());
    let mut pending = UNFINISHED.lock();
    // An interrupt that came first already deleted the file, and the process is exiting.
    let still_pending = pending.remove(&tmp_path);
    let result = match (written, still_pending) {
        (Err(e), _) => Err(e),
        (Ok(()), false) => Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "interrupted",
        )),
        (Ok(()), true) => tmp.persist(&destination).map(drop).map_err(|e| e.error),
    };
    drop(pending);
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

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn atomic_write_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"old contents that are longer").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(entries(dir.path()), ["m.onnx"], "no temporary file is left");
    }

    #[cfg(unix)]
    #[test]
    fn a_replaced_file_keeps_its_permissions_and_a_new_one_is_not_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"new").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // A new file gets 0666 less the umask, which a plain File::create also gets.
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let expected = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
        let fresh = dir.path().join("fresh.onnx");
        write_atomic(&fresh, b"new").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, expected);
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_is_written_through_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.onnx");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.onnx");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }

    /// A FIFO stands in for a device node: making one needs no privileges, and it is not a
    /// regular file either. Reading one must not block, writing must not replace it.
    #[cfg(unix)]
    #[test]
    fn pipes_and_folders_are_neither_read_nor_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.onnx");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = write_atomic(&fifo, b"model").unwrap_err().to_string();
        assert!(e.contains("pipe.onnx") && e.contains("a pipe"), "{e}");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        let e = read_model(&fifo).unwrap_err().to_string();
        assert!(e.contains("pipe.onnx") && e.contains("a pipe"), "{e}");
        let e = read_model(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a folder"), "{e}");
        let e = write_atomic(dir.path(), b"model").unwrap_err().to_string();
        assert!(e.contains("a folder"), "{e}");
        assert_eq!(entries(dir.path()), ["pipe.onnx"], "nothing was left");
    }

    #[test]
    fn an_interrupt_deletes_the_files_of_unfinished_writes() {
        let dir = tempfile::tempdir().unwrap();
        let unfinished = Unfinished(Mutex::new(BTreeSet::new()));
        let tmp = dir.path().join(".m.onnx.x.tmp");
        std::fs::write(&tmp, b"half a model").unwrap();
        unfinished.lock().insert(tmp.clone());
        unfinished.remove_all();
        assert!(entries(dir.path()).is_empty());
        assert!(unfinished.lock().is_empty());
    }
}
