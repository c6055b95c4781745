//! The quantization table: float vs int8 (mote's PTQ and its lowering of onnxruntime's QDQ
//! models) on our digits model's test split, and output SQNR / top-1 agreement for the peer
//! float models (CCT, TinyViT, microLlama), whose test cases ship one random input each.
use anyhow::{bail, Context, Result};
use mote_core::quantize::calib::Method;
use mote_core::{Graph, Tensor};
use mote_onnx::ImportOptions;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The checkout's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Sample `i` (of batch 1) from arrays stacked on axis 0.
fn sample(x: &Tensor, i: usize) -> Tensor {
    mote_core::map_same!(x, a => a.slice_axis(ndarray::Axis(0), ndarray::Slice::from(i..i + 1)).to_owned())
}

fn argmax(t: &Tensor) -> usize {
    let v = t.to_f64_vec();
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

/// Sum of squares of `a` and of `a − b`, for an SQNR over many samples.
fn energy(a: &Tensor, b: &Tensor) -> (f64, f64) {
    a.to_f64_vec().iter().zip(b.to_f64_vec()).fold((0.0, 0.0), |(s, n), (x, y)| (s + x * x, n + (x - y).powi(2)))
}

fn db((s, n): (f64, f64)) -> f64 {
    10.0 * (s / n).log10()
}

/// Deterministic standard normal numbers (xorshift64 + Box–Muller).
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn next(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// `n` samples `0.8·x + 0.6·σ·noise` of the first input (σ its RMS), other inputs as shipped; the
/// noise is seeded by `name`, so every table is reproducible.
pub fn noisy_samples(shipped: &[Tensor], n: usize, name: &str) -> Vec<Vec<Tensor>> {
    let mut rng = Normal(0x5EED_0000 + name.len() as u64);
    (0..n)
        .map(|_| {
            let mut s = shipped.to_vec();
            let x = s[0].to_f32();
            let sigma = (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
            s[0] = Tensor::F32(x.mapv(|v| (0.8 * f64::from(v) + 0.6 * sigma * rng.next()) as f32));
            s
        })
        .collect()
}

/// Float and int8 results of one model on one set of samples.
struct Compared {
    samples: usize,
    float_correct: usize,
    int8_correct: usize,
    agreed: usize,
    sqnr_db: f64,
}

fn compare(float: &Graph, int8: &Graph, inputs: &[Vec<Tensor>], labels: Option<&[i64]>) -> Result<Compared> {
    let mut c = Compared { samples: inputs.len(), float_correct: 0, int8_correct: 0, agreed: 0, sqnr_db: 0.0 };
    let mut e = (0.0, 0.0);
    for (k, x) in inputs.iter().enumerate() {
        let f = float.run(x.clone())?.remove(0);
        let q = int8.run(x.clone())?.remove(0);
        let (s, n) = energy(&f, &q);
        e = (e.0 + s, e.1 + n);
        let (pf, pq) = (argmax(&f), argmax(&q));
        c.agreed += usize::from(pf == pq);
        if let Some(y) = labels {
            c.float_correct += usize::from(pf as i64 == y[k]);
            c.int8_correct += usize::from(pq as i64 == y[k]);
        }
    }
    c.sqnr_db = db(e);
    Ok(c)
}

fn pct(k: usize, n: usize) -> String {
    format!("{:.2}% ({k}/{n})", 100.0 * k as f64 / n as f64)
}

fn method_name(m: Method) -> String {
    match m {
        Method::MinMax => "min/max".into(),
        Method::Percentile(p) => format!("percentile {p}"),
        Method::Mse => "MSE".into(),
    }
}

const METHODS: [Method; 3] = [Method::MinMax, Method::Percentile(99.99), Method::Mse];

/// The peer-models folder: the argument, `$MOTE_PEER_MODELS`, or `../shared/peer-models` beside the checkout.
pub fn peer_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("MOTE_PEER_MODELS").map(PathBuf::from))
        .unwrap_or_else(|| repo_root().join("../shared/peer-models"))
}

/// Writes the table to `out`.
pub fn run(peer_models: Option<PathBuf>, out: &Path) -> Result<()> {
    let root = repo_root();
    let mut md = String::new();
    writeln!(md, "# Quantization: float vs int8\n")?;
    writeln!(md, "Regenerate with `cargo run --release -p mote-bench -- quant` (writes this file).\n")?;
    writeln!(
        md,
        "int8 = `mote quantize` (int8 symmetric per-channel weights, int8 per-tensor activations, int32 biases) \
         lowered to mote's integer-only ops (integer softmax, LayerNorm, RMSNorm, table GELU), run on the host \
         reference, which the MCU code matches bit for bit.\n"
    )?;
    digits(&root, &mut md)?;
    let peers = peer_dir(peer_models);
    if !peers.is_dir() {
        bail!("peer models not found at {} (give --peer-models)", peers.display());
    }
    peer_table(&peers, &mut md)?;
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
    print!("{md}");
    Ok(())
}

fn digits(root: &Path, md: &mut String) -> Result<()> {
    let dir = root.join("examples/digits");
    let bytes = std::fs::read(dir.join("digits_encoder.onnx"))?;
    let opts = ImportOptions::default();
    let float = mote_onnx::import(&bytes, &opts)?;
    let calib = mote_core::npz::read(dir.join("calib.npz"))?.remove(0).1;
    let calib: Vec<Vec<Tensor>> = (0..calib.shape()[0]).map(|i| vec![sample(&calib, i)]).collect();
    let test = mote_core::npz::read(dir.join("test.npz"))?;
    let x = &test.iter().find(|(k, _)| k == "x").context("test.npz has no x")?.1;
    let y = test.iter().find(|(k, _)| k == "y").context("test.npz has no y")?.1.to_i64_vec();
    let inputs: Vec<Vec<Tensor>> = (0..y.len()).map(|i| vec![sample(x, i)]).collect();

    writeln!(md, "## Our model: `examples/digits` (scikit-learn digits, 450-sample test split)\n")?;
    writeln!(md, "Calibration: the 64 training samples in `calib.npz`. Target: at most 1 point top-1 drop.\n")?;
    writeln!(md, "| model | calibration | float top-1 | int8 top-1 | drop (points) | top-1 agreement | output SQNR |")?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for m in METHODS {
        let q = mote_onnx::qdq::quantize(&bytes, &opts, &calib, m)?;
        let c = compare(&float, &q.int8, &inputs, Some(&y))?;
        row(md, "digits_encoder (mote quantize)", &method_name(m), &c)?;
    }
    let ort = mote_onnx::load(dir.join("digits_encoder.ort_qdq.onnx"), &opts)?;
    let c = compare(&float, &ort, &inputs, Some(&y))?;
    row(md, "digits_encoder.ort_qdq (onnxruntime QDQ, lowered by mote)", "ORT min/max", &c)?;
    writeln!(md)?;
    Ok(())
}

fn row(md: &mut String, model: &str, calib: &str, c: &Compared) -> Result<()> {
    let drop = 100.0 * (c.float_correct as f64 - c.int8_correct as f64) / c.samples as f64;
    writeln!(
        md,
        "| {model} | {calib} | {} | {} | {drop:.2} | {} | {:.1} dB |",
        pct(c.float_correct, c.samples),
        pct(c.int8_correct, c.samples),
        pct(c.agreed, c.samples),
        c.sqnr_db
    )?;
    Ok(())
}

/// Peer float models: calibrate on 32 noisy variants of the shipped input, evaluate on 64 others.
fn peer_table(peers: &Path, md: &mut String) -> Result<()> {
    writeln!(md, "## Peer float models (Deeploy's test cases)\n")?;
    writeln!(
        md,
        "Each case ships one input. Samples are `0.8·x + 0.6·σ·n` (n standard normal, σ the input's standard \
         deviation, so the spread is unchanged) for the first model input; other inputs (rotary tables, KV caches) \
         stay as shipped. Calibration: 32 samples; evaluation: 64 other samples, and the shipped input on its own. \
         SQNR is over every output value of the evaluated samples; agreement is top-1 over the output's last axis \
         (for the classifiers).\n"
    )?;
    writeln!(md, "| model | calibration | output SQNR (eval) | output SQNR (shipped input) | top-1 agreement |")?;
    writeln!(md, "|---|---|---|---|---|")?;
    let cases = [
        ("CCT_1_16_16_8", "Models/CCT/FP32/CCT_1_16_16_8", true),
        ("CCT_1_16_16_32", "Models/CCT/FP32/CCT_1_16_16_32", true),
        ("CCT_1_16_16_64", "Models/CCT/FP32/CCT_1_16_16_64", true),
        ("TinyViT Demo", "Models/TinyViT/Demo", true),
        ("microLlama1 FP32 (one decode step)", "Models/microLlama/FP32/microLlama1", false),
    ];
    for (name, rel, classifier) in cases {
        let dir = peers.join(rel);
        let bytes = std::fs::read(dir.join("network.onnx")).with_context(|| format!("reading {}", dir.display()))?;
        let opts = ImportOptions::default();
        let float = mote_onnx::import(&bytes, &opts)?;
        let shipped: Vec<Tensor> = mote_core::npz::read(dir.join("inputs.npz"))?
            .into_iter()
            .take(float.inputs.len())
            .map(|(_, t)| t)
            .collect();
        let both = noisy_samples(&shipped, 96, name);
        let (calib, eval) = both.split_at(32);
        for m in [Method::MinMax, Method::Mse] {
            let q = mote_onnx::qdq::quantize(&bytes, &opts, calib, m).with_context(|| format!("quantizing {name}"))?;
            let c = compare(&float, &q.int8, eval, None)?;
            let one = compare(&float, &q.int8, std::slice::from_ref(&shipped), None)?;
            writeln!(
                md,
                "| {name} | {} | {:.1} dB | {:.1} dB | {} |",
                method_name(m),
                c.sqnr_db,
                one.sqnr_db,
                if classifier { pct(c.agreed, c.samples) } else { "n/a (hidden state)".into() }
            )?;
        }
    }
    writeln!(md)?;
    Ok(())
}
