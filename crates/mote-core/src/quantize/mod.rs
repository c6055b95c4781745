//! Quantization: affine parameters, weight quantization, calibration, and the lowering of QDQ
//! graphs (float ops between `DequantizeLinear` and `QuantizeLinear`) to mote's int8 ops.
//!
//! mote's int8 scheme: activations int8 per tensor (asymmetric, zero point in the data),
//! weights int8 symmetric per output channel, biases int32 at `s_x·s_w`. Every real-valued
//! factor becomes a Q31 multiplier and shift on the host; the MCU runs integers only.
pub mod calib;
pub mod lower;

use crate::{bail, Result};

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

/// Signal-to-quantization-noise ratio in dB: `10·log10(Σx² / Σ(x − y)²)` (∞ when equal).
pub fn sqnr_db(reference: &[f32], approx: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|&v| f64::from(v).powi(2)).sum();
    let noise: f64 = reference.iter().zip(approx).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum();
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
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

    #[test]
    fn sqnr() {
        assert_eq!(sqnr_db(&[1.0, 2.0], &[1.0, 2.0]), f64::INFINITY);
        assert!((sqnr_db(&[3.0, 4.0], &[3.0, 3.0]) - 10.0 * 25f64.log10()).abs() < 1e-12);
    }
}
