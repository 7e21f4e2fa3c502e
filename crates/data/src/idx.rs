//! The IDX format of MNIST (and Fashion-MNIST, EMNIST, KMNIST): big-endian header, raw values;
//! gzipped or not.
//!
//! Only files of unsigned bytes are read; it must not guess at IDX files of other element types.

use crate::{file, DataError, Dataset, Splits};
use flate2::read::GzDecoder;
use ndarray::Array4;
use std::path::{Path, PathBuf};

/// The decoded contents of an IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (type code 0x08), gzipped (detected from its magic bytes)
/// or raw.
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let raw = file::read(path)?;
    let bad = |problem: String| DataError::Malformed {
        path: path.into(),
        problem,
    };
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        file::read_decompressed(GzDecoder::new(&raw[..]), raw.len() as u64)
            .map_err(|e| bad(format!("gzip stream: {e}")))?
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(
            "not an IDX file (the magic number must start with two zero bytes)".into(),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "IDX element type 0x{:02x} is not supported; only unsigned bytes (0x08) are",
            bytes[2]
        )));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(bad(format!(
            "header declares {rank} dimensions but the file ends first"
        )));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    let data = &bytes[header..];
    if data.len() != count {
        return Err(bad(format!(
            "header declares dimensions {dims:?} ({count} values) but the file holds {} values; is it truncated?",
            data.len()
        )));
    }
    Ok(IdxArray {
        dims,
        data: data.to_vec(),
    })
}

/// What `load` looks for, for the message when no format is found.
pub(crate) const EXPECTED: &str = "MNIST IDX (train-images-idx3-ubyte, train-labels-idx1-ubyte, \
    t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally .gz)";

/// Finds `<stem>` or `<stem>.gz` in `dir`.
fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

const FILES: [(&str, &str); 2] = [
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
];

/// Loads an MNIST-style folder: the four standard IDX files, gzipped or raw; `None` if `dir`
/// holds none of them.
pub(crate) fn load(dir: &Path) -> Option<Result<Splits, DataError>> {
    let any = FILES
        .iter()
        .flat_map(|(a, b)| [a, b])
        .any(|name| find(dir, name).is_some());
    any.then(|| load_all(dir))
}

fn load_all(dir: &Path) -> Result<Splits, DataError> {
    let path = |name: &str| {
        find(dir, name).ok_or_else(|| DataError::Incomplete {
            dir: dir.into(),
            format: "an MNIST IDX dataset",
            missing: format!("{name} (or {name}.gz)"),
        })
    };
    let [(train_x, train_y), (test_x, test_y)] = FILES;
    Ok(Splits {
        train: load_pair(&path(train_x)?, &path(train_y)?)?,
        test: load_pair(&path(test_x)?, &path(test_y)?)?,
    })
}

fn load_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset, DataError> {
    let images = read_idx(images_path)?;
    let labels = read_idx(labels_path)?;
    let [n, h, w] = images.dims[..] else {
        return Err(DataError::Malformed {
            path: images_path.into(),
            problem: format!("expected 3 dimensions [N, H, W], found {:?}", images.dims),
        });
    };
    if labels.dims.len() != 1 {
        return Err(DataError::Malformed {
            path: labels_path.into(),
            problem: format!("expected 1 dimension [N], found {:?}", labels.dims),
        });
    }
    if labels.dims[0] != n {
        return Err(DataError::CountMismatch {
            images: images_path.into(),
            n_images: n,
            labels: labels_path.into(),
            n_labels: labels.dims[0],
        });
    }
    let pixels = images.data.iter().map(|&p| p as f32 / 255.0).collect();
    let images = Array4::from_shape_vec((n, 1, h, w), pixels).expect("size checked by read_idx");
    Ok(Dataset::new(
        images,
        labels.data.iter().map(|&l| l as usize).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn raw_and_gzipped_files_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx_bytes(&[2, 2], &[1, 2, 3, 4]);
        std::fs::write(dir.path().join("a"), &bytes).unwrap();
        std::fs::write(dir.path().join("b"), gzip(&bytes)).unwrap();
        let a = read_idx(&dir.path().join("a")).unwrap();
        assert_eq!(a, read_idx(&dir.path().join("b")).unwrap());
        assert_eq!(a.dims, vec![2, 2]);
    }

    #[test]
    fn truncated_and_foreign_files_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, idx_bytes(&[3, 2], &[1, 2, 3])).unwrap();
        assert!(read_idx(&p).unwrap_err().to_string().contains("truncated"));
        std::fs::write(&p, b"\x89PNG....").unwrap();
        assert!(read_idx(&p)
            .unwrap_err()
            .to_string()
            .contains("not an IDX file"));
    }

    #[test]
    fn a_folder_loads_into_scaled_splits() {
        let dir = tempfile::tempdir().unwrap();
        for (images, labels) in FILES {
            std::fs::write(
                dir.path().join(images),
                idx_bytes(&[2, 1, 2], &[0, 255, 51, 0]),
            )
            .unwrap();
            std::fs::write(
                dir.path().join(format!("{labels}.gz")),
                gzip(&idx_bytes(&[2], &[7, 3])),
            )
            .unwrap();
        }
        let s = load(dir.path()).unwrap().unwrap();
        assert_eq!(s.train.image_shape(), [1, 1, 2]);
        assert_eq!(s.test.labels, vec![7, 3]);
        assert_eq!(s.train.images[[0, 0, 0, 1]], 1.0);
        assert_eq!(s.train.images[[1, 0, 0, 0]], 0.2);
        assert_eq!(s.train.class_count(), 8);
    }

    #[test]
    fn label_count_must_match_image_count() {
        let dir = tempfile::tempdir().unwrap();
        for (images, labels) in FILES {
            std::fs::write(dir.path().join(images), idx_bytes(&[2, 1, 1], &[0, 1])).unwrap();
            std::fs::write(dir.path().join(labels), idx_bytes(&[3], &[0, 1, 2])).unwrap();
        }
        let e = load(dir.path()).unwrap().unwrap_err().to_string();
        assert!(e.contains("2 images") && e.contains("3 labels"), "{e}");
    }

    #[test]
    fn a_folder_missing_one_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILES[0].0), idx_bytes(&[1, 1, 1], &[0])).unwrap();
        let e = load(dir.path()).unwrap().unwrap_err().to_string();
        assert!(
            e.contains("train-labels-idx1-ubyte (or train-labels-idx1-ubyte.gz) is missing"),
            "{e}"
        );
        assert!(load(tempfile::tempdir().unwrap().path()).is_none());
    }
}
