//! Datasets for pare: reading them from disk into images and labels, scaling, and batching.
//!
//! This crate knows nothing of models or ONNX. It hands out `[N, C, H, W]` float32 images and class
//! labels; checking that they fit a model is the caller's job.

#![forbid(unsafe_code)]

mod cifar;
mod dataset;
mod error;
mod file;
mod folder;
mod idx;
mod npy;
mod npz;
mod preprocess;

pub use dataset::{BatchView, Dataset, Splits};
pub use error::DataError;
pub use idx::{read_idx, IdxArray};
pub use preprocess::{ChannelOrder, Normalize, Preprocess, Setting, MAX_RESIZED_SIDE, MAX_SIDE};

use ndarray::Array4;
use std::path::Path;

/// What a dataset path holds.
// One value per load, moved once: boxing the larger variant would buy nothing.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Contents {
    /// Train and test splits, a class label for every image.
    Labelled(Splits),
    /// Images `[N, C, H, W]` without labels: a folder of images, or a `.npz` holding only `x`.
    Unlabeled(Array4<f32>),
}

/// Loads the train and test splits of a dataset, recognising its format from what is there.
///
/// `path` is a `.npz` file or a folder holding, in the order tried (the first found is used):
/// MNIST IDX files, CIFAR-10 or CIFAR-100 binary batches, `.npz` archives, or `train/` and
/// `test/` image folders. Byte pixels (IDX, CIFAR, PNG/JPEG, integer NumPy arrays) are scaled to
/// 0..1 (divided by 255); float NumPy arrays are taken as they are.
pub fn load_dir(path: &Path) -> Result<Splits, DataError> {
    load_dir_with(path, &Preprocess::default())
}

/// As [`load_dir`], with every image of both splits prepared as `preprocess` asks (see
/// [`Preprocess`]). Resizing and cropping need decoded images, so only image folders take them;
/// any other format is refused when they are asked for (once it is recognised, which reads it).
pub fn load_dir_with(path: &Path, preprocess: &Preprocess) -> Result<Splits, DataError> {
    match load_contents_with(path, preprocess)? {
        Contents::Labelled(splits) => Ok(splits),
        Contents::Unlabeled(images) => Err(DataError::Unlabeled {
            path: path.into(),
            count: images.dim().0,
        }),
    }
}

/// As [`load_dir_with`], and also accepts unlabeled images: a folder with PNG or JPEG files
/// directly in it (no class folders), or a `.npz` holding only `x`.
pub fn load_contents_with(path: &Path, preprocess: &Preprocess) -> Result<Contents, DataError> {
    preprocess.check()?;
    let mut contents = load_format(path, preprocess)?;
    match &mut contents {
        Contents::Labelled(splits) => {
            preprocess.apply(&mut splits.train.images, path, "train")?;
            preprocess.apply(&mut splits.test.images, path, "test")?;
        }
        Contents::Unlabeled(images) => preprocess.apply(images, path, "unlabeled")?,
    }
    Ok(contents)
}

/// Refuses a resize or crop for a dataset of `format`, which holds no decodable images.
fn keep_size(preprocess: &Preprocess, path: &Path, format: &str) -> Result<(), DataError> {
    if !preprocess.changes_size() {
        return Ok(());
    }
    let setting = if preprocess.resize.is_some() {
        Setting::Resize
    } else {
        Setting::Crop
    };
    Err(DataError::Preprocess {
        setting,
        problem: format!(
            "{}: resizing and cropping apply to image folders (train/<class>/*.png), but this is \
             {format}; store its images at the size the model takes instead",
            path.display()
        ),
    })
}

fn load_format(path: &Path, preprocess: &Preprocess) -> Result<Contents, DataError> {
    let meta = std::fs::metadata(path).map_err(|cause| DataError::Read {
        path: path.into(),
        cause,
    })?;
    if meta.is_file() && npz::is_npz(path) {
        keep_size(preprocess, path, "a .npz file")?;
        return npz::load_file(path);
    }
    if !meta.is_dir() {
        return Err(DataError::NotADataset { path: path.into() });
    }
    let sized = |format: &'static str| {
        move |loaded: Result<Splits, DataError>| {
            keep_size(preprocess, path, format).and(loaded.map(Contents::Labelled))
        }
    };
    idx::load(path)
        .map(sized("an MNIST IDX dataset"))
        .or_else(|| cifar::load(path).map(sized("a CIFAR dataset")))
        .or_else(|| {
            npz::load(path).map(|loaded| keep_size(preprocess, path, "a NumPy dataset").and(loaded))
        })
        .or_else(|| folder::load(path, preprocess).map(|l| l.map(Contents::Labelled)))
        .or_else(|| folder::load_unlabeled(path, preprocess))
        .unwrap_or_else(|| {
            Err(DataError::UnknownLayout {
                dir: path.into(),
                expected: [
                    idx::EXPECTED,
                    cifar::EXPECTED,
                    npz::EXPECTED,
                    folder::EXPECTED,
                    folder::EXPECTED_UNLABELED,
                ]
                .join("; "),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_digits_folder_loads_from_its_idx_files_and_its_npz() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits8x8");
        let from_idx = load_dir(&dir).unwrap();
        let from_npz = load_dir(&dir.join("digits8x8.npz")).unwrap();
        assert_eq!(from_idx.train.labels, from_npz.train.labels);
        assert_eq!(from_idx.test.images, from_npz.test.images);
    }

    #[test]
    fn an_unknown_folder_lists_every_format_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"hi").unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        for format in [
            "MNIST IDX",
            "CIFAR-10",
            "CIFAR-100",
            ".npz",
            "image folders",
        ] {
            assert!(e.contains(format), "{format} not in {e}");
        }
    }

    #[test]
    fn unlabeled_images_load_as_contents_and_commands_needing_labels_are_told_so() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["1.png", "2.png", "3.png"] {
            image::GrayImage::new(4, 6)
                .save(dir.path().join(name))
                .unwrap();
        }
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("holds 3 images without labels") && e.contains("distilling"),
            "{e}"
        );
        let cropped = Preprocess {
            resize: Some(4),
            crop: Some([2, 2]),
            ..Preprocess::default()
        };
        let Contents::Unlabeled(images) = load_contents_with(dir.path(), &cropped).unwrap() else {
            panic!("no class folders, so no labels");
        };
        assert_eq!(images.dim(), (3, 1, 2, 2));
    }

    #[test]
    fn a_path_that_is_no_dataset_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, b"hi").unwrap();
        let e = load_dir(&file).unwrap_err().to_string();
        assert!(
            e.contains("notes.txt: neither a dataset folder nor a .npz file"),
            "{e}"
        );
        let e = load_dir(&dir.path().join("absent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent: cannot read"), "{e}");
    }

    #[test]
    fn resizing_a_dataset_that_is_no_image_folder_is_refused_and_normalising_is_not() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits8x8");
        let resize = Preprocess {
            resize: Some(8),
            ..Preprocess::default()
        };
        for path in [dir.clone(), dir.join("digits8x8.npz")] {
            let e = load_dir_with(&path, &resize).unwrap_err().to_string();
            assert!(
                e.starts_with("resize: ") && e.contains("apply to image folders"),
                "{e}"
            );
        }
        let centred = Preprocess {
            normalize: Some(Normalize {
                mean: vec![0.5],
                std: vec![0.25],
            }),
            ..Preprocess::default()
        };
        let plain = load_dir(&dir).unwrap();
        let normalised = load_dir_with(&dir, &centred).unwrap();
        let [x, y] = [
            plain.test.images[[3, 0, 4, 4]],
            normalised.test.images[[3, 0, 4, 4]],
        ];
        assert_eq!(y, (x - 0.5) / 0.25);
    }
}
