//! Reading and writing `.npz` archives of tensors (numpy's `savez` format).
//! Arrays keep the order they were written in, which is what binds them to
//! graph inputs when the names differ (see the peer models' conventions).
use crate::{Error, Result, Tensor};
use ndarray::ArrayD;
use npyz::{npz, TypeChar, WriterBuilder};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

/// Reads every array of an `.npz` file, in archive order.
pub fn read(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let err = |msg: String| Error::file(path.display(), msg);
    let mut archive = npz::NpzArchive::new(BufReader::new(File::open(path).map_err(|e| err(e.to_string()))?))
        .map_err(|e| err(format!("not an .npz archive ({e})")))?;
    let zip = archive.zip_archive();
    let mut names = Vec::new();
    for i in 0..zip.len() {
        let f = zip.by_index(i).map_err(|e| err(format!("corrupt archive entry #{i} ({e})")))?;
        if let Some(n) = npz::array_name_from_file_name(f.name()) {
            names.push(n.to_string());
        }
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let npy = archive
            .by_name(&name)
            .map_err(|e| err(format!("array `{name}`: {e}")))?
            .ok_or_else(|| err(format!("array `{name}` vanished while reading")))?;
        let t = read_array(npy).map_err(|m| err(format!("array `{name}`: {m}")))?;
        out.push((name, t));
    }
    Ok(out)
}

fn read_array<R: std::io::Read>(npy: npyz::NpyFile<R>) -> std::result::Result<Tensor, String> {
    // A Fortran-ordered array is the row-major array of the reversed shape, transposed.
    let fortran = npy.order() == npyz::Order::Fortran;
    let mut shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if fortran {
        shape.reverse();
    }
    let n: usize = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    if n > crate::tensor::MAX_ELEMENTS {
        return Err(format!("{n} elements is more than mote reads"));
    }
    let npyz::DType::Plain(ts) = npy.dtype() else { return Err("structured arrays are not supported".into()) };
    let e = |x: std::io::Error| x.to_string();
    macro_rules! arr {
        ($t:ty) => {
            ArrayD::from_shape_vec(shape.clone(), npy.into_vec::<$t>().map_err(e)?).map_err(|x| x.to_string())?
        };
    }
    let t = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => Tensor::F32(arr!(f32)),
        (TypeChar::Float, 8) => Tensor::F32(arr!(f64).mapv(|v| v as f32)),
        (TypeChar::Int, 1) => Tensor::I8(arr!(i8)),
        (TypeChar::Uint, 1) => Tensor::U8(arr!(u8)),
        (TypeChar::Int, 2) => Tensor::I16(arr!(i16)),
        (TypeChar::Uint, 2) => Tensor::I32(arr!(u16).mapv(i32::from)),
        (TypeChar::Int, 4) => Tensor::I32(arr!(i32)),
        (TypeChar::Uint, 4) => Tensor::I64(arr!(u32).mapv(i64::from)),
        (TypeChar::Int, 8) => Tensor::I64(arr!(i64)),
        (TypeChar::Bool, 1) => Tensor::Bool(arr!(bool)),
        _ => return Err(format!("element type `{ts}` is not supported")),
    };
    if fortran {
        let rev: Vec<usize> = (0..shape.len()).rev().collect();
        return Ok(crate::map_same!(t, a => a.permuted_axes(rev).as_standard_layout().into_owned()));
    }
    Ok(t)
}

/// Writes named tensors to an `.npz` file (f16 is widened to f32). The file is
/// written to a temporary name and renamed, so a failure leaves no partial file.
pub fn write(path: impl AsRef<Path>, arrays: &[(String, Tensor)]) -> Result<()> {
    let path = path.as_ref();
    let err = |msg: String| Error::file(path.display(), msg);
    let tmp = path.with_extension("npz.partial");
    let result = (|| -> std::io::Result<()> {
        let mut w = npz::NpzWriter::new(BufWriter::new(File::create(&tmp)?));
        for (name, t) in arrays {
            let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
            macro_rules! put {
                ($t:ty, $a:expr) => {{
                    let mut aw = w.array::<$t>(name, Default::default())?.default_dtype().shape(&shape).begin_nd()?;
                    aw.extend($a.iter().cloned())?;
                    aw.finish()?;
                }};
            }
            match t {
                Tensor::F32(a) => put!(f32, a),
                Tensor::F16(a) => put!(f32, a.mapv(|v| v.to_f32())),
                Tensor::I8(a) => put!(i8, a),
                Tensor::U8(a) => put!(u8, a),
                Tensor::I16(a) => put!(i16, a),
                Tensor::I32(a) => put!(i32, a),
                Tensor::I64(a) => put!(i64, a),
                Tensor::Bool(a) => put!(bool, a),
            }
        }
        w.zip_writer().finish()?;
        Ok(())
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| err(e.to_string())),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(err(e.to_string()))
        }
    }
}
