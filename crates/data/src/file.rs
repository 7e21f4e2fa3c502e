//! Opening dataset files: regular files only (a pipe or device named like a dataset file would
//! block or never end), and decompression bounded relative to the compressed size (a small archive
//! must not expand into gigabytes).

use crate::DataError;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// How many times its compressed size a compressed member may expand to. Image data compresses a
/// few times over (MNIST about 5×); a larger ratio is a decompression bomb, or data better stored
/// uncompressed.
pub(crate) const MAX_EXPANSION: u64 = 100;

/// Members smaller than this may expand past `MAX_EXPANSION` (tiny, highly regular arrays do).
const SMALL: u64 = 16 << 20;

/// Opens `path`, which must be a regular file (symbolic links followed).
pub(crate) fn open(path: &Path) -> Result<File, DataError> {
    let err = |cause| DataError::Read {
        path: path.into(),
        cause,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if !meta.is_file() {
        return Err(DataError::Malformed {
            path: path.into(),
            problem: "not a regular file (a folder, pipe or device); datasets are read from \
                      regular files only"
                .into(),
        });
    }
    File::open(path).map_err(err)
}

/// Reads the whole regular file at `path`.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut bytes = Vec::new();
    open(path)?
        .read_to_end(&mut bytes)
        .map_err(|cause| DataError::Read {
            path: path.into(),
            cause,
        })?;
    Ok(bytes)
}

/// Reads a decompressing `reader` to its end, refusing to produce more than `MAX_EXPANSION` times
/// `compressed_len` bytes (or 16 MiB, whichever is more). The message says what to do.
pub(crate) fn read_decompressed(reader: impl Read, compressed_len: u64) -> Result<Vec<u8>, String> {
    let limit = compressed_len.saturating_mul(MAX_EXPANSION).max(SMALL);
    let mut out = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("the compressed data is corrupt: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!(
            "{compressed_len} compressed bytes expand to more than {limit} bytes ({MAX_EXPANSION}× \
             or more): refused as a likely decompression bomb; store this data uncompressed"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    #[test]
    fn a_bomb_is_refused_after_reading_only_its_limit() {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&vec![0u8; 64 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        let e = read_decompressed(flate2::read::GzDecoder::new(&bomb[..]), bomb.len() as u64)
            .unwrap_err();
        assert!(e.contains("decompression bomb"), "{e}");
        let plain = read_decompressed(&b"abc"[..], 3).unwrap();
        assert_eq!(plain, b"abc");
    }

    #[cfg(unix)]
    #[test]
    fn a_pipe_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("train-images-idx3-ubyte");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = read(&fifo).unwrap_err().to_string();
        assert!(
            e.contains("train-images") && e.contains("regular file"),
            "{e}"
        );
    }
}
