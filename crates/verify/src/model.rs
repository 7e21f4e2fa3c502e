//! A model as tract runs it: loaded from a file or from encoded bytes, with its input shape fixed.

use crate::VerifyError;
use ndarray::{Array2, ArrayView4, Axis};
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;

/// Where tract reads a model from: a file, or its encoded bytes before they are written.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    File(&'a Path),
    /// `path` is where the bytes will be written; it names the model in errors and reports.
    Bytes {
        path: &'a Path,
        bytes: &'a [u8],
    },
}

impl Source<'_> {
    /// The file the model is, or will be, written to.
    pub fn path(&self) -> &Path {
        match self {
            Source::File(path) | Source::Bytes { path, .. } => path,
        }
    }

    /// Loads the model with its first input fixed to `input_shape` (batch first).
    pub fn load(&self, input_shape: &[usize]) -> Result<TractModel, VerifyError> {
        match *self {
            Source::File(path) => TractModel::load(path, input_shape),
            Source::Bytes { path, bytes } => TractModel::from_bytes(path, bytes, input_shape),
        }
    }
}

/// A model loaded by tract for one fixed input shape.
pub struct TractModel {
    path: PathBuf,
    input_shape: Vec<usize>,
    plan: Arc<TypedRunnableModel>,
}

impl TractModel {
    /// Loads `path` with its first input fixed to `input_shape` (batch first), then optimises it.
    pub fn load(path: &Path, input_shape: &[usize]) -> Result<TractModel, VerifyError> {
        Self::build(path, input_shape, |onnx| onnx.model_for_path(path))
    }

    /// Loads a model from its encoded bytes (not yet written anywhere); `label` names it in
    /// errors and reports.
    pub fn from_bytes(
        label: &Path,
        bytes: &[u8],
        input_shape: &[usize],
    ) -> Result<TractModel, VerifyError> {
        Self::build(label, input_shape, |onnx| {
            onnx.model_for_read(&mut &bytes[..])
        })
    }

    fn build(
        path: &Path,
        input_shape: &[usize],
        read: impl FnOnce(&tract_onnx::Onnx) -> TractResult<InferenceModel>,
    ) -> Result<TractModel, VerifyError> {
        let load = || -> TractResult<Arc<TypedRunnableModel>> {
            // Exporters declare intermediate and output shapes with a symbolic batch; tract cannot
            // unify those with the fixed input, so it works them out again from the input.
            let onnx = tract_onnx::onnx()
                .with_ignore_value_info(true)
                .with_ignore_output_shapes(true);
            read(&onnx)?
                .with_input_fact(0, f32::fact(input_shape).into())?
                .into_optimized()?
                .into_runnable()
        };
        let plan = load().map_err(|e| VerifyError::Load {
            path: path.into(),
            reason: format!("{e:#}"),
        })?;
        Ok(TractModel {
            path: path.into(),
            input_shape: input_shape.to_vec(),
            plan,
        })
    }

    /// The input shape the model was loaded with, batch first.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    pub fn batch_size(&self) -> usize {
        self.input_shape[0]
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn plan(&self) -> &Arc<TypedRunnableModel> {
        &self.plan
    }

    /// `images` as tract's input tensor.
    pub(crate) fn input_tensor(&self, images: ArrayView4<f32>) -> Result<Tensor, VerifyError> {
        Tensor::from_shape(
            images.shape(),
            images
                .as_standard_layout()
                .as_slice()
                .expect("standard layout"),
        )
        .map_err(|e| VerifyError::Run {
            path: self.path.clone(),
            reason: format!("{e:#}"),
        })
    }

    /// Runs one batch of exactly the loaded batch size and returns the first output as
    /// `[batch, classes]`.
    pub fn run(&self, images: ArrayView4<f32>) -> Result<Array2<f32>, VerifyError> {
        let run_err = |reason: String| VerifyError::Run {
            path: self.path.clone(),
            reason,
        };
        let input = self.input_tensor(images)?;
        let outputs = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| run_err(format!("{e:#}")))?;
        let view = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| run_err(format!("{e:#}")))?;
        let shape = view.shape().to_vec();
        let batch = images.shape()[0];
        let per_sample = shape.iter().skip(1).product::<usize>();
        if shape.first() != Some(&batch) {
            return Err(VerifyError::OutputShape {
                path: self.path.clone(),
                shape,
            });
        }
        let flat: Vec<f32> = view.iter().copied().collect();
        Ok(Array2::from_shape_vec((batch, per_sample), flat).expect("sizes match"))
    }

    /// Runs every image of `images` (any count), padding the last batch, and returns all logits.
    pub fn run_all(&self, images: ArrayView4<f32>) -> Result<Array2<f32>, VerifyError> {
        let b = self.batch_size();
        let mut rows = Vec::new();
        for chunk in images.axis_chunks_iter(Axis(0), b) {
            let n = chunk.shape()[0];
            let logits = if n == b {
                self.run(chunk)?
            } else {
                let mut padded = ndarray::Array4::<f32>::zeros((
                    b,
                    chunk.shape()[1],
                    chunk.shape()[2],
                    chunk.shape()[3],
                ));
                padded
                    .slice_mut(ndarray::s![..n, .., .., ..])
                    .assign(&chunk);
                self.run(padded.view())?
                    .slice(ndarray::s![..n, ..])
                    .to_owned()
            };
            rows.push(logits);
        }
        let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
        Ok(ndarray::concatenate(Axis(0), &views).expect("same width"))
    }

    /// The number of logits per sample the model produces.
    pub fn class_count(&self) -> Result<usize, VerifyError> {
        let zeros = ndarray::Array4::<f32>::zeros(self.sample_dims(self.batch_size()));
        Ok(self.run(zeros.view())?.shape()[1])
    }

    fn sample_dims(&self, batch: usize) -> (usize, usize, usize, usize) {
        let s = &self.input_shape;
        (batch, s[1], s[2], s[3])
    }
}
