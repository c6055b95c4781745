//! Calibration: activation ranges observed while running the float model on sample inputs,
//! turned into int8 parameters by min/max, a percentile, or the range with the least
//! quantization error (MSE).
use super::Affine;
use crate::{Graph, Result, Tensor, TensorId};
use std::collections::HashMap;

/// How an observed distribution becomes an int8 range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// The full observed range.
    MinMax,
    /// The central `p` percent of observed values (e.g. 99.99), clipping outliers.
    Percentile(f64),
    /// The shrunken range (a grid of 1.0 down to 0.05 of min/max) with the least squared error.
    Mse,
}

/// Values kept per tensor for percentile/MSE (a uniform reservoir sample).
const RESERVOIR: usize = 16_384;

/// Running statistics of one tensor over all calibration samples.
#[derive(Clone, Debug)]
pub struct Observer {
    /// Smallest value seen.
    pub min: f32,
    /// Largest value seen.
    pub max: f32,
    sample: Vec<f32>,
    seen: u64,
    rng: u64,
}

impl Default for Observer {
    fn default() -> Self {
        Observer { min: f32::INFINITY, max: f32::NEG_INFINITY, sample: Vec::new(), seen: 0, rng: 0x9E37_79B9_7F4A_7C15 }
    }
}

impl Observer {
    /// Records every value of `t` (NaN and infinities are ignored).
    pub fn observe(&mut self, t: &Tensor) {
        for &v in t.to_f32().iter().filter(|v| v.is_finite()) {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            // Reservoir sampling with a fixed-seed xorshift: deterministic across runs.
            self.seen += 1;
            if self.sample.len() < RESERVOIR {
                self.sample.push(v);
            } else {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                let j = (self.rng % self.seen) as usize;
                if j < RESERVOIR {
                    self.sample[j] = v;
                }
            }
        }
    }

    /// The calibrated int8 parameters (a tensor never seen gets the range [0, 0]).
    pub fn int8(&self, method: Method) -> Affine {
        if self.sample.is_empty() {
            return Affine::int8_from_range(0.0, 0.0);
        }
        let (min, max) = (f64::from(self.min), f64::from(self.max));
        match method {
            Method::MinMax => Affine::int8_from_range(min, max),
            Method::Percentile(p) => {
                let mut s = self.sample.clone();
                s.sort_by(f32::total_cmp);
                let at = |q: f64| f64::from(s[((s.len() - 1) as f64 * q).round() as usize]);
                let tail = (100.0 - p.clamp(50.0, 100.0)) / 200.0;
                Affine::int8_from_range(at(tail).max(min), at(1.0 - tail).min(max))
            }
            Method::Mse => (1..=20)
                .map(|k| Affine::int8_from_range(min * f64::from(k) / 20.0, max * f64::from(k) / 20.0))
                .map(|a| (self.squared_error(&a), a))
                .min_by(|x, y| x.0.total_cmp(&y.0))
                .map(|(_, a)| a)
                .expect("twenty candidates"),
        }
    }

    fn squared_error(&self, a: &Affine) -> f64 {
        let (s, z) = (a.scale[0], f64::from(a.zero_point[0]));
        self.sample
            .iter()
            .map(|&v| {
                let q = (f64::from(v) / s + z).round().clamp(-128.0, 127.0);
                (f64::from(v) - (q - z) * s).powi(2)
            })
            .sum()
    }
}

/// Runs the float graph on every sample and observes the tensors in `ids`.
pub fn calibrate(g: &Graph, samples: &[Vec<Tensor>], ids: &[TensorId]) -> Result<HashMap<TensorId, Observer>> {
    let mut obs: HashMap<TensorId, Observer> = ids.iter().map(|&i| (i, Observer::default())).collect();
    for inputs in samples {
        g.run_observed(inputs.clone(), |id, t| {
            if let Some(o) = obs.get_mut(&id) {
                o.observe(t);
            }
        })?;
    }
    Ok(obs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observer(values: &[f32]) -> Observer {
        let mut o = Observer::default();
        o.observe(&Tensor::from_vec(&[values.len()], values.to_vec()).unwrap());
        o
    }

    #[test]
    fn min_max_and_percentile() {
        // 1000 values in [0, 1) plus one outlier at 100.
        let mut v: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        v.push(100.0);
        let o = observer(&v);
        assert_eq!((o.min, o.max), (0.0, 100.0));
        let (s, z) = o.int8(Method::MinMax).single("t").unwrap();
        assert!((s - 100.0 / 255.0).abs() < 1e-9 && z == -128);
        // The 99.8th percentile drops the outlier: the range ends near 0.999.
        let (s, _) = o.int8(Method::Percentile(99.8)).single("t").unwrap();
        assert!((s * 255.0 - 0.999).abs() < 0.01, "range {}", s * 255.0);
        // MSE keeps the outlier: clipping it would cost more than the coarser grid.
        assert_eq!(o.int8(Method::Mse), o.int8(Method::MinMax));
    }

    #[test]
    fn mse_picks_the_least_error_on_the_grid() {
        // Exponentially distributed values (-ln u).
        let v: Vec<f32> = (1..=5000).map(|i| -((i as f32 / 5001.0).ln())).collect();
        let o = observer(&v);
        let mse = o.int8(Method::Mse);
        let best = (1..=20)
            .map(|k| o.squared_error(&Affine::int8_from_range(0.0, f64::from(o.max) * f64::from(k) / 20.0)))
            .fold(f64::INFINITY, f64::min);
        assert_eq!(o.squared_error(&mse), best);
    }

    #[test]
    fn reservoir_is_bounded_and_deterministic() {
        let v: Vec<f32> = (0..100_000).map(|i| (i % 977) as f32).collect();
        let (a, b) = (observer(&v), observer(&v));
        assert_eq!(a.sample.len(), RESERVOIR);
        assert_eq!(a.sample, b.sample);
    }
}
