//! Preprocessing applied while a dataset loads, in torchvision's order: decode, resize the
//! shorter side and centre-crop (image folders only), scale to 0..1, reorder channels, normalise
//! with a per-channel mean and standard deviation.
//!
//! Resizing and cropping work on decoded 8-bit images, so they live with the image-folder loader
//! ([`Preprocess::fit`] is called there); the rest works on any loaded [`Dataset`].

use crate::dataset::normalize_channels;
use crate::DataError;
use image::imageops::{self, FilterType};
use image::{ImageBuffer, Pixel};
use ndarray::{Array4, Axis};
use serde::Serialize;
use std::path::Path;

/// The largest accepted resize side or crop side: larger is a typo, not a dataset.
pub const MAX_SIDE: u32 = 4096;
/// The largest longer side a resize may produce (a thin image resized by its shorter side grows
/// long): bounds the memory one image takes.
pub const MAX_RESIZED_SIDE: u32 = 4 * MAX_SIDE;

/// Which setting of a [`Preprocess`] is at fault, so a caller can name its own flag for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Resize,
    Crop,
    ChannelOrder,
    Mean,
    Std,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Setting::Resize => "resize",
            Setting::Crop => "crop",
            Setting::ChannelOrder => "channel order",
            Setting::Mean => "mean",
            Setting::Std => "std",
        })
    }
}

/// The order of the colour channels the model expects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// As decoded: red, green, blue.
    #[default]
    Rgb,
    /// Blue, green, red (models trained on OpenCV-read images).
    Bgr,
}

/// Per-channel normalisation, `(x - mean[c]) / std[c]`. A single value applies to every channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// What is done to every image of every split as it loads. The default does nothing: images
/// are scaled to 0..1 and kept as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Preprocess {
    /// Resize so the shorter side has this many pixels (bilinear, the longer side scaled to keep
    /// the aspect ratio and rounded down). Image folders only.
    pub resize: Option<u32>,
    /// Centre-crop to `[height, width]` (after any resize). Image folders only.
    pub crop: Option<[u32; 2]>,
    pub channel_order: ChannelOrder,
    pub normalize: Option<Normalize>,
}

fn refuse(setting: Setting, problem: String) -> DataError {
    DataError::Preprocess { setting, problem }
}

impl Preprocess {
    /// Whether images are resized or cropped: only image folders can be.
    pub fn changes_size(&self) -> bool {
        self.resize.is_some() || self.crop.is_some()
    }

    /// Refuses settings that are out of range whatever the data: sides of 0 or above
    /// [`MAX_SIDE`], empty or non-finite mean and std, a std that is not above zero.
    pub fn check(&self) -> Result<(), DataError> {
        let side_ok = |s: u32| (1..=MAX_SIDE).contains(&s);
        if let Some(side) = self.resize.filter(|&s| !side_ok(s)) {
            return Err(refuse(
                Setting::Resize,
                format!("{side} pixels; the shorter side must be from 1 to {MAX_SIDE}"),
            ));
        }
        if let Some([h, w]) = self.crop.filter(|c| !c.iter().all(|&s| side_ok(s))) {
            return Err(refuse(
                Setting::Crop,
                format!("{h}×{w}; height and width must be from 1 to {MAX_SIDE}"),
            ));
        }
        let Some(n) = &self.normalize else {
            return Ok(());
        };
        for (setting, values) in [(Setting::Mean, &n.mean), (Setting::Std, &n.std)] {
            if values.is_empty() {
                return Err(refuse(setting, "no values; give one per channel".into()));
            }
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(refuse(setting, format!("{v} is not a finite number")));
            }
        }
        if let Some(s) = n.std.iter().find(|&&s| s <= 0.0) {
            return Err(refuse(Setting::Std, format!("{s}; it must be above zero")));
        }
        Ok(())
    }

    /// Resizes and centre-crops one decoded image (from `path`) as asked; the image as it is
    /// when neither is asked.
    pub(crate) fn fit<P>(
        &self,
        image: ImageBuffer<P, Vec<u8>>,
        path: &Path,
    ) -> Result<ImageBuffer<P, Vec<u8>>, DataError>
    where
        P: Pixel<Subpixel = u8> + 'static,
    {
        let image = match self.resize {
            Some(side) => resize_shorter_side(image, side, path)?,
            None => image,
        };
        let Some([crop_h, crop_w]) = self.crop else {
            return Ok(image);
        };
        let (w, h) = image.dimensions();
        if crop_h > h || crop_w > w {
            let resized = if self.resize.is_some() {
                " after resizing"
            } else {
                ""
            };
            return Err(refuse(
                Setting::Crop,
                format!(
                    "{}: the image is {h}×{w} (height×width){resized}, smaller than the \
                     {crop_h}×{crop_w} crop; resize it to at least the crop or crop less",
                    path.display()
                ),
            ));
        }
        // torchvision's CenterCrop: int(round((size - crop) / 2)), rounding halves to even.
        let offset = |size: u32, crop: u32| (f64::from(size - crop) / 2.0).round_ties_even() as u32;
        Ok(
            imageops::crop_imm(&image, offset(w, crop_w), offset(h, crop_h), crop_w, crop_h)
                .to_image(),
        )
    }

    /// Reorders and normalises the channels of `images` (the `split` of the dataset at `path`);
    /// nothing to do for an empty split.
    pub(crate) fn apply(
        &self,
        images: &mut Array4<f32>,
        path: &Path,
        split: &str,
    ) -> Result<(), DataError> {
        let (count, channels, _, _) = images.dim();
        if count == 0 {
            return Ok(());
        }
        if self.channel_order == ChannelOrder::Bgr {
            if channels != 3 {
                return Err(refuse(
                    Setting::ChannelOrder,
                    format!(
                        "{}: bgr swaps the channels of colour images, but the {split} images have \
                         {channels} channel(s); leave the order at rgb",
                        path.display()
                    ),
                ));
            }
            let (mut red_green, mut blue) = images.view_mut().split_at(Axis(1), 2);
            ndarray::Zip::from(red_green.index_axis_mut(Axis(1), 0))
                .and(blue.index_axis_mut(Axis(1), 0))
                .for_each(std::mem::swap);
        }
        let Some(n) = &self.normalize else {
            return Ok(());
        };
        let mut per_channel = Vec::with_capacity(2);
        for (setting, values) in [(Setting::Mean, &n.mean), (Setting::Std, &n.std)] {
            per_channel.push(match values.len() {
                1 => vec![values[0]; channels],
                len if len == channels => values.clone(),
                len => {
                    return Err(refuse(
                        setting,
                        format!(
                            "{len} values, but the {split} images of {} have {channels} \
                             channel(s); give one value per channel, or one for all",
                            path.display()
                        ),
                    ))
                }
            });
        }
        normalize_channels(images, &per_channel[0], &per_channel[1])
    }
}

/// Resizes `image` so its shorter side is `side`, as torchvision's `Resize(side)` does: the
/// longer side becomes `side × long / short` rounded down; bilinear (a triangle filter, widened
/// when shrinking so every source pixel counts, as PIL does).
fn resize_shorter_side<P>(
    image: ImageBuffer<P, Vec<u8>>,
    side: u32,
    path: &Path,
) -> Result<ImageBuffer<P, Vec<u8>>, DataError>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    let (w, h) = image.dimensions();
    let (short, long) = (w.min(h), w.max(h));
    let new_long = u64::from(side) * u64::from(long) / u64::from(short.max(1));
    if short == 0 || new_long > u64::from(MAX_RESIZED_SIDE) {
        return Err(refuse(
            Setting::Resize,
            format!(
                "{}: the image is {h}×{w} (height×width); resizing its shorter side to {side} \
                 would make the longer side {new_long} pixels, more than {MAX_RESIZED_SIDE}",
                path.display()
            ),
        ));
    }
    let new_long = new_long as u32;
    let (new_w, new_h) = if w <= h {
        (side, new_long)
    } else {
        (new_long, side)
    };
    if (new_w, new_h) == (w, h) {
        return Ok(image);
    }
    Ok(imageops::resize(&image, new_w, new_h, FilterType::Triangle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dataset;
    use image::{Rgb, RgbImage};

    fn path() -> &'static Path {
        Path::new("x.png")
    }

    /// 8×4 (width×height): red is 10x + 5 (a ramp along x), green 100, blue 20y + 3.
    fn ramp() -> RgbImage {
        RgbImage::from_fn(8, 4, |x, y| Rgb([10 * x as u8 + 5, 100, 20 * y as u8 + 3]))
    }

    #[test]
    fn resize_scales_the_shorter_side_and_crop_keeps_the_centre() {
        let p = Preprocess {
            resize: Some(2),
            ..Preprocess::default()
        };
        // Shorter side 4 → 2; longer side 8 × 2 / 4 = 4.
        let resized = p.fit(ramp(), path()).unwrap();
        assert_eq!(resized.dimensions(), (4, 2));
        // Halving a linear ramp: each inner output pixel is the ramp at its centre (x = 2i + 1
        // in source pixels), 10 × (2i + 1). Edge pixels see only one side of the filter.
        assert_eq!(resized.get_pixel(1, 0)[0], 30);
        assert_eq!(resized.get_pixel(2, 1)[0], 50);
        assert!(resized.pixels().all(|px| px[1] == 100));
        let p = Preprocess {
            crop: Some([2, 2]),
            ..p
        };
        let cropped = p.fit(ramp(), path()).unwrap();
        // Columns 1 and 2 of the 4×2 resized image: (4 - 2) / 2 = 1.
        assert_eq!(cropped.dimensions(), (2, 2));
        assert_eq!(cropped.get_pixel(0, 0)[0], 30);
        assert_eq!(cropped.get_pixel(1, 1)[0], 50);
    }

    #[test]
    fn crop_alone_cuts_the_centre_rounding_halves_to_even_as_torchvision() {
        let p = Preprocess {
            crop: Some([3, 5]),
            ..Preprocess::default()
        };
        // Rows: (4 - 3) / 2 = 0.5 → 0; columns: (8 - 5) / 2 = 1.5 → 2.
        let cropped = p.fit(ramp(), path()).unwrap();
        assert_eq!(cropped.dimensions(), (5, 3));
        assert_eq!(cropped.get_pixel(0, 0).0, [25, 100, 3]);
        assert_eq!(cropped.get_pixel(4, 2).0, [65, 100, 43]);
        // No resize, no crop: the image as it is.
        assert_eq!(Preprocess::default().fit(ramp(), path()).unwrap(), ramp());
    }

    #[test]
    fn a_crop_larger_than_the_image_and_a_resize_too_long_are_named() {
        let p = Preprocess {
            crop: Some([5, 5]),
            ..Preprocess::default()
        };
        let e = p.fit(ramp(), path()).unwrap_err().to_string();
        assert!(
            e.starts_with("crop: x.png: the image is 4×8") && e.contains("5×5 crop"),
            "{e}"
        );
        let thin = RgbImage::new(1, 100);
        let p = Preprocess {
            resize: Some(MAX_SIDE),
            ..Preprocess::default()
        };
        let e = p.fit(thin, path()).unwrap_err().to_string();
        assert!(
            e.starts_with("resize: x.png") && e.contains("409600"),
            "{e}"
        );
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let with = |resize, crop, mean: &[f32], std: &[f32]| Preprocess {
            resize,
            crop,
            normalize: Some(Normalize {
                mean: mean.to_vec(),
                std: std.to_vec(),
            }),
            ..Preprocess::default()
        };
        let err = |p: Preprocess| p.check().unwrap_err().to_string();
        assert!(with(Some(4), Some([4, 4]), &[0.5], &[0.2]).check().is_ok());
        assert!(err(with(Some(0), None, &[0.0], &[1.0])).starts_with("resize: 0 pixels"));
        assert!(err(with(Some(MAX_SIDE + 1), None, &[0.0], &[1.0])).contains("1 to 4096"));
        assert!(err(with(None, Some([2, 0]), &[0.0], &[1.0])).starts_with("crop: 2×0"));
        assert!(err(with(None, None, &[], &[1.0])).starts_with("mean: no values"));
        assert!(err(with(None, None, &[f32::NAN], &[1.0])).starts_with("mean: NaN"));
        assert!(err(with(None, None, &[0.0], &[f32::INFINITY])).starts_with("std: inf"));
        assert!(err(with(None, None, &[0.0], &[0.5, 0.0])).starts_with("std: 0;"));
    }

    /// Two 3-channel 1×2 images: channel c of sample n at x is 100n + 10c + x.
    fn colour() -> Dataset {
        Dataset::new(
            Array4::from_shape_fn((2, 3, 1, 2), |(n, c, _, x)| (100 * n + 10 * c + x) as f32),
            vec![0, 1],
        )
    }

    #[test]
    fn bgr_swaps_the_first_and_third_channel_then_each_channel_is_normalised() {
        let mut d = colour();
        let p = Preprocess {
            channel_order: ChannelOrder::Bgr,
            normalize: Some(Normalize {
                mean: vec![20.0, 10.0, 0.0],
                std: vec![1.0, 2.0, 4.0],
            }),
            ..Preprocess::default()
        };
        p.apply(&mut d.images, path(), "train").unwrap();
        // Channel 0 now holds blue (20 + x) less 20; channel 1 green (10 + x) less 10, halved;
        // channel 2 red (x) quartered.
        assert_eq!(d.images[[0, 0, 0, 1]], 1.0);
        assert_eq!(d.images[[0, 1, 0, 1]], 0.5);
        assert_eq!(d.images[[1, 2, 0, 0]], 25.0);
        assert_eq!(d.images[[1, 0, 0, 0]], 100.0);
    }

    #[test]
    fn one_mean_and_std_apply_to_every_channel() {
        let mut d = colour();
        let p = Preprocess {
            normalize: Some(Normalize {
                mean: vec![10.0],
                std: vec![2.0],
            }),
            ..Preprocess::default()
        };
        p.apply(&mut d.images, path(), "train").unwrap();
        assert_eq!(d.images[[0, 0, 0, 0]], -5.0);
        assert_eq!(d.images[[0, 2, 0, 1]], 5.5);
        assert_eq!(d.images[[1, 1, 0, 0]], 50.0);
    }

    #[test]
    fn bgr_on_grey_images_and_a_mean_per_wrong_channel_count_are_refused() {
        let mut grey = Dataset::new(Array4::zeros((1, 1, 2, 2)), vec![0]);
        let bgr = Preprocess {
            channel_order: ChannelOrder::Bgr,
            ..Preprocess::default()
        };
        let e = bgr
            .apply(&mut grey.images, path(), "test")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("channel order: x.png: bgr") && e.contains("test images have 1 channel"),
            "{e}"
        );
        let two_means = Preprocess {
            normalize: Some(Normalize {
                mean: vec![0.1, 0.2],
                std: vec![1.0],
            }),
            ..Preprocess::default()
        };
        let mut d = colour();
        let e = two_means
            .apply(&mut d.images, path(), "train")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("mean: 2 values") && e.contains("3 channel"),
            "{e}"
        );
        assert_eq!(d.images, colour().images, "a refused call changes nothing");
        // An empty split has nothing to refuse.
        let mut empty = Dataset::new(Array4::zeros((0, 1, 2, 2)), vec![]);
        bgr.apply(&mut empty.images, path(), "test").unwrap();
    }
}
