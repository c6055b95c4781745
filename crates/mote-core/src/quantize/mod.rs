//! Quantization: affine parameters, weight quantization, calibration, and the lowering of QDQ
//! graphs (float ops between `DequantizeLinear` and `QuantizeLinear`) to mote's int8 ops.
//!
//! mote's int8 scheme: activations int8 per tensor (asymmetric, zero point in the data),
//! weights int8 symmetric per output channel, biases int32 at `s_x·s_w`. Every real-valued
//! factor becomes a Q31 multiplier and shift on the host; the MCU runs integers only.
pub mod calib;
pub mod exact;
pub mod fakequant;
pub mod lower;
pub mod plan;

use crate::{bail, Graph, Result, Tensor, TensorId};
use std::collections::HashMap;

/// Affine parameters of one tensor (`real = scale·(q − zero_point)`), per tensor or per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Affine {
    /// One scale, or one per channel along `axis`.
    pub scale: Vec<f64>,
    /// Zero points, same length as `scale`.
    pub zero_point: Vec<i32>,
    /// Channel axis when per channel.
    pub axis: Option<usize>,
}

impl Affine {
    /// Per-tensor parameters.
    pub fn per_tensor(scale: f64, zero_point: i32) -> Affine {
        Affine { scale: vec![scale], zero_point: vec![zero_point], axis: None }
    }

    /// True when there is one scale for the whole tensor.
    pub fn is_per_tensor(&self) -> bool {
        self.scale.len() == 1
    }

    /// The per-tensor `(scale, zero_point)`, or an error naming `what`.
    pub fn single(&self, what: &str) -> Result<(f64, i32)> {
        if !self.is_per_tensor() {
            bail!("{what} is quantized per channel; mote needs one scale for it");
        }
        Ok((self.scale[0], self.zero_point[0]))
    }

    /// Int8 activation parameters covering `[min, max]` (widened to include 0), asymmetric.
    pub fn int8_from_range(min: f64, max: f64) -> Affine {
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zp = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i32;
        Affine::per_tensor(scale, zp)
    }
}

/// Symmetric int8 quantization of `data` (row-major `shape`) per channel along `axis`
/// (`None`: one scale). Returns the int8 values and the scales (`max|w|/127`, 1 for all-zero
/// channels, so no scale is ever 0).
pub fn quantize_symmetric(data: &[f32], shape: &[usize], axis: Option<usize>) -> (Vec<i8>, Vec<f64>) {
    let (channels, inner) = match axis {
        Some(a) => (shape[a], shape[a + 1..].iter().product::<usize>()),
        None => (1, 1),
    };
    let channel = |i: usize| (i / inner) % channels;
    let mut max = vec![0f64; channels];
    for (i, &v) in data.iter().enumerate() {
        let c = channel(i);
        max[c] = max[c].max(f64::from(v).abs());
    }
    let scales: Vec<f64> = max.iter().map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 }).collect();
    let q = data
        .iter()
        .enumerate()
        .map(|(i, &v)| (f64::from(v) / scales[channel(i)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

/// Per-tensor SQNR (dB) of the int8 graph against the float graph over `samples`: the float
/// tensor `t` against the dequantized int8 tensor named `t:q`, for each name in `names`
/// (names absent from either graph are skipped), then every graph output.
pub fn layer_sqnr(float: &Graph, int: &Graph, names: &[String], samples: &[Vec<Tensor>]) -> Result<Vec<(String, f64)>> {
    let float_ids: HashMap<&str, TensorId> =
        float.values.iter().enumerate().map(|(i, v)| (v.name.as_str(), i)).collect();
    let int_ids: HashMap<&str, TensorId> = int.values.iter().enumerate().map(|(i, v)| (v.name.as_str(), i)).collect();
    let pairs: Vec<(String, TensorId, TensorId)> = names
        .iter()
        .filter_map(|n| Some((n.clone(), *float_ids.get(n.as_str())?, *int_ids.get(format!("{n}:q").as_str())?)))
        .collect();
    let mut acc: Vec<(f64, f64)> = vec![(0.0, 0.0); pairs.len() + float.outputs.len()];
    for inputs in samples {
        let mut fv: HashMap<TensorId, Vec<f32>> = HashMap::new();
        let f_out = float.run_observed(inputs.clone(), |id, t| {
            if pairs.iter().any(|p| p.1 == id) {
                fv.insert(id, t.to_f32().iter().copied().collect());
            }
        })?;
        let mut iv: HashMap<TensorId, Vec<f32>> = HashMap::new();
        let i_out = int.run_observed(inputs.clone(), |id, t| {
            if let Some(q) = int.values[id].quant.as_ref().filter(|_| pairs.iter().any(|p| p.2 == id)) {
                let (s, z) = (q.scale[0], q.zero_point[0] as f32);
                iv.insert(id, t.to_f32().iter().map(|&v| (v - z) * s).collect());
            }
        })?;
        let mut add = |k: usize, a: &[f32], b: &[f32]| {
            for (&x, &y) in a.iter().zip(b) {
                acc[k].0 += f64::from(x).powi(2);
                acc[k].1 += (f64::from(x) - f64::from(y)).powi(2);
            }
        };
        for (k, (_, f, i)) in pairs.iter().enumerate() {
            if let (Some(a), Some(b)) = (fv.get(f), iv.get(i)) {
                add(k, a, b);
            }
        }
        for (k, (a, b)) in f_out.iter().zip(&i_out).enumerate() {
            add(
                pairs.len() + k,
                &a.to_f32().iter().copied().collect::<Vec<_>>(),
                &b.to_f32().iter().copied().collect::<Vec<_>>(),
            );
        }
    }
    let db = |(s, n): (f64, f64)| if n == 0.0 { f64::INFINITY } else { 10.0 * (s / n).log10() };
    let mut out: Vec<(String, f64)> = pairs.iter().zip(&acc).map(|(p, &a)| (p.0.clone(), db(a))).collect();
    for (k, &o) in float.outputs.iter().enumerate() {
        out.push((format!("output {}", float.values[o].name), db(acc[pairs.len() + k])));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_range_maps_ends_to_bounds() {
        let a = Affine::int8_from_range(-1.0, 3.0);
        let (s, z) = a.single("x").unwrap();
        assert!((s - 4.0 / 255.0).abs() < 1e-12);
        assert_eq!(z, -64); // -128 + 1/s = -128 + 63.75 → -64.25 rounds to -64
        assert_eq!(Affine::int8_from_range(0.0, 0.0).single("x").unwrap(), (1.0, -128));
    }

    #[test]
    fn symmetric_per_channel() {
        // [2, 3] per row: row 0 max 2 → s = 2/127; row 1 all zero → s = 1.
        let (q, s) = quantize_symmetric(&[2.0, -1.0, 0.5, 0.0, 0.0, 0.0], &[2, 3], Some(0));
        assert_eq!(q, vec![127, -64, 32, 0, 0, 0]);
        assert_eq!(s, vec![2.0 / 127.0, 1.0]);
        let (q, s) = quantize_symmetric(&[1.0, -4.0], &[2], None);
        assert_eq!((q, s), (vec![32, -127], vec![4.0 / 127.0]));
    }
}
