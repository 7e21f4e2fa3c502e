//! The preprocessing flags of every command that reads a dataset, and the one way those
//! commands load data with them, so training, validation and tract's test runs see the same
//! images.

use crate::{model, paths};
use anyhow::{anyhow, Context, Result};
use ndarray::{Array2, Array4, ArrayView4};
use pare_data::{
    ChannelOrder, Contents, DataError, Dataset, Normalize, Preprocess, Setting, Splits,
};
use pare_ir::Graph;
use pare_train::loss::argmax_rows;
use std::path::Path;

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
enum ChannelOrderArg {
    /// As decoded: red, green, blue.
    #[default]
    Rgb,
    /// Blue, green, red: swaps the first and third channel of colour images.
    Bgr,
}

/// `--crop HxW`: parsed here, its range checked with the other settings.
fn parse_crop(s: &str) -> Result<[u32; 2], String> {
    let sides: Option<Vec<u32>> = s.split('x').map(|d| d.trim().parse().ok()).collect();
    match sides.as_deref() {
        Some(&[h, w]) => Ok([h, w]),
        _ => Err(format!("'{s}': give the height and width, as in 224x224")),
    }
}

/// The help heading of the preprocessing flags (set on each, so flags after them keep theirs).
const HEADING: &str = "Preprocessing (every split, in this order)";

/// The preprocessing flags, in the order torchvision applies them: decode, resize, crop, scale
/// to 0..1, channel order, normalise. The same preprocessing applies to every split read.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PreprocessArgs {
    /// Image folders: resize each image so its shorter side is N pixels (bilinear, like
    /// torchvision's Resize(N)), then centre-crop it to --crop, so images of any size load.
    #[arg(long, value_name = "N", help_heading = HEADING)]
    resize: Option<u32>,
    /// Image folders: centre-crop each image (after --resize) to HxW. With --resize it defaults
    /// to the model's input height and width. Without either, all images must have one size.
    #[arg(long, value_name = "HxW", value_parser = parse_crop, help_heading = HEADING)]
    crop: Option<[u32; 2]>,
    /// The order of the colour channels the model takes (after scaling pixels to 0..1).
    #[arg(long, value_enum, default_value_t, help_heading = HEADING)]
    channel_order: ChannelOrderArg,
    /// Subtract this from each channel: one value per channel (M1,M2,M3), or one for all.
    /// Default 0 when --std is given.
    #[arg(
        long,
        value_name = "M1,M2,M3",
        value_delimiter = ',',
        allow_negative_numbers = true,
        help_heading = HEADING
    )]
    mean: Vec<f32>,
    /// Then divide each channel by this: one value per channel, or one for all, each above 0.
    /// Default 1 when --mean is given.
    #[arg(
        long,
        value_name = "S1,S2,S3",
        value_delimiter = ',',
        allow_negative_numbers = true,
        help_heading = HEADING
    )]
    std: Vec<f32>,
}

impl PreprocessArgs {
    /// The preprocessing the flags ask for, for the model `graph` (read from `model`): a resize
    /// without --crop crops to the model's input height and width, which must then be fixed.
    pub fn preprocess(&self, graph: &Graph, model: &Path) -> Result<Preprocess> {
        let crop = match (self.crop, self.resize) {
            (Some(crop), _) => Some(crop),
            (None, None) => None,
            (None, Some(_)) => Some(input_height_width(graph).ok_or_else(|| {
                anyhow!(
                    "{}: the model leaves its input height and width open, so --resize needs \
                     --crop HxW (or --input-shape CxHxW) to know what size to cut",
                    model.display()
                )
            })?),
        };
        let given = |values: &[f32], default: f32| match values {
            [] => vec![default],
            values => values.to_vec(),
        };
        let normalize = (!self.mean.is_empty() || !self.std.is_empty()).then(|| Normalize {
            mean: given(&self.mean, 0.0),
            std: given(&self.std, 1.0),
        });
        let preprocess = Preprocess {
            resize: self.resize,
            crop,
            channel_order: match self.channel_order {
                ChannelOrderArg::Rgb => ChannelOrder::Rgb,
                ChannelOrderArg::Bgr => ChannelOrder::Bgr,
            },
            normalize,
        };
        preprocess.check().map_err(naming_the_flag)?;
        Ok(preprocess)
    }
}

/// The height and width of the model's input, when it fixes both.
fn input_height_width(graph: &Graph) -> Option<[u32; 2]> {
    let shape = graph.value(*graph.inputs.first()?).shape.as_ref()?;
    let side = |i: usize| u32::try_from(shape.0.get(i)?.known()?).ok();
    (shape.rank() == 4).then_some([side(2)?, side(3)?])
}

/// A preprocessing error told with the flag that sets what is at fault.
fn naming_the_flag(e: DataError) -> anyhow::Error {
    let DataError::Preprocess { setting, problem } = e else {
        return e.into();
    };
    let flag = match setting {
        Setting::Resize => "--resize",
        Setting::Crop => "--crop",
        Setting::ChannelOrder => "--channel-order",
        Setting::Mean => "--mean",
        Setting::Std => "--std",
    };
    anyhow!("{flag}: {problem}")
}

/// Loads the dataset at `data` prepared as `preprocess` asks: every command and every split
/// (train, --val, test) goes through here.
pub fn load(data: &Path, preprocess: &Preprocess) -> Result<Splits> {
    pare_data::load_dir_with(data, preprocess).map_err(naming_the_flag)
}

/// Images per forward pass when the model scores a dataset.
const SCORING_BATCH: usize = 64;

/// The scores of the model `graph` (read from `model`) for every one of `images`, from pare's
/// forward pass with BatchNorm in inference mode.
pub fn scores_of(graph: &Graph, model: &Path, images: ArrayView4<f32>) -> Result<Array2<f32>> {
    pare_train::predict(graph, images, SCORING_BATCH)
        .with_context(|| format!("{}: scoring the images with the model", model.display()))
}

/// Unlabeled `images` labelled by the model `graph` (read from `model`): its top-1 class for each,
/// its scores kept as the teacher's.
pub fn labelled_by(graph: &Graph, model: &Path, images: Array4<f32>) -> Result<Dataset> {
    let scores = scores_of(graph, model, images.view())?;
    let mut data = Dataset::new(images, argmax_rows(scores.view()));
    data.teacher = Some(scores);
    Ok(data)
}

/// Loads the model (recording its files in `inputs`), then the dataset prepared as the flags ask,
/// labelled or not, then fixes a model input left open to the images' shape.
pub fn load_model_and_contents(
    model_path: &Path,
    shape: &model::InputShapeArg,
    data: &Path,
    flags: &PreprocessArgs,
    inputs: &mut paths::Inputs,
) -> Result<(Graph, Preprocess, Contents)> {
    let mut graph = model::load(model_path, shape, inputs)?;
    let preprocess = flags.preprocess(&graph, model_path)?;
    let contents = pare_data::load_contents_with(data, &preprocess).map_err(naming_the_flag)?;
    let images = match &contents {
        Contents::Labelled(splits) => &splits.train.images,
        Contents::Unlabeled(images) => images,
    };
    let (_, c, h, w) = images.dim();
    model::fix_open_input(&mut graph, model_path, data, [c, h, w])?;
    Ok((graph, preprocess, contents))
}

/// As [`load_model_and_contents`], for commands that need labels: unlabeled images are refused.
pub fn load_model_and_data(
    model_path: &Path,
    shape: &model::InputShapeArg,
    data: &Path,
    flags: &PreprocessArgs,
    inputs: &mut paths::Inputs,
) -> Result<(Graph, Preprocess, Splits)> {
    let (graph, preprocess, contents) =
        load_model_and_contents(model_path, shape, data, flags, inputs)?;
    match contents {
        Contents::Labelled(splits) => Ok((graph, preprocess, splits)),
        Contents::Unlabeled(images) => Err(DataError::Unlabeled {
            path: data.into(),
            count: images.dim().0,
        }
        .into()),
    }
}
