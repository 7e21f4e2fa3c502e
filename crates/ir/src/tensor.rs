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
        let count = element_count(&dims).ok_or_else(|| {
            bad(format!(
                "shape {dims:?} has more elements than memory can hold"
            ))
        })?;
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
        check_other(t, count, &dims).map_err(bad)?;
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

/// The number of elements of a shape, if it and its size in bytes at 8 bytes each fit in memory
/// (`isize::MAX` bytes, ndarray's limit).
pub(crate) fn element_count(dims: &[usize]) -> Option<usize> {
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
    (count <= isize::MAX as usize / 8).then_some(count)
}

/// Checks that a tensor pare keeps undecoded holds as much data as its type and shape need:
/// exporters and tract read it later, and a short buffer there is out-of-bounds reading.
fn check_other(t: &TensorProto, count: usize, dims: &[usize]) -> Result<(), String> {
    use DataType as D;
    if t.data_location == Some(pare_onnx::proto::tensor_proto::DataLocation::External as i32) {
        return Err(
            "its data is still external; read the model with pare_onnx::read_model, which loads it"
                .into(),
        );
    }
    let data_type = t.data_type.unwrap_or_default();
    let kind = D::try_from(data_type)
        .ok()
        .filter(|&k| k != D::Undefined)
        .ok_or_else(|| format!("data type {data_type} is not an ONNX tensor type"))?;
    // Bytes per element in raw_data (4-bit types pack two per byte), and where typed data lives.
    let (bytes, typed, per_element) = match kind {
        D::Uint8 | D::Int8 | D::Bool => (Some(1), t.int32_data.len(), 1),
        D::Float8e4m3fn | D::Float8e4m3fnuz | D::Float8e5m2 | D::Float8e5m2fnuz => {
            (Some(1), t.int32_data.len(), 1)
        }
        D::Uint16 | D::Int16 | D::Float16 | D::Bfloat16 => (Some(2), t.int32_data.len(), 1),
        D::Int32 => (Some(4), t.int32_data.len(), 1),
        D::Double => (Some(8), t.double_data.len(), 1),
        D::Uint32 | D::Uint64 => (
            Some(if kind == D::Uint32 { 4 } else { 8 }),
            t.uint64_data.len(),
            1,
        ),
        D::Complex64 => (Some(8), t.float_data.len(), 2),
        D::Complex128 => (Some(16), t.double_data.len(), 2),
        D::String => (None, t.string_data.len(), 1),
        // Packed 4-bit types and any type newer than this check: not counted.
        _ => return Ok(()),
    };
    match (&t.raw_data, bytes) {
        (Some(raw), Some(size)) => {
            if raw.len() as u128 != count as u128 * size {
                return Err(format!(
                    "holds {} bytes, but {dims:?} {} needs {}",
                    raw.len(),
                    kind.as_str_name(),
                    count as u128 * size
                ));
            }
        }
        (Some(_), None) => return Err("a string tensor cannot use raw_data".into()),
        (None, _) => {
            if typed as u128 != count as u128 * per_element {
                return Err(format!(
                    "holds {typed} values, but {dims:?} {} needs {}",
                    kind.as_str_name(),
                    count as u128 * per_element
                ));
            }
        }
    }
    Ok(())
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
