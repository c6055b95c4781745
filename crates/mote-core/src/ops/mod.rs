//! The operator set of the IR, one small type per op (or per op family).
//!
//! Every op implements [`crate::Op`]: shape/type inference plus evaluation. Float
//! ops evaluate in f32 (the float reference); f16 inputs are computed in f32 and
//! rounded back.

pub mod attention;
pub mod conv;
pub mod deeploy;
pub mod elementwise;
pub mod matmul;
pub mod nn;
pub mod quant;
pub mod shape;

/// Resolves a possibly negative axis against a rank, with a clear error.
pub fn resolve_axis(axis: i64, rank: usize) -> crate::Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r.max(1) {
        crate::bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}
