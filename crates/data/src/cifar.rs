//! The binary versions of CIFAR-10 and CIFAR-100: fixed-size records of label bytes followed by a
//! 3×32×32 image, channel-major (all red, then green, then blue).
//!
//! It reads only these record files; it must not guess at the Python-pickle versions.

use crate::{file, DataError, Dataset, Splits};
use ndarray::Array4;
use std::path::{Path, PathBuf};

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;

/// One of the two CIFAR layouts.
struct Layout {
    name: &'static str,
    /// The folder the official archive unpacks to, looked into when `dir` itself has no files.
    subfolder: &'static str,
    train: &'static [&'static str],
    test: &'static str,
    /// Class count per label byte; the last byte is the label kept (CIFAR-100's fine label).
    label_classes: &'static [u8],
}

const CIFAR10: Layout = Layout {
    name: "CIFAR-10",
    subfolder: "cifar-10-batches-bin",
    train: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ],
    test: "test_batch.bin",
    label_classes: &[10],
};

const CIFAR100: Layout = Layout {
    name: "CIFAR-100",
    subfolder: "cifar-100-binary",
    train: &["train.bin"],
    test: "test.bin",
    // Coarse (20 superclasses), then fine (100 classes).
    label_classes: &[20, 100],
};

/// What `load` looks for, for the message when no format is found.
pub(crate) const EXPECTED: &str = "CIFAR-10 (data_batch_1.bin..data_batch_5.bin and test_batch.bin, \
    possibly in cifar-10-batches-bin/), CIFAR-100 (train.bin and test.bin, possibly in cifar-100-binary/)";

/// Loads a CIFAR-10 or CIFAR-100 folder; `None` if `dir` holds neither layout's files.
pub(crate) fn load(dir: &Path) -> Option<Result<Splits, DataError>> {
    for layout in [CIFAR10, CIFAR100] {
        for base in [dir.to_path_buf(), dir.join(layout.subfolder)] {
            let files = || layout.train.iter().chain([&layout.test]);
            if files().any(|f| base.join(f).is_file()) {
                return Some(load_layout(&base, &layout));
            }
        }
    }
    None
}

fn load_layout(dir: &Path, layout: &Layout) -> Result<Splits, DataError> {
    let path = |name: &str| -> Result<PathBuf, DataError> {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(DataError::Incomplete {
                dir: dir.into(),
                format: layout.name,
                missing: name.into(),
            })
        }
    };
    let train: Vec<PathBuf> = layout
        .train
        .iter()
        .map(|f| path(f))
        .collect::<Result<_, _>>()?;
    let test = path(layout.test)?;
    Ok(Splits {
        train: read_batches(&train, layout)?,
        test: read_batches(&[test], layout)?,
    })
}

/// Reads record files one after another into one dataset.
fn read_batches(paths: &[PathBuf], layout: &Layout) -> Result<Dataset, DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        read_batch(path, layout, &mut pixels, &mut labels)?;
    }
    let images = Array4::from_shape_vec((labels.len(), 3, SIDE, SIDE), pixels)
        .expect("each record adds one label and PIXELS values");
    Ok(Dataset::new(images, labels))
}

fn read_batch(
    path: &Path,
    layout: &Layout,
    pixels: &mut Vec<f32>,
    labels: &mut Vec<usize>,
) -> Result<(), DataError> {
    let bytes = file::read(path)?;
    let bad = |problem: String| DataError::Malformed {
        path: path.into(),
        problem,
    };
    let label_bytes = layout.label_classes.len();
    let record = label_bytes + PIXELS;
    if bytes.is_empty() {
        return Err(bad(format!("holds no {} records", layout.name)));
    }
    let whole = bytes.len() / record;
    let rest = bytes.len() % record;
    if rest != 0 {
        return Err(bad(format!(
            "{} bytes is not a whole number of {record}-byte {} records: record {whole} (counting from 0) \
             is cut short after {rest} bytes; is the file truncated, or not {}?",
            bytes.len(),
            layout.name,
            layout.name
        )));
    }
    pixels.reserve(whole * PIXELS);
    labels.reserve(whole);
    for (index, rec) in bytes.chunks_exact(record).enumerate() {
        let (label_part, image) = rec.split_at(label_bytes);
        for (&label, &classes) in label_part.iter().zip(layout.label_classes) {
            if label >= classes {
                return Err(bad(format!(
                    "record {index} (counting from 0) has label {label}, but {} labels run 0..{}",
                    layout.name,
                    classes - 1
                )));
            }
        }
        // The last label byte is the one kept: the only one for CIFAR-10, the fine class for
        // CIFAR-100. `label_classes` is never empty, so neither is `label_part`.
        labels.extend(label_part.last().map(|&l| usize::from(l)));
        pixels.extend(image.iter().map(|&p| f32::from(p) / 255.0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose pixels are all `value`, except the first of each channel, which is the
    /// channel's index (to check the channel order).
    fn record(labels: &[u8], value: u8) -> Vec<u8> {
        let mut r = labels.to_vec();
        for c in 0..3u8 {
            r.push(c);
            r.extend(std::iter::repeat_n(value, SIDE * SIDE - 1));
        }
        r
    }

    fn write(path: &Path, records: &[Vec<u8>]) {
        std::fs::write(path, records.concat()).unwrap();
    }

    #[test]
    fn cifar10_in_its_archive_folder_loads_all_batches() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&dir).unwrap();
        for (i, name) in CIFAR10.train.iter().enumerate() {
            write(
                &dir.join(name),
                &[record(&[i as u8], 255), record(&[9], 51)],
            );
        }
        write(&dir.join("test_batch.bin"), &[record(&[3], 0)]);
        let s = load(root.path()).unwrap().unwrap();
        assert_eq!(s.train.len(), 10);
        assert_eq!(s.train.image_shape(), [3, 32, 32]);
        assert_eq!(s.train.labels, [0, 9, 1, 9, 2, 9, 3, 9, 4, 9]);
        assert_eq!(s.test.labels, [3]);
        assert_eq!(s.train.images[[0, 0, 0, 1]], 1.0);
        assert_eq!(s.train.images[[1, 2, 31, 31]], 0.2);
        // Channel-major: the first pixel of channel c holds c.
        assert_eq!(s.test.images[[0, 2, 0, 0]], 2.0 / 255.0);
    }

    #[test]
    fn cifar100_keeps_the_fine_label() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("train.bin"),
            &[record(&[19, 99], 1), record(&[0, 42], 2)],
        );
        write(&dir.path().join("test.bin"), &[record(&[5, 7], 3)]);
        let s = load(dir.path()).unwrap().unwrap();
        assert_eq!(s.train.labels, [99, 42]);
        assert_eq!(s.test.labels, [7]);
        assert_eq!(s.train.images[[1, 1, 5, 5]], 2.0 / 255.0);
    }

    #[test]
    fn a_cut_record_is_named_with_its_file_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = [record(&[1], 0), record(&[2], 0)].concat();
        bytes.extend([3, 4, 5]);
        std::fs::write(dir.path().join("train.bin"), bytes).unwrap();
        write(&dir.path().join("test.bin"), &[record(&[0, 1], 0)]);
        let e = load(dir.path()).unwrap().unwrap_err().to_string();
        // Two 3073-byte CIFAR-10-style records read as 3074-byte CIFAR-100 records.
        assert!(
            e.contains("train.bin")
                && e.contains("record 2 (counting from 0)")
                && e.contains("6149 bytes"),
            "{e}"
        );
    }

    #[test]
    fn a_label_out_of_range_is_named_with_its_record() {
        let dir = tempfile::tempdir().unwrap();
        for name in CIFAR10.train {
            write(&dir.path().join(name), &[record(&[0], 0)]);
        }
        write(
            &dir.path().join("test_batch.bin"),
            &[record(&[1], 0), record(&[10], 0)],
        );
        let e = load(dir.path()).unwrap().unwrap_err().to_string();
        assert!(
            e.contains("test_batch.bin") && e.contains("record 1") && e.contains("label 10"),
            "{e}"
        );
    }

    #[test]
    fn empty_files_and_missing_batches_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("data_batch_1.bin"), &[record(&[0], 0)]);
        let e = load(dir.path()).unwrap().unwrap_err().to_string();
        assert!(
            e.contains("CIFAR-10") && e.contains("data_batch_2.bin is missing"),
            "{e}"
        );
        for name in CIFAR10.train {
            write(&dir.path().join(name), &[record(&[0], 0)]);
        }
        std::fs::write(dir.path().join("test_batch.bin"), b"").unwrap();
        let e = load(dir.path()).unwrap().unwrap_err().to_string();
        assert!(
            e.contains("test_batch.bin: holds no CIFAR-10 records"),
            "{e}"
        );
    }

    #[test]
    fn other_folders_are_not_claimed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("readme.txt"), b"hi").unwrap();
        assert!(load(dir.path()).is_none());
    }
}
