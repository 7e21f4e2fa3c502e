//! Constant tensors (initializers) held by the IR.

use crate::IrError;
use ndarray::{ArrayD, IxDyn};
use pare_onnx::proto::{tensor_proto::DataType, TensorProto};

/// A constant tensor. Float and int64 tensors are decoded to ndarray so passes can read and slice
/// them; any other type is kept as its original TensorProto and exported byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
    Other(Box<TensorProto>),
}

impl Tensor {
    /// Decodes an ONNX tensor (its data must already be inline, see `pare_onnx::read_model`).
    pub fn from_proto(t: &TensorProto) -> Result<Tensor, IrError> {
        let name = t.name.clone().unwrap_or_default();
        let bad = |problem: String| IrError::Tensor {
            tensor: name.clone(),
            problem,
        };
        let dims: Vec<usize> = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}"))))
            .collect::<Result<_, _>>()?;
        let count: usize = dims.iter().product();
        let data_type = t.data_type.unwrap_or_default();
        if data_type == DataType::Float as i32 {
            let values: Vec<f32> = match &t.raw_data {
                Some(raw) => le_values(raw, count, f32::from_le_bytes).ok_or_else(|| {
                    bad(format!(
                        "holds {} bytes, but {dims:?} float32 needs {}",
                        raw.len(),
                        4 * count
                    ))
                })?,
                None => t.float_data.clone(),
            };
            check_count(values.len(), count, &dims, &bad)?;
            return Ok(Tensor::F32(
                ArrayD::from_shape_vec(IxDyn(&dims), values).expect("count checked"),
            ));
        }
        if data_type == DataType::Int64 as i32 {
            let values: Vec<i64> = match &t.raw_data {
                Some(raw) => le_values(raw, count, i64::from_le_bytes).ok_or_else(|| {
                    bad(format!(
                        "holds {} bytes, but {dims:?} int64 needs {}",
                        raw.len(),
                        8 * count
                    ))
                })?,
                None => t.int64_data.clone(),
            };
            check_count(values.len(), count, &dims, &bad)?;
            return Ok(Tensor::I64(
                ArrayD::from_shape_vec(IxDyn(&dims), values).expect("count checked"),
            ));
        }
        Ok(Tensor::Other(Box::new(t.clone())))
    }

    /// Encodes the tensor as ONNX, with its values in `raw_data`.
    pub fn to_proto(&self, name: &str) -> TensorProto {
        let (data_type, dims, raw) = match self {
            Tensor::F32(a) => (
                DataType::Float,
                a.shape(),
                a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            Tensor::I64(a) => (
                DataType::Int64,
                a.shape(),
                a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            Tensor::Other(t) => {
                return TensorProto {
                    name: Some(name.into()),
                    ..(**t).clone()
                }
            }
        };
        TensorProto {
            name: Some(name.into()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type as i32),
            raw_data: Some(raw),
            ..Default::default()
        }
    }

    /// The ONNX element type.
    pub fn data_type(&self) -> i32 {
        match self {
            Tensor::F32(_) => DataType::Float as i32,
            Tensor::I64(_) => DataType::Int64 as i32,
            Tensor::Other(t) => t.data_type.unwrap_or_default(),
        }
    }

    pub fn shape(&self) -> Vec<usize> {
        match self {
            Tensor::F32(a) => a.shape().to_vec(),
            Tensor::I64(a) => a.shape().to_vec(),
            Tensor::Other(t) => t.dims.iter().map(|&d| d.max(0) as usize).collect(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<&ArrayD<i64>> {
        match self {
            Tensor::I64(a) => Some(a),
            _ => None,
        }
    }
}

fn le_values<T, const N: usize>(raw: &[u8], count: usize, f: fn([u8; N]) -> T) -> Option<Vec<T>> {
    (raw.len() == count * N).then(|| {
        raw.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N")))
            .collect()
    })
}

fn check_count(
    found: usize,
    count: usize,
    dims: &[usize],
    bad: &impl Fn(String) -> IrError,
) -> Result<(), IrError> {
    if found == count {
        Ok(())
    } else {
        Err(bad(format!(
            "holds {found} values, but its shape {dims:?} needs {count}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pare_onnx::attr::{tensor_f32, tensor_i64};

    #[test]
    fn typed_fields_and_raw_data_decode_alike() {
        let t = tensor_f32("w", &[2, 2], vec![1.0, -2.0, 3.5, 0.0]);
        let decoded = Tensor::from_proto(&t).unwrap();
        let again = Tensor::from_proto(&decoded.to_proto("w")).unwrap();
        assert_eq!(decoded, again);
        assert_eq!(decoded.as_f32().unwrap()[[1, 0]], 3.5);
        let i = Tensor::from_proto(&tensor_i64("s", &[2], vec![1, -1])).unwrap();
        assert_eq!(i.as_i64().unwrap().as_slice().unwrap(), &[1, -1]);
    }

    #[test]
    fn a_tensor_whose_data_does_not_fill_its_shape_is_named() {
        let t = tensor_f32("conv.weight", &[2, 3], vec![1.0]);
        let e = Tensor::from_proto(&t).unwrap_err().to_string();
        assert!(e.contains("conv.weight") && e.contains("needs 6"), "{e}");
    }
}
