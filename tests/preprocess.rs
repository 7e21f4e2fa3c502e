//! Preprocessing flags end to end: image folders of mixed-size PNGs load once resized and
//! centre-cropped, every split (train, --val, test) gets the same mean/std and channel order, the
//! reports record it, and a bad flag gives a clean error that names it.

mod common;

use common::{assert_clean_error, compress, mnist, open_lenet, path_str};
use image::{GrayImage, Luma, Rgb, RgbImage};
use std::path::Path;

/// Sizes (width, height) of the images of each class: none alike, none square but one.
const TRAIN_SIZES: [(u32, u32); 3] = [(20, 24), (32, 16), (40, 40)];
const TEST_SIZES: [(u32, u32); 2] = [(18, 30), (25, 19)];

/// A `train/` and `test/` image folder in `dir`, classes `a` and `b`, with colour (or grey)
/// PNGs of the sizes above and pixels that differ by image.
fn image_folder(dir: &Path, grey: bool) {
    for (split, sizes) in [("train", &TRAIN_SIZES[..]), ("test", &TEST_SIZES[..])] {
        for (class, shift) in [("a", 0u32), ("b", 90)] {
            let folder = dir.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for (i, &(w, h)) in sizes.iter().enumerate() {
                let value = |x: u32, y: u32, c: u32| {
                    ((x * 31 + y * 17 + c * 50 + shift + i as u32) % 256) as u8
                };
                let file = folder.join(format!("{i}.png"));
                if grey {
                    GrayImage::from_fn(w, h, |x, y| Luma([value(x, y, 0)]))
                        .save(file)
                        .unwrap();
                } else {
                    RgbImage::from_fn(w, h, |x, y| Rgb([0, 1, 2].map(|c| value(x, y, c))))
                        .save(file)
                        .unwrap();
                }
            }
        }
    }
}

const MOBILE: &str = "models/mobile/mobile_se_opset13.onnx";

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn eval_resizes_and_crops_mixed_sizes_to_the_models_input_and_normalises() {
    let dir = tempfile::tempdir().unwrap();
    image_folder(dir.path(), false);
    let data = path_str(dir.path());
    // Without a resize the sizes differ, and the message says what to do.
    let o = compress(&["eval", MOBILE, "--data", data, "--runs", "1"]);
    assert_clean_error(&o, &["1.png: image is 3×16×32", "resize and centre-crop"]);
    // The mobile model takes 3×16×16: the crop defaults to it.
    let r = json(&compress(&[
        "eval",
        MOBILE,
        "--data",
        data,
        "--runs",
        "1",
        "--json",
        "--resize",
        "16",
        "--mean",
        "0.5,0.4,0.3",
        "--std",
        "0.25",
    ]));
    assert_eq!(r["total"], 4);
    assert_eq!(
        r["preprocess"],
        serde_json::json!({
            "resize": 16,
            "crop": [16, 16],
            "channel_order": "rgb",
            "normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.25]}
        })
    );
    // A mean alone divides by 1; --crop alone cuts the centre of images at least that large.
    let r = json(&compress(&[
        "eval", MOBILE, "--data", data, "--runs", "1", "--json", "--crop", "16x16", "--mean",
        "-0.5",
    ]));
    assert_eq!(r["preprocess"]["resize"], serde_json::Value::Null);
    assert_eq!(
        r["preprocess"]["normalize"]["std"],
        serde_json::json!([1.0])
    );
}

#[test]
fn finetune_and_compress_prepare_train_val_and_test_alike_and_record_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data, val) = (dir.path().join("data"), dir.path().join("val"));
    image_folder(&data, false);
    image_folder(&val, false);
    let out = dir.path().join("tuned.onnx");
    let flags = [
        "--resize",
        "20",
        "--crop",
        "16x16",
        "--channel-order",
        "bgr",
        "--mean",
        "0.4",
        "--std",
        "0.2,0.3,0.25",
    ];
    let mut args = vec![
        "finetune",
        MOBILE,
        "--data",
        path_str(&data),
        "-o",
        path_str(&out),
    ];
    args.extend(["--epochs", "1", "--batch", "2", "--quiet", "--json"]);
    args.extend(flags);
    let r = json(&compress(&args));
    assert_eq!(r["test_images"], 4);
    assert_eq!(r["preprocess"]["crop"], serde_json::json!([16, 16]));
    assert_eq!(r["preprocess"]["channel_order"], "bgr");

    let (small, report) = (dir.path().join("small.onnx"), dir.path().join("r.json"));
    let mut args = vec![MOBILE, "--data", path_str(&data), "--val", path_str(&val)];
    args.extend(["-o", path_str(&small), "--report", path_str(&report)]);
    args.extend([
        "--strategy",
        "oneshot",
        "--target-macs",
        "0.9",
        "--epochs",
        "1",
    ]);
    args.extend(["--batch", "2", "--latency-runs", "1", "--force", "--quiet"]);
    args.extend(flags);
    let o = compress(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        r["preprocess"],
        serde_json::json!({
            "resize": 20,
            "crop": [16, 16],
            "channel_order": "bgr",
            "normalize": {"mean": [0.4], "std": [0.2, 0.3, 0.25]}
        })
    );
    assert!(
        r["validation"].as_str().unwrap().contains("(4 images)"),
        "{r}"
    );
    // --val's mixed sizes loaded, so they were resized too; and they are cropped: a --val
    // image smaller than the crop is named.
    RgbImage::new(12, 10)
        .save(val.join("test/a/tiny.png"))
        .unwrap();
    let mut args = vec![MOBILE, "--data", path_str(&data), "--val", path_str(&val)];
    args.extend([
        "-o",
        path_str(&small),
        "--force",
        "--quiet",
        "--crop",
        "16x16",
    ]);
    assert_clean_error(
        &compress(&args),
        &["--crop: ", "tiny.png: the image is 10×12", "16×16 crop"],
    );
}

#[test]
fn bad_preprocessing_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    image_folder(dir.path(), false);
    let data = path_str(dir.path());
    let eval = |flags: &[&str]| {
        let mut args = vec!["eval", MOBILE, "--data", data, "--runs", "1"];
        args.extend(flags);
        compress(&args)
    };
    assert_clean_error(
        &eval(&["--resize", "16", "--mean", "0.1,0.2"]),
        &["--mean: 2 values", "3 channel"],
    );
    assert_clean_error(
        &eval(&["--resize", "16", "--std", "0.5,-1,0.5"]),
        &["--std: -1", "above zero"],
    );
    assert_clean_error(&eval(&["--mean", "nan"]), &["--mean: NaN", "finite"]);
    assert_clean_error(&eval(&["--resize", "5000"]), &["--resize: 5000", "4096"]);
    assert_clean_error(
        &eval(&["--resize", "16", "--crop", "40x40"]),
        &["--crop", "smaller than the 40×40 crop"],
    );
    // --crop's form is clap's to refuse, with the usage.
    let o = eval(&["--crop", "16"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give the height and width"));
    // MNIST: one channel, and IDX files hold no images to resize.
    let mnist = mnist();
    let lenet = [
        "eval",
        "models/lenet5_opset17.onnx",
        "--data",
        path_str(&mnist),
        "--runs",
        "1",
    ];
    let with = |flags: &[&str]| compress(&[&lenet[..], flags].concat());
    assert_clean_error(
        &with(&["--channel-order", "bgr"]),
        &["--channel-order", "1 channel"],
    );
    assert_clean_error(
        &with(&["--resize", "28"]),
        &["--resize", "image folders", "MNIST IDX"],
    );
}

#[test]
fn a_model_with_an_open_input_needs_a_crop_to_resize_to() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    image_folder(&data, true);
    let model = open_lenet(dir.path());
    let eval = |flags: &[&str]| {
        let args = [
            "eval",
            path_str(&model),
            "--data",
            path_str(&data),
            "--runs",
            "1",
            "--json",
        ];
        compress(&[&args[..], flags].concat())
    };
    assert_clean_error(
        &eval(&["--resize", "28"]),
        &["open", "--crop HxW", "--input-shape"],
    );
    let r = json(&eval(&["--resize", "28", "--crop", "28x28"]));
    assert_eq!(r["total"], 4);
    let r = json(&eval(&["--resize", "30", "--input-shape", "1x28x28"]));
    assert_eq!(r["preprocess"]["crop"], serde_json::json!([28, 28]));
}
