//! NumPy `.npz` datasets (zip archives of `.npy` arrays): turns the arrays into images and labels.
//!
//! Two layouts: one archive with `x_train`, `y_train`, `x_test`, `y_test`, or a folder with
//! `train.npz` and `test.npz`, each holding `x` and `y`. One archive holding `x` and no labels is
//! a set of unlabeled images. Parsing `.npy` bytes is `npy`'s job; this
//! module must not carve a test split out of training data on its own.

use crate::npy::{self, NpyArray};
use crate::{file, Contents, DataError, Dataset, Splits};
use ndarray::{Array4, ArrayD, IxDyn};
use std::fs::File;
use std::path::{Path, PathBuf};

/// What `load` looks for, for the message when no format is found.
pub(crate) const EXPECTED: &str = "NumPy (one .npz with x_train, y_train, x_test, y_test, \
    or with x alone for unlabeled images; or train.npz and test.npz, each with x and y)";

/// Loads the `.npz` dataset in `dir`; `None` if it holds no `.npz` file.
pub(crate) fn load(dir: &Path) -> Option<Result<Contents, DataError>> {
    let (train, test) = (dir.join("train.npz"), dir.join("test.npz"));
    match (train.is_file(), test.is_file()) {
        (true, true) => return Some(load_pair(&train, &test).map(Contents::Labelled)),
        (false, false) => {}
        (has_train, _) => {
            return Some(Err(DataError::Incomplete {
                dir: dir.into(),
                format: "a NumPy dataset (train.npz and test.npz)",
                missing: if has_train { "test.npz" } else { "train.npz" }.into(),
            }))
        }
    }
    let found = match npz_files(dir) {
        Ok(found) => found,
        Err(e) => return Some(Err(e)),
    };
    match &found[..] {
        [] => None,
        [one] => Some(load_file(one)),
        several => Some(Err(DataError::Malformed {
            path: dir.into(),
            problem: format!(
                "holds several .npz files ({}); give the path of the one to use",
                several
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })),
    }
}

/// Whether `path` names a `.npz` file (by its extension, in any case).
pub(crate) fn is_npz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

fn npz_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let read_err = |cause| DataError::Read {
        path: dir.into(),
        cause,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if is_npz(&path) && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Loads one archive holding `x_train`, `y_train`, `x_test` and `y_test`, or unlabeled images as
/// `x` alone.
pub(crate) fn load_file(path: &Path) -> Result<Contents, DataError> {
    let mut archive = Archive::open(path)?;
    if !archive.has("x_train") && archive.has("x") && !archive.has("y") {
        let images = archive.array("x")?;
        return to_images(&images)
            .map(Contents::Unlabeled)
            .map_err(|p| archive.bad(format!("x: {p}")));
    }
    Ok(Contents::Labelled(Splits {
        train: archive.dataset("x_train", "y_train")?,
        test: archive.dataset("x_test", "y_test")?,
    }))
}

fn load_pair(train: &Path, test: &Path) -> Result<Splits, DataError> {
    Ok(Splits {
        train: Archive::open(train)?.dataset("x", "y")?,
        test: Archive::open(test)?.dataset("x", "y")?,
    })
}

struct Archive {
    path: PathBuf,
    zip: zip::ZipArchive<File>,
}

impl Archive {
    fn open(path: &Path) -> Result<Archive, DataError> {
        let file = file::open(path)?;
        let zip = zip::ZipArchive::new(file).map_err(|e| DataError::Malformed {
            path: path.into(),
            problem: format!("not a .npz (zip) archive: {e}"),
        })?;
        Ok(Archive {
            path: path.into(),
            zip,
        })
    }

    fn bad(&self, problem: String) -> DataError {
        DataError::Malformed {
            path: self.path.clone(),
            problem,
        }
    }

    /// The member holding array `name`: `name.npy` (as `np.savez` writes it) or plain `name`.
    fn member(&self, name: &str) -> Option<String> {
        [format!("{name}.npy"), name.to_string()]
            .into_iter()
            .find(|m| self.zip.index_for_name(m).is_some())
    }

    fn has(&self, name: &str) -> bool {
        self.member(name).is_some()
    }

    /// The array `name`, stored as `name.npy` or plain `name`.
    fn array(&mut self, name: &str) -> Result<NpyArray, DataError> {
        let member = self.member(name);
        let Some(member) = member else {
            let held: Vec<String> = self
                .zip
                .file_names()
                .filter_map(Result::ok)
                .map(|n| n.into_owned())
                .collect();
            return Err(self.bad(format!(
                "has no array '{name}' (it holds: {})",
                held.join(", ")
            )));
        };
        let read = self
            .zip
            .by_name(&member)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                let compressed = f.compressed_size();
                file::read_decompressed(f, compressed)
            });
        let bytes = read.map_err(|e| self.bad(format!("cannot read {member}: {e}")))?;
        npy::parse(&bytes).map_err(|problem| self.bad(format!("{member}: {problem}")))
    }

    fn dataset(&mut self, x: &str, y: &str) -> Result<Dataset, DataError> {
        let images = self.array(x)?;
        let labels = self.array(y)?;
        let images = to_images(&images).map_err(|p| self.bad(format!("{x}: {p}")))?;
        let labels = to_labels(&labels).map_err(|p| self.bad(format!("{y}: {p}")))?;
        if images.dim().0 != labels.len() {
            return Err(self.bad(format!(
                "{x} has {} images but {y} has {} labels; they must match",
                images.dim().0,
                labels.len()
            )));
        }
        Ok(Dataset::new(images, labels))
    }
}

/// The largest float pixel magnitude accepted: far beyond any scaling of 8- or 16-bit images, far
/// below where a convolution's sums overflow f32.
const MAX_FLOAT_PIXEL: f64 = 1e6;

/// `[N, H, W]`, `[N, C, H, W]` or `[N, H, W, C]` (C = 1 or 3) into `[N, C, H, W]` float32.
/// Integer pixels are 8-bit intensities, scaled by 1/255; float pixels are taken as they are.
fn to_images(a: &NpyArray) -> Result<Array4<f32>, String> {
    let (shape, channels_last) = match a.shape[..] {
        [n, h, w] => ([n, 1, h, w], false),
        [n, c, h, w] if c == 1 || c == 3 => ([n, c, h, w], false),
        [n, h, w, c] if c == 1 || c == 3 => ([n, h, w, c], true),
        _ => {
            return Err(format!(
                "images have shape {:?}; expected [N, H, W], [N, C, H, W] or [N, H, W, C] with C 1 or 3",
                a.shape
            ))
        }
    };
    let per_sample: usize = shape[1..].iter().product();
    let mut pixels = Vec::with_capacity(shape.iter().product());
    for (i, v) in a.values().enumerate() {
        let p = if a.dtype.is_float() {
            // Training would carry a NaN, or overflow a huge value, into every weight.
            if !v.is_finite() || v.abs() > MAX_FLOAT_PIXEL {
                return Err(format!(
                    "sample {} has pixel value {v}; float pixels must be finite and within \
                     ±{MAX_FLOAT_PIXEL:e} (rescale the data)",
                    i / per_sample
                ));
            }
            v as f32
        } else if (0.0..=255.0).contains(&v) {
            (v / 255.0) as f32
        } else {
            // `per_sample` is not 0 here: a value exists.
            return Err(format!(
                "sample {} has pixel value {v}; integer ({}) pixels must be 0..255",
                i / per_sample,
                a.dtype
            ));
        };
        pixels.push(p);
    }
    let array = ArrayD::from_shape_vec(IxDyn(&shape), pixels)
        .and_then(|a| a.into_dimensionality())
        .map_err(|e| format!("cannot shape the images: {e}"))?;
    Ok(if channels_last {
        array
            .permuted_axes([0, 3, 1, 2])
            .as_standard_layout()
            .into_owned()
    } else {
        array
    })
}

/// `[N]` or `[N, 1]` of whole numbers, 0 or more.
fn to_labels(a: &NpyArray) -> Result<Vec<usize>, String> {
    if !matches!(a.shape[..], [_] | [_, 1]) {
        return Err(format!(
            "labels have shape {:?}; expected [N] or [N, 1]",
            a.shape
        ));
    }
    a.values()
        .enumerate()
        .map(|(i, v)| {
            // The upper bound keeps `class_count` (largest label + 1) from overflowing.
            if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
                Ok(v as usize)
            } else {
                Err(format!(
                    "sample {i} has label {v}; labels must be whole numbers from 0 to {}",
                    u32::MAX
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::tests::npy;
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;

    fn write_npz(path: &Path, arrays: &[(&str, Vec<u8>)]) {
        let mut z = zip::ZipWriter::new(File::create(path).unwrap());
        for (i, (name, bytes)) in arrays.iter().enumerate() {
            // Both ways NumPy stores members: `savez` (stored) and `savez_compressed` (deflated).
            let method = if i % 2 == 0 {
                CompressionMethod::Stored
            } else {
                CompressionMethod::Deflated
            };
            z.start_file(
                format!("{name}.npy"),
                SimpleFileOptions::default().compression_method(method),
            )
            .unwrap();
            z.write_all(bytes).unwrap();
        }
        z.finish().unwrap();
    }

    fn u8s(shape: &[usize], data: &[u8]) -> Vec<u8> {
        npy("|u1", shape, data)
    }

    fn i64s(shape: &[usize], data: &[i64]) -> Vec<u8> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        npy("<i8", shape, &bytes)
    }

    fn f32s(shape: &[usize], data: &[f32]) -> Vec<u8> {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        npy("<f4", shape, &bytes)
    }

    fn err(path: &Path) -> String {
        load_file(path).unwrap_err().to_string()
    }

    fn labelled(contents: Contents) -> Splits {
        match contents {
            Contents::Labelled(splits) => splits,
            Contents::Unlabeled(_) => panic!("loaded as unlabeled images"),
        }
    }

    #[test]
    fn an_archive_of_x_alone_is_unlabeled_images_and_x_with_y_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.npz");
        write_npz(
            &path,
            &[(
                "x",
                u8s(&[3, 2, 2, 1], &[0, 51, 102, 255, 1, 2, 3, 4, 5, 6, 7, 8]),
            )],
        );
        let Contents::Unlabeled(images) = load_file(&path).unwrap() else {
            panic!("x alone holds no labels");
        };
        assert_eq!(images.dim(), (3, 1, 2, 2));
        assert_eq!(images[[0, 0, 1, 1]], 1.0);
        // From the folder too, as its only archive.
        assert!(matches!(
            load(dir.path()).unwrap().unwrap(),
            Contents::Unlabeled(_)
        ));
        // x with y is neither layout: the message lists what the archive holds.
        write_npz(
            &path,
            &[("x", u8s(&[1, 1, 1], &[0])), ("y", u8s(&[1], &[0]))],
        );
        let e = err(&path);
        assert!(
            e.contains("no array 'x_train'") && e.contains("x.npy, y.npy"),
            "{e}"
        );
        // Unlabeled float images are checked like labelled ones.
        write_npz(&path, &[("x", f32s(&[1, 1, 1], &[f32::NAN]))]);
        assert!(
            err(&path).contains("x: sample 0 has pixel value NaN"),
            "{}",
            err(&path)
        );
    }

    #[test]
    fn the_shipped_digits_archive_loads() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits8x8/digits8x8.npz");
        let s = labelled(load_file(&path).unwrap());
        assert_eq!((s.train.len(), s.test.len()), (1437, 360));
        assert_eq!(s.train.image_shape(), [1, 8, 8]);
        assert_eq!(s.test.image_shape(), [1, 8, 8]);
        assert_eq!(s.train.class_count(), 10);
        // Values 0..16 as uint8, scaled by 1/255.
        let max = s.train.images.iter().copied().fold(0.0, f32::max);
        assert_eq!(max, 16.0 / 255.0);
    }

    #[test]
    fn one_archive_with_four_arrays_loads_and_scales_uint8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.npz");
        write_npz(
            &path,
            &[
                ("x_train", u8s(&[2, 1, 2], &[0, 255, 51, 0])),
                ("y_train", i64s(&[2], &[3, 0])),
                ("x_test", u8s(&[1, 1, 2], &[255, 255])),
                ("y_test", u8s(&[1, 1], &[9])),
            ],
        );
        let s = labelled(load(dir.path()).unwrap().unwrap());
        assert_eq!(s.train.image_shape(), [1, 1, 2]);
        assert_eq!(s.train.images[[0, 0, 0, 1]], 1.0);
        assert_eq!(s.train.images[[1, 0, 0, 0]], 0.2);
        assert_eq!(s.train.labels, [3, 0]);
        assert_eq!(s.test.labels, [9]);
    }

    #[test]
    fn channels_last_float_images_are_transposed_and_kept_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        // One 2×2 RGB image, pixel (y, x) channel c = 100y + 10x + c.
        let hwc: Vec<f32> = (0..2)
            .flat_map(|y| {
                (0..2).flat_map(move |x| (0..3).map(move |c| (100 * y + 10 * x + c) as f32))
            })
            .collect();
        let xy = |x: Vec<u8>, y: Vec<u8>| vec![("x", x), ("y", y)];
        write_npz(
            &dir.path().join("train.npz"),
            &xy(f32s(&[1, 2, 2, 3], &hwc), i64s(&[1], &[4])),
        );
        let chw: Vec<f64> = [0.5f64, 1.5, 2.5, 3.5].to_vec();
        let bytes: Vec<u8> = chw.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_npz(
            &dir.path().join("test.npz"),
            &xy(npy("<f8", &[1, 1, 2, 2], &bytes), f32s(&[1], &[2.0])),
        );
        let s = labelled(load(dir.path()).unwrap().unwrap());
        assert_eq!(s.train.image_shape(), [3, 2, 2]);
        assert!(s.train.images.is_standard_layout());
        assert_eq!(s.train.images[[0, 2, 1, 0]], 102.0);
        assert_eq!(s.train.images[[0, 1, 0, 1]], 11.0);
        assert_eq!(s.test.image_shape(), [1, 2, 2]);
        assert_eq!(s.test.images[[0, 0, 1, 1]], 3.5);
        assert_eq!(s.test.labels, [2]);
    }

    #[test]
    fn a_folder_with_only_train_npz_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        write_npz(&dir.path().join("train.npz"), &[]);
        let e = load(dir.path()).unwrap().unwrap_err().to_string();
        assert!(e.contains("test.npz is missing"), "{e}");
    }

    #[test]
    fn a_folder_with_several_archives_asks_which() {
        let dir = tempfile::tempdir().unwrap();
        write_npz(&dir.path().join("a.npz"), &[]);
        write_npz(&dir.path().join("b.NPZ"), &[]);
        let e = load(dir.path()).unwrap().unwrap_err().to_string();
        assert!(e.contains("several .npz files (a.npz, b.NPZ)"), "{e}");
        assert!(load(tempfile::tempdir().unwrap().path()).is_none());
    }

    #[test]
    fn missing_arrays_and_broken_archives_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.npz");
        write_npz(
            &path,
            &[("x", u8s(&[1, 1, 1], &[0])), ("y", u8s(&[1], &[0]))],
        );
        let e = err(&path);
        assert!(
            e.contains("d.npz") && e.contains("no array 'x_train' (it holds: x.npy, y.npy)"),
            "{e}"
        );
        std::fs::write(&path, b"not a zip").unwrap();
        assert!(err(&path).contains("d.npz: not a .npz (zip) archive"));
    }

    #[test]
    fn a_corrupt_member_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.npz");
        let x = u8s(&[1, 1, 4], &[7, 7, 7, 7]);
        // The first member is stored, so its bytes can be found and changed in place.
        write_npz(&path, &[("x_train", x.clone())]);
        let mut bytes = std::fs::read(&path).unwrap();
        let start = bytes.windows(x.len()).position(|w| w == x).unwrap();
        bytes[start + x.len() - 1] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let e = err(&path);
        assert!(e.contains("d.npz: cannot read x_train.npy"), "{e}");
    }

    /// Writes a one-file dataset whose train arrays are `x`, `y` and returns the load error.
    fn train_error(x: Vec<u8>, y: Vec<u8>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.npz");
        write_npz(
            &path,
            &[
                ("x_train", x),
                ("y_train", y),
                ("x_test", u8s(&[1, 1, 1], &[0])),
                ("y_test", u8s(&[1], &[0])),
            ],
        );
        err(&path)
    }

    #[test]
    fn bad_arrays_are_named_with_the_sample() {
        let img = || u8s(&[2, 1, 1], &[0, 0]);
        let cases = [
            (
                u8s(&[2, 1, 1], &[0]),
                i64s(&[2], &[0, 0]),
                "x_train.npy: header declares shape [2, 1, 1]",
            ),
            (
                img(),
                i64s(&[2], &[0, -3]),
                "y_train: sample 1 has label -3",
            ),
            (
                img(),
                f32s(&[2], &[0.0, 1.5]),
                "y_train: sample 1 has label 1.5",
            ),
            (
                img(),
                i64s(&[2], &[0, 1 << 40]),
                "labels must be whole numbers",
            ),
            (
                img(),
                i64s(&[3], &[0, 1, 2]),
                "x_train has 2 images but y_train has 3 labels",
            ),
            (
                img(),
                i64s(&[2, 2], &[0, 1, 2, 3]),
                "labels have shape [2, 2]",
            ),
            (
                u8s(&[2, 2, 2, 2, 2], &[0; 32]),
                i64s(&[2], &[0, 0]),
                "images have shape [2, 2, 2, 2, 2]",
            ),
            (
                u8s(&[2, 5, 2, 2], &[0; 40]),
                i64s(&[2], &[0, 0]),
                "with C 1 or 3",
            ),
            (
                i64s(&[2, 1, 2], &[0, 255, 256, 0]),
                i64s(&[2], &[0, 0]),
                "sample 1 has pixel value 256",
            ),
            (
                f32s(&[2, 1, 2], &[0.0, 0.5, 0.25, f32::NAN]),
                i64s(&[2], &[0, 0]),
                "sample 1 has pixel value NaN",
            ),
            (
                f32s(&[2, 1, 1], &[f32::NEG_INFINITY, 0.0]),
                i64s(&[2], &[0, 0]),
                "sample 0 has pixel value -inf",
            ),
            (
                f32s(&[2, 1, 1], &[0.0, 3e30]),
                i64s(&[2], &[0, 0]),
                "must be finite and within",
            ),
        ];
        for (x, y, expected) in cases {
            let e = train_error(x, y);
            assert!(
                e.contains("d.npz: ") && e.contains(expected),
                "{expected:?} not in {e:?}"
            );
        }
    }
}
