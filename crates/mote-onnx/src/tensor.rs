//! Decoding `TensorProto` (initializers, `Constant` values, tensor attributes).
use crate::proto::{tensor_proto::DataType, TensorProto};
use half::f16;
use mote_core::{ensure, DType, Result, Tensor, TensorType};

/// Maps an ONNX element type code to a mote [`DType`]. Wider types that only carry
/// shape arithmetic (f64, u32, u64) map to the nearest mote type.
pub fn dtype_from_onnx(code: i32) -> Result<DType> {
    let dt =
        DataType::try_from(code).map_err(|_| mote_core::Error::Invalid(format!("unknown element type code {code}")))?;
    Ok(match dt {
        DataType::Float | DataType::Double => DType::F32,
        DataType::Float16 => DType::F16,
        DataType::Int8 => DType::I8,
        DataType::Uint8 => DType::U8,
        DataType::Int16 => DType::I16,
        DataType::Int32 | DataType::Uint16 => DType::I32,
        DataType::Int64 | DataType::Uint32 | DataType::Uint64 => DType::I64,
        DataType::Bool => DType::Bool,
        other => {
            return Err(mote_core::Error::Unsupported(format!(
                "element type {} is not supported (mote supports f32, f16, i8, u8, i16, i32, i64, bool)",
                other.as_str_name()
            )))
        }
    })
}

fn le_chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| c.try_into().expect("exact chunk"))
}

/// Decodes a tensor from raw_data or the typed fields, checking sizes.
pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor> {
    let name = t.name();
    let what = |msg: String| mote_core::Error::Invalid(format!("tensor `{name}`: {msg}"));
    ensure!(t.data_location != Some(1), "tensor `{name}` uses external data, which mote does not read; re-export with the weights inside the .onnx file");
    let dt =
        DataType::try_from(t.data_type()).map_err(|_| what(format!("unknown element type code {}", t.data_type())))?;
    let dtype = dtype_from_onnx(t.data_type()).map_err(|e| what(e.to_string()))?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        ensure!(d >= 0, "tensor `{name}` has a negative dimension {d}");
        shape.push(d as usize);
    }
    let n = TensorType::new(dtype, shape.clone()).checked_len().map_err(|e| what(e.to_string()))?;
    let raw = t.raw_data();
    let has_raw = t.raw_data.is_some();
    macro_rules! from_raw {
        ($ty:ty, $n:literal, $conv:expr) => {{
            ensure!(
                raw.len() == n * $n,
                "tensor `{name}`: raw_data has {} bytes, {} expected for shape {:?}",
                raw.len(),
                n * $n,
                shape
            );
            let v: Vec<_> = le_chunks::<$n>(raw).map(|b| $conv(<$ty>::from_le_bytes(b))).collect();
            Tensor::from_vec(&shape, v)?
        }};
    }
    macro_rules! from_field {
        ($field:expr, $conv:expr) => {{
            let f = &$field;
            ensure!(f.len() == n, "tensor `{name}`: has {} values, {} expected for shape {:?}", f.len(), n, shape);
            Tensor::from_vec(&shape, f.iter().map(|&x| $conv(x)).collect::<Vec<_>>())?
        }};
    }
    let out = match dt {
        DataType::Float if has_raw => from_raw!(f32, 4, |x| x),
        DataType::Float => from_field!(t.float_data, |x: f32| x),
        DataType::Double if has_raw => from_raw!(f64, 8, |x: f64| x as f32),
        DataType::Double => from_field!(t.double_data, |x: f64| x as f32),
        DataType::Float16 if has_raw => from_raw!(u16, 2, f16::from_bits),
        DataType::Float16 => from_field!(t.int32_data, |x: i32| f16::from_bits(x as u16)),
        DataType::Int8 if has_raw => from_raw!(i8, 1, |x| x),
        DataType::Int8 => from_field!(t.int32_data, |x: i32| x as i8),
        DataType::Uint8 if has_raw => from_raw!(u8, 1, |x| x),
        DataType::Uint8 => from_field!(t.int32_data, |x: i32| x as u8),
        DataType::Int16 if has_raw => from_raw!(i16, 2, |x| x),
        DataType::Int16 => from_field!(t.int32_data, |x: i32| x as i16),
        DataType::Uint16 if has_raw => from_raw!(u16, 2, |x: u16| x as i32),
        DataType::Uint16 => from_field!(t.int32_data, |x: i32| x),
        DataType::Int32 if has_raw => from_raw!(i32, 4, |x| x),
        DataType::Int32 => from_field!(t.int32_data, |x: i32| x),
        DataType::Int64 if has_raw => from_raw!(i64, 8, |x| x),
        DataType::Int64 => from_field!(t.int64_data, |x: i64| x),
        DataType::Uint32 if has_raw => from_raw!(u32, 4, |x: u32| x as i64),
        DataType::Uint32 => from_field!(t.uint64_data, |x: u64| x as i64),
        DataType::Uint64 if has_raw => from_raw!(u64, 8, |x: u64| x as i64),
        DataType::Uint64 => from_field!(t.uint64_data, |x: u64| x as i64),
        DataType::Bool if has_raw => from_raw!(u8, 1, |x: u8| x != 0),
        DataType::Bool => from_field!(t.int32_data, |x: i32| x != 0),
        _ => unreachable!("dtype_from_onnx rejected other types"),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dt: DataType, dims: &[i64]) -> TensorProto {
        TensorProto { name: Some("w".into()), data_type: Some(dt as i32), dims: dims.to_vec(), ..Default::default() }
    }

    #[test]
    fn typed_fields_decode() {
        let mut t = proto(DataType::Float, &[2]);
        t.float_data = vec![1.5, -2.0];
        assert_eq!(tensor_from_proto(&t).unwrap(), Tensor::from_vec(&[2], vec![1.5f32, -2.0]).unwrap());
        let mut t = proto(DataType::Int8, &[3]);
        t.int32_data = vec![-128, 0, 127];
        assert_eq!(tensor_from_proto(&t).unwrap(), Tensor::from_vec(&[3], vec![-128i8, 0, 127]).unwrap());
        let mut t = proto(DataType::Int64, &[1, 2]);
        t.int64_data = vec![i64::MIN, 7];
        assert_eq!(tensor_from_proto(&t).unwrap(), Tensor::from_vec(&[1, 2], vec![i64::MIN, 7]).unwrap());
        let mut t = proto(DataType::Float16, &[2]);
        t.int32_data = vec![0x3c00, 0xc000]; // 1.0, -2.0
        assert_eq!(tensor_from_proto(&t).unwrap().to_f32().into_raw_vec_and_offset().0, vec![1.0, -2.0]);
        let mut t = proto(DataType::Double, &[]);
        t.double_data = vec![0.25];
        assert_eq!(tensor_from_proto(&t).unwrap(), Tensor::scalar(0.25f32));
    }

    #[test]
    fn raw_data_decodes_little_endian() {
        let mut t = proto(DataType::Float16, &[2]);
        t.raw_data = Some(vec![0x00, 0x3c, 0x00, 0xc0]);
        assert_eq!(tensor_from_proto(&t).unwrap().dtype(), DType::F16);
        assert_eq!(tensor_from_proto(&t).unwrap().to_f32().into_raw_vec_and_offset().0, vec![1.0, -2.0]);
        let mut t = proto(DataType::Int32, &[2]);
        t.raw_data = Some([5i32.to_le_bytes(), (-6i32).to_le_bytes()].concat());
        assert_eq!(tensor_from_proto(&t).unwrap(), Tensor::from_vec(&[2], vec![5i32, -6]).unwrap());
        let mut t = proto(DataType::Bool, &[3]);
        t.raw_data = Some(vec![1, 0, 2]);
        assert_eq!(tensor_from_proto(&t).unwrap(), Tensor::from_vec(&[3], vec![true, false, true]).unwrap());
        let mut t = proto(DataType::Uint8, &[2]);
        t.raw_data = Some(vec![0, 255]);
        assert_eq!(tensor_from_proto(&t).unwrap(), Tensor::from_vec(&[2], vec![0u8, 255]).unwrap());
    }

    #[test]
    fn inconsistent_tensors_are_errors() {
        let mut t = proto(DataType::Float, &[3]);
        t.raw_data = Some(vec![0; 8]);
        let e = tensor_from_proto(&t).unwrap_err().to_string();
        assert!(e.contains("`w`") && e.contains("8 bytes, 12 expected"), "{e}");
        let mut t = proto(DataType::Float, &[2, 2]);
        t.float_data = vec![1.0];
        assert!(tensor_from_proto(&t).unwrap_err().to_string().contains("1 values, 4 expected"));
        let t = proto(DataType::Float, &[1 << 40, 1 << 40]);
        assert!(tensor_from_proto(&t).unwrap_err().to_string().contains("more than"));
        let t = proto(DataType::String, &[1]);
        assert!(tensor_from_proto(&t).unwrap_err().to_string().contains("STRING"));
        let t = proto(DataType::Float, &[-1]);
        assert!(tensor_from_proto(&t).unwrap_err().to_string().contains("negative"));
    }
}
