//! Image-folder datasets: `train/<class>/*.png|jpg|jpeg` and `test/<class>/...`, one folder per
//! class, classes numbered in alphabetical order of train's folder names; or, unlabeled, images
//! lying directly in the folder.
//!
//! Every image must match the first one's size and channel count, after the resize and centre crop
//! the caller asks for (see `Preprocess::fit`); this module must not otherwise alter images to
//! make them fit.

use crate::{file, Contents, DataError, Dataset, Preprocess, Splits};
use image::{ImageBuffer, ImageReader, Pixel};
use ndarray::Array4;
use std::path::{Path, PathBuf};

/// What `load` looks for, for the message when no format is found.
pub(crate) const EXPECTED: &str =
    "image folders (train/<class>/*.png|jpg|jpeg and test/<class>/...)";

/// What `load_unlabeled` looks for, for the message when no format is found.
pub(crate) const EXPECTED_UNLABELED: &str =
    "unlabeled images (*.png|jpg|jpeg directly in the folder)";

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Loads the images lying directly in `dir` (no class folders), without labels; `None` if it holds
/// none.
pub(crate) fn load_unlabeled(
    dir: &Path,
    preprocess: &Preprocess,
) -> Option<Result<Contents, DataError>> {
    let files = match images_in(dir) {
        Ok(files) if files.is_empty() => return None,
        Ok(files) => files,
        Err(e) => return Some(Err(e)),
    };
    Some(read_images(&files, preprocess, &mut None).map(Contents::Unlabeled))
}

/// Loads `dir/train` and `dir/test`; `None` if `dir` has neither folder.
pub(crate) fn load(dir: &Path, preprocess: &Preprocess) -> Option<Result<Splits, DataError>> {
    let (train, test) = (dir.join("train"), dir.join("test"));
    match (train.is_dir(), test.is_dir()) {
        (false, false) => None,
        (true, true) => Some(load_splits(&train, &test, preprocess)),
        (has_train, _) => Some(Err(DataError::Incomplete {
            dir: dir.into(),
            format: "an image-folder dataset (train/ and test/)",
            missing: if has_train { "test/" } else { "train/" }.into(),
        })),
    }
}

fn load_splits(
    train_dir: &Path,
    test_dir: &Path,
    preprocess: &Preprocess,
) -> Result<Splits, DataError> {
    let classes = subfolders(train_dir)?;
    if classes.is_empty() {
        return Err(DataError::Malformed {
            path: train_dir.into(),
            problem: "holds no class folders; put each class's images in train/<class>/".into(),
        });
    }
    let mut train_files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let folder = train_dir.join(class);
        let files = images_in(&folder)?;
        if files.is_empty() {
            return Err(DataError::Malformed {
                path: folder,
                problem: format!("class '{class}' holds no {} images", EXTENSIONS.join("/")),
            });
        }
        train_files.extend(files.into_iter().map(|f| (f, label)));
    }
    let mut test_files = Vec::new();
    for class in subfolders(test_dir)? {
        // The label is the class's place in train's list, so the model's outputs mean the same.
        let folder = test_dir.join(&class);
        let Some(label) = classes.iter().position(|c| *c == class) else {
            return Err(DataError::Malformed {
                path: folder,
                problem: format!(
                    "class '{class}' has no folder in train/ (train's classes: {})",
                    classes.join(", ")
                ),
            });
        };
        test_files.extend(images_in(&folder)?.into_iter().map(|f| (f, label)));
    }
    let mut first = None;
    let mut split = |files: Vec<(PathBuf, usize)>| {
        let (paths, labels): (Vec<PathBuf>, Vec<usize>) = files.into_iter().unzip();
        Ok::<_, DataError>(Dataset::new(
            read_images(&paths, preprocess, &mut first)?,
            labels,
        ))
    };
    Ok(Splits {
        train: split(train_files)?,
        test: split(test_files)?,
    })
}

/// The names of the folders in `dir`, sorted.
fn subfolders(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut names: Vec<String> = entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Ok(names)
}

/// The PNG and JPEG files in `dir`, sorted; other files are ignored.
fn images_in(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files: Vec<PathBuf> = entries(dir)?
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
                && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let read_err = |cause| DataError::Read {
        path: dir.into(),
        cause,
    };
    std::fs::read_dir(dir)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.path()).map_err(read_err))
        .collect()
}

/// `[C, H, W]` of an image and the file it came from.
type FirstImage = ([usize; 3], PathBuf);

/// Decodes `files` into `[N, C, H, W]` images. `first` is the first image read (in any split):
/// all others must have its shape.
fn read_images(
    files: &[PathBuf],
    preprocess: &Preprocess,
    first: &mut Option<FirstImage>,
) -> Result<Array4<f32>, DataError> {
    let mut pixels = Vec::new();
    for path in files {
        let (shape, values) = decode(path, preprocess)?;
        match first {
            None => *first = Some((shape, path.clone())),
            Some((expected, first_path)) if *expected != shape => {
                let [c, h, w] = shape;
                let [ec, eh, ew] = *expected;
                return Err(DataError::Malformed {
                    path: path.clone(),
                    problem: format!(
                        "image is {c}×{h}×{w} (channels×height×width) but the first image, {}, is \
                         {ec}×{eh}×{ew}; all images must have the same size and channels (resize and centre-crop them to one size)",
                        first_path.display()
                    ),
                });
            }
            Some(_) => {}
        }
        pixels.extend(values);
    }
    let [c, h, w] = first.as_ref().map_or([0; 3], |(s, _)| *s);
    Ok(Array4::from_shape_vec((files.len(), c, h, w), pixels)
        .expect("every image added has the first image's shape"))
}

/// One image as `[C, H, W]` and its pixels in that order, resized and cropped as `preprocess`
/// asks, scaled to 0..1. Grayscale gives one channel, colour three; alpha is dropped and 16-bit
/// samples are reduced to 8 bits (before resizing, as PIL does).
fn decode(path: &Path, preprocess: &Preprocess) -> Result<([usize; 3], Vec<f32>), DataError> {
    let image = ImageReader::new(std::io::BufReader::new(file::open(path)?))
        .with_guessed_format()
        .map_err(|cause| DataError::Read {
            path: path.into(),
            cause,
        })?
        .decode()
        .map_err(|e| DataError::Malformed {
            path: path.into(),
            problem: format!("cannot decode the image: {e}"),
        })?;
    if image.color().has_color() {
        Ok(planes(preprocess.fit(image.to_rgb8(), path)?))
    } else {
        Ok(planes(preprocess.fit(image.to_luma8(), path)?))
    }
}

/// The pixels of `image` as whole planes per channel (decoders interleave them), scaled to 0..1.
fn planes<P: Pixel<Subpixel = u8>>(image: ImageBuffer<P, Vec<u8>>) -> ([usize; 3], Vec<f32>) {
    let (h, w) = (image.height() as usize, image.width() as usize);
    let c = usize::from(P::CHANNEL_COUNT);
    let values = (0..c)
        .flat_map(|channel| image.as_raw().iter().skip(channel).step_by(c))
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    ([c, h, w], values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};

    fn mkdir(path: &Path) -> PathBuf {
        std::fs::create_dir_all(path).unwrap();
        path.into()
    }

    /// A 3×2 (width×height) RGB image; pixel (x, y) = (10x + y, 100 + x, 200 + y) + `shift`.
    fn rgb(shift: u8) -> RgbImage {
        RgbImage::from_fn(3, 2, |x, y| {
            let (x, y) = (x as u8, y as u8);
            Rgb([10 * x + y + shift, 100 + x + shift, 200 + y + shift])
        })
    }

    fn err(dir: &Path) -> String {
        load(dir, &Preprocess::default())
            .unwrap()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn images_directly_in_a_folder_load_unlabeled_in_name_order() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert!(load_unlabeled(r, &Preprocess::default()).is_none());
        rgb(7).save(r.join("b.png")).unwrap();
        rgb(0).save(r.join("a.png")).unwrap();
        std::fs::write(r.join("notes.txt"), b"ignored").unwrap();
        mkdir(&r.join("empty"));
        let Some(Ok(Contents::Unlabeled(images))) = load_unlabeled(r, &Preprocess::default())
        else {
            panic!("two images lie in the folder");
        };
        assert_eq!(images.dim(), (2, 3, 2, 3));
        assert_eq!(images[[0, 0, 1, 2]], 21.0 / 255.0);
        assert_eq!(images[[1, 0, 1, 2]], 28.0 / 255.0);
        GrayImage::new(3, 2).save(r.join("c.png")).unwrap();
        let Some(Err(e)) = load_unlabeled(r, &Preprocess::default()) else {
            panic!("a grey image among colour ones is refused");
        };
        assert!(e.to_string().contains("c.png: image is 1×2×3"), "{e}");
    }

    #[test]
    fn classes_are_numbered_alphabetically_and_pixels_become_planes() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        rgb(0)
            .save(mkdir(&r.join("train/dog")).join("a.png"))
            .unwrap();
        rgb(1)
            .save(mkdir(&r.join("train/cat")).join("b.PNG"))
            .unwrap();
        // RGBA: alpha is dropped.
        RgbaImage::from_fn(3, 2, |_, _| Rgba([51, 102, 153, 0]))
            .save(r.join("train/cat/c.png"))
            .unwrap();
        std::fs::write(r.join("train/cat/notes.txt"), b"ignored").unwrap();
        // A flat JPEG decodes to (nearly) its colour.
        RgbImage::from_pixel(3, 2, Rgb([128, 128, 128]))
            .save(mkdir(&r.join("test/dog")).join("d.jpg"))
            .unwrap();
        let s = load(r, &Preprocess::default()).unwrap().unwrap();
        assert_eq!(s.train.labels, [0, 0, 1]);
        assert_eq!(s.train.image_shape(), [3, 2, 3]);
        // Sample 2 is dog/a.png: channel 0 at (x 2, y 1) = 21.
        assert_eq!(s.train.images[[2, 0, 1, 2]], 21.0 / 255.0);
        assert_eq!(s.train.images[[2, 1, 0, 2]], 102.0 / 255.0);
        assert_eq!(s.train.images[[2, 2, 1, 0]], 201.0 / 255.0);
        assert_eq!(s.train.images[[1, 2, 0, 0]], 153.0 / 255.0);
        assert_eq!(s.test.labels, [1]);
        assert!((s.test.images[[0, 1, 1, 1]] - 128.0 / 255.0).abs() < 3.0 / 255.0);
    }

    #[test]
    fn grayscale_images_have_one_channel() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        GrayImage::from_fn(4, 4, |x, _| Luma([x as u8 * 85]))
            .save(mkdir(&r.join("train/0")).join("a.png"))
            .unwrap();
        mkdir(&r.join("test"));
        let s = load(r, &Preprocess::default()).unwrap().unwrap();
        assert_eq!(s.train.image_shape(), [1, 4, 4]);
        assert_eq!(s.train.images[[0, 0, 2, 3]], 1.0);
        assert!(s.test.is_empty());
        assert_eq!(s.test.image_shape(), [1, 4, 4]);
    }

    #[test]
    fn an_image_of_another_size_or_channel_count_is_named() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        rgb(0)
            .save(mkdir(&r.join("train/a")).join("1.png"))
            .unwrap();
        RgbImage::new(5, 5)
            .save(mkdir(&r.join("test/a")).join("2.png"))
            .unwrap();
        let e = err(r);
        assert!(
            e.contains("2.png: image is 3×5×5") && e.contains("1.png, is 3×2×3"),
            "{e}"
        );
        GrayImage::new(3, 2).save(r.join("test/a/2.png")).unwrap();
        let e = err(r);
        assert!(e.contains("2.png: image is 1×2×3"), "{e}");
    }

    #[test]
    fn a_test_class_unknown_to_train_is_named() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        rgb(0)
            .save(mkdir(&r.join("train/cat")).join("1.png"))
            .unwrap();
        rgb(0)
            .save(mkdir(&r.join("train/dog")).join("1.png"))
            .unwrap();
        rgb(0)
            .save(mkdir(&r.join("test/cow")).join("1.png"))
            .unwrap();
        let e = err(r);
        assert!(
            e.contains("cow") && e.contains("no folder in train/") && e.contains("cat, dog"),
            "{e}"
        );
    }

    #[test]
    fn undecodable_images_and_empty_classes_are_named() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        mkdir(&r.join("test"));
        std::fs::write(
            mkdir(&r.join("train/a")).join("bad.png"),
            b"\x89PNG\r\n\x1a\nxx",
        )
        .unwrap();
        let e = err(r);
        assert!(e.contains("bad.png: cannot decode the image"), "{e}");
        std::fs::remove_file(r.join("train/a/bad.png")).unwrap();
        let e = err(r);
        assert!(e.contains("class 'a' holds no png/jpg/jpeg images"), "{e}");
        std::fs::remove_dir(r.join("train/a")).unwrap();
        assert!(err(r).contains("holds no class folders"));
    }

    #[test]
    fn a_missing_split_folder_is_named() {
        let root = tempfile::tempdir().unwrap();
        mkdir(&root.path().join("train"));
        assert!(err(root.path()).contains("test/ is missing"));
        assert!(load(tempfile::tempdir().unwrap().path(), &Preprocess::default()).is_none());
    }

    #[test]
    fn images_of_different_sizes_load_once_resized_and_cropped() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        RgbImage::from_pixel(12, 6, Rgb([255, 0, 51]))
            .save(mkdir(&r.join("train/a")).join("wide.png"))
            .unwrap();
        RgbImage::from_pixel(4, 9, Rgb([0, 255, 51]))
            .save(mkdir(&r.join("test/a")).join("tall.png"))
            .unwrap();
        assert!(err(r).contains("(resize and centre-crop them to one size)"));
        let p = Preprocess {
            resize: Some(4),
            crop: Some([3, 4]),
            ..Preprocess::default()
        };
        let s = load(r, &p).unwrap().unwrap();
        assert_eq!(s.train.image_shape(), [3, 3, 4]);
        assert_eq!(s.test.image_shape(), [3, 3, 4]);
        // Flat colours stay flat through the resize.
        assert_eq!(s.train.images[[0, 0, 2, 3]], 1.0);
        assert_eq!(s.test.images[[0, 1, 0, 0]], 1.0);
        assert_eq!(s.test.images[[0, 2, 1, 1]], 0.2);
        // Cropped to more than the resized wide image has: the file is named.
        let p = Preprocess {
            crop: Some([5, 4]),
            ..p
        };
        let e = load(r, &p).unwrap().unwrap_err().to_string();
        assert!(
            e.contains("wide.png: the image is 4×8") && e.contains("after resizing"),
            "{e}"
        );
    }
}
