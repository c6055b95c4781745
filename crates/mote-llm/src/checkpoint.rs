//! llama2.c model checkpoints (`model.bin`): a header of hyperparameters, then every weight as f32.

use std::path::Path;

use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayViewD};

use crate::{Error, Result};

/// Bytes of the legacy (version 0) header: 7 little-endian i32.
const LEGACY_HEADER_BYTES: u64 = 28;
/// Bytes of the version 1 and 2 headers (magic, version, 7 i32, flags, zero padding).
const V1_HEADER_BYTES: u64 = 256;
/// The magic u32 that starts version 1 and 2 files: "ak42" in ASCII.
const MAGIC: u32 = 0x616b_3432;
/// The header fields in file order, as llama2.c's `Config` names them.
const FIELDS: [&str; 7] = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];

/// Which llama2.c export wrote a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Version 0 (`export.py --version 0`, `legacy_export`, what `run.c` reads): a header of 7 i32 whose
    /// `vocab_size` is negative when the classifier is not shared, then the tensors in `run.c`'s order,
    /// including the (unused) RoPE tables `freq_cis_real`/`freq_cis_imag`.
    Legacy,
    /// Version 1 (`version1_export`): a 256-byte header (magic `ak42`, version, the 7 i32, a shared-classifier
    /// byte), then the norms first and no RoPE tables.
    V1,
}

/// A model's hyperparameters, from the checkpoint header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Model (residual stream) width.
    pub dim: usize,
    /// Width of the SwiGLU feed-forward layer.
    pub hidden_dim: usize,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of key/value heads (fewer than `n_heads` for grouped-query attention).
    pub n_kv_heads: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum sequence length (positions).
    pub seq_len: usize,
    /// Whether the classifier reuses the token embedding table (no `wcls` in the file).
    pub shared_classifier: bool,
}

impl Config {
    /// Width of one attention head: `dim / n_heads` (0 for a config with no heads).
    pub fn head_size(&self) -> usize {
        self.dim.checked_div(self.n_heads).unwrap_or(0)
    }

    /// Width of the key and value projections: `n_kv_heads * head_size`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads.saturating_mul(self.head_size())
    }

    /// Checks what `run.c` relies on: positive sizes, `n_heads` dividing `dim`, `n_kv_heads` dividing `n_heads`
    /// and an even head size (RoPE rotates pairs). `file` names the checkpoint in the error.
    pub fn validate(&self, file: &str) -> Result<()> {
        let values =
            [self.dim, self.hidden_dim, self.n_layers, self.n_heads, self.n_kv_heads, self.vocab_size, self.seq_len];
        for (field, value) in FIELDS.into_iter().zip(values) {
            if value == 0 {
                return Err(header_error(file, field, 0, "must be positive"));
            }
            if i32::try_from(value).is_err() {
                return Err(header_error(file, field, as_i64(value), "does not fit the header's i32"));
            }
        }
        if !self.dim.is_multiple_of(self.n_heads) {
            let reason = format!("does not divide dim = {}", self.dim);
            return Err(header_error(file, "n_heads", as_i64(self.n_heads), &reason));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            let reason = format!("does not divide n_heads = {}", self.n_heads);
            return Err(header_error(file, "n_kv_heads", as_i64(self.n_kv_heads), &reason));
        }
        if !self.head_size().is_multiple_of(2) {
            let reason = format!(
                "makes head_size = dim / n_heads = {} / {} = {} odd (RoPE rotates pairs)",
                self.dim,
                self.n_heads,
                self.head_size()
            );
            return Err(header_error(file, "n_heads", as_i64(self.n_heads), &reason));
        }
        Ok(())
    }

    /// Reads the 7 header ints. `shared` is version 1's shared-classifier byte; without it (version 0) a negative
    /// `vocab_size` means an unshared classifier.
    fn from_header(file: &str, ints: [i32; 7], shared: Option<bool>) -> Result<Config> {
        let [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len] = ints;
        let positive = |field: &'static str, value: i32| -> Result<usize> {
            match usize::try_from(value) {
                Ok(v) if v > 0 => Ok(v),
                _ => Err(header_error(file, field, i64::from(value), "must be positive")),
            }
        };
        let (vocab, shared_classifier) = match shared {
            None => {
                if vocab_size == 0 {
                    let reason = "must not be 0 (a negative value means an unshared classifier)";
                    return Err(header_error(file, "vocab_size", 0, reason));
                }
                if vocab_size == i32::MIN {
                    let reason = "has no positive counterpart in an i32";
                    return Err(header_error(file, "vocab_size", i64::from(vocab_size), reason));
                }
                let abs = usize::try_from(vocab_size.unsigned_abs())
                    .map_err(|_| header_error(file, "vocab_size", i64::from(vocab_size), "does not fit a usize"))?;
                (abs, vocab_size > 0)
            }
            Some(shared) => (positive("vocab_size", vocab_size)?, shared),
        };
        let config = Config {
            dim: positive("dim", dim)?,
            hidden_dim: positive("hidden_dim", hidden_dim)?,
            n_layers: positive("n_layers", n_layers)?,
            n_heads: positive("n_heads", n_heads)?,
            n_kv_heads: positive("n_kv_heads", n_kv_heads)?,
            vocab_size: vocab,
            seq_len: positive("seq_len", seq_len)?,
            shared_classifier,
        };
        config.validate(file)?;
        Ok(config)
    }

    /// The 7 header ints of a legacy file (negative `vocab_size` for an unshared classifier).
    fn legacy_header(&self) -> Result<[i32; 7]> {
        let int = |v: usize| i32::try_from(v).map_err(|_| Error::Invalid(format!("{v} does not fit the header's i32")));
        let vocab = int(self.vocab_size)?;
        Ok([
            int(self.dim)?,
            int(self.hidden_dim)?,
            int(self.n_layers)?,
            int(self.n_heads)?,
            int(self.n_kv_heads)?,
            if self.shared_classifier { vocab } else { -vocab },
            int(self.seq_len)?,
        ])
    }
}

/// A model's weights, named as in `run.c`'s `TransformerWeights`. Matrices are `[out, in]` (PyTorch's
/// `nn.Linear.weight`, what `run.c`'s `matmul` takes), stacked over layers on axis 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    /// Token embeddings, `[vocab_size, dim]`.
    pub token_embedding_table: Array2<f32>,
    /// Attention RMSNorm weights, `[n_layers, dim]`.
    pub rms_att_weight: Array2<f32>,
    /// Query projections, `[n_layers, n_heads * head_size (= dim), dim]`.
    pub wq: Array3<f32>,
    /// Key projections, `[n_layers, n_kv_heads * head_size, dim]`.
    pub wk: Array3<f32>,
    /// Value projections, `[n_layers, n_kv_heads * head_size, dim]`.
    pub wv: Array3<f32>,
    /// Attention output projections, `[n_layers, dim, n_heads * head_size (= dim)]`.
    pub wo: Array3<f32>,
    /// Feed-forward RMSNorm weights, `[n_layers, dim]`.
    pub rms_ffn_weight: Array2<f32>,
    /// Feed-forward gate projections (SiLU side), `[n_layers, hidden_dim, dim]`.
    pub w1: Array3<f32>,
    /// Feed-forward down projections, `[n_layers, dim, hidden_dim]`.
    pub w2: Array3<f32>,
    /// Feed-forward up projections, `[n_layers, hidden_dim, dim]`.
    pub w3: Array3<f32>,
    /// Final RMSNorm weights, `[dim]`.
    pub rms_final_weight: Array1<f32>,
    /// The classifier, `[vocab_size, dim]`; `None` when it is the token embedding table.
    pub wcls: Option<Array2<f32>>,
}

impl Weights {
    /// The classifier matrix `[vocab_size, dim]`: `wcls`, or the token embedding table when shared.
    pub fn classifier(&self) -> ArrayView2<'_, f32> {
        self.wcls.as_ref().unwrap_or(&self.token_embedding_table).view()
    }

    /// Every stored tensor with its `run.c` name, in `run.c`'s order (`wcls` only when not shared).
    pub fn tensors(&self) -> Vec<(&'static str, ArrayViewD<'_, f32>)> {
        let mut out = vec![
            ("token_embedding_table", self.token_embedding_table.view().into_dyn()),
            ("rms_att_weight", self.rms_att_weight.view().into_dyn()),
            ("wq", self.wq.view().into_dyn()),
            ("wk", self.wk.view().into_dyn()),
            ("wv", self.wv.view().into_dyn()),
            ("wo", self.wo.view().into_dyn()),
            ("rms_ffn_weight", self.rms_ffn_weight.view().into_dyn()),
            ("w1", self.w1.view().into_dyn()),
            ("w2", self.w2.view().into_dyn()),
            ("w3", self.w3.view().into_dyn()),
            ("rms_final_weight", self.rms_final_weight.view().into_dyn()),
        ];
        if let Some(wcls) = &self.wcls {
            out.push(("wcls", wcls.view().into_dyn()));
        }
        out
    }
}

/// A llama2.c checkpoint: hyperparameters and f32 weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The hyperparameters.
    pub config: Config,
    /// The export version the file had (`to_legacy_bytes` always writes [`Format::Legacy`]).
    pub format: Format,
    /// The weights.
    pub weights: Weights,
}

/// One tensor of the file: its name, its shape, and whether it is kept (the RoPE tables are skipped).
struct Segment {
    name: &'static str,
    shape: Vec<usize>,
    keep: bool,
}

/// The tensors of a file in order.
fn layout(c: &Config, format: Format) -> Vec<Segment> {
    let (d, h, l, v, kv) = (c.dim, c.hidden_dim, c.n_layers, c.vocab_size, c.kv_dim());
    let seg = |name, shape: &[usize]| Segment { name, shape: shape.to_vec(), keep: true };
    let embedding = seg("token_embedding_table", &[v, d]);
    let rms_att = seg("rms_att_weight", &[l, d]);
    let rms_ffn = seg("rms_ffn_weight", &[l, d]);
    let rms_final = seg("rms_final_weight", &[d]);
    let matrices = [
        seg("wq", &[l, d, d]),
        seg("wk", &[l, kv, d]),
        seg("wv", &[l, kv, d]),
        seg("wo", &[l, d, d]),
        seg("w1", &[l, h, d]),
        seg("w2", &[l, d, h]),
        seg("w3", &[l, h, d]),
    ];
    let mut out = Vec::with_capacity(16);
    match format {
        Format::Legacy => {
            let [wq, wk, wv, wo, w1, w2, w3] = matrices;
            let rope = c.seq_len.saturating_mul(c.head_size()) / 2;
            out.extend([embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final]);
            out.push(Segment { name: "freq_cis_real", shape: vec![rope], keep: false });
            out.push(Segment { name: "freq_cis_imag", shape: vec![rope], keep: false });
        }
        Format::V1 => {
            out.extend([rms_att, rms_ffn, rms_final, embedding]);
            out.extend(matrices);
        }
    }
    if !c.shared_classifier {
        out.push(seg("wcls", &[v, d]));
    }
    out
}

fn header_error(file: &str, field: &'static str, value: i64, reason: &str) -> Error {
    Error::Header { file: file.to_string(), field, value, reason: reason.to_string() }
}

fn as_i64(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Bytes of an f32 tensor of this shape, or `None` on overflow.
fn tensor_bytes(shape: &[usize]) -> Option<u64> {
    shape.iter().try_fold(4u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
}

fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(i32::from_le_bytes(b))
}

fn read_file(path: &Path) -> Result<(Vec<u8>, String)> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| Error::Io { file: file.clone(), source })?;
    Ok((bytes, file))
}

impl Checkpoint {
    /// A checkpoint of shape `config` with seeded pseudo-random weights (uniform, variance `1/fan_in` for the
    /// matrices, norms near 1): for tests and benchmarks of a shape. Errors: an invalid `config`.
    pub fn random(config: Config, seed: u64) -> Result<Checkpoint> {
        config.validate("<random>")?;
        let mut state = seed;
        let mut next = move || {
            // An LCG step (Knuth's MMIX constants); the top 24 bits give a uniform value in [-1, 1).
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        };
        let (d, h, l, v, kv) = (config.dim, config.hidden_dim, config.n_layers, config.vocab_size, config.kv_dim());
        let mut mat = |n: usize, k: usize| {
            let a = (3.0 / k as f32).sqrt();
            Array3::from_shape_simple_fn((l, n, k), || a * next())
        };
        let (wq, wk, wv, wo) = (mat(d, d), mat(kv, d), mat(kv, d), mat(d, d));
        let (w1, w2, w3) = (mat(h, d), mat(d, h), mat(h, d));
        let token_embedding_table = Array2::from_shape_simple_fn((v, d), &mut next);
        let mut norm = |shape: (usize, usize)| Array2::from_shape_simple_fn(shape, || 1.0 + 0.2 * next());
        let (rms_att_weight, rms_ffn_weight) = (norm((l, d)), norm((l, d)));
        let rms_final_weight = norm((1, d)).row(0).to_owned();
        let wcls = (!config.shared_classifier).then(|| Array2::from_shape_simple_fn((v, d), || 0.5 * next()));
        let weights = Weights {
            token_embedding_table,
            rms_att_weight,
            wq,
            wk,
            wv,
            wo,
            rms_ffn_weight,
            w1,
            w2,
            w3,
            rms_final_weight,
            wcls,
        };
        Ok(Checkpoint { config, format: Format::Legacy, weights })
    }

    /// Reads a llama2.c checkpoint (version 0 as `run.c` reads it, or version 1) from a file.
    pub fn read(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let (bytes, file) = read_file(path.as_ref())?;
        Checkpoint::parse(&bytes, &file)
    }

    /// Reads a llama2.c checkpoint from memory (errors name it `<bytes>`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        Checkpoint::parse(bytes, "<bytes>")
    }

    fn parse(bytes: &[u8], file: &str) -> Result<Checkpoint> {
        let actual = bytes.len() as u64;
        let header_truncated = |expected: u64| Error::Truncated {
            file: file.to_string(),
            field: "header".to_string(),
            expected,
            actual,
            hint: String::new(),
        };
        let first = read_i32(bytes, 0).ok_or_else(|| header_truncated(LEGACY_HEADER_BYTES))?;
        let (format, header_bytes, ints_at, shared) = if first as u32 == MAGIC {
            let version = read_i32(bytes, 4).ok_or_else(|| header_truncated(V1_HEADER_BYTES))?;
            match version {
                1 => {}
                2 => {
                    let what = "a version 2 (Q8_0 int8) checkpoint (export.py --version 2)".to_string();
                    return Err(Error::Unsupported { file: file.to_string(), what });
                }
                v => {
                    let what = format!("checkpoint version {v} (after the `ak42` magic)");
                    return Err(Error::Unsupported { file: file.to_string(), what });
                }
            }
            if actual < V1_HEADER_BYTES {
                return Err(header_truncated(V1_HEADER_BYTES));
            }
            let flag = bytes.get(36).copied().ok_or_else(|| header_truncated(V1_HEADER_BYTES))?;
            let shared = match flag {
                0 => false,
                1 => true,
                f => return Err(header_error(file, "shared_classifier", i64::from(f), "must be 0 or 1")),
            };
            (Format::V1, V1_HEADER_BYTES, 8, Some(shared))
        } else {
            (Format::Legacy, LEGACY_HEADER_BYTES, 0, None)
        };
        let mut ints = [0i32; 7];
        for (k, int) in ints.iter_mut().enumerate() {
            *int = read_i32(bytes, ints_at + 4 * k).ok_or_else(|| header_truncated(header_bytes))?;
        }
        let config = Config::from_header(file, ints, shared)?;
        let segments = layout(&config, format);

        // Where each tensor starts and ends, checked against the file size before anything is allocated.
        let overflow = || Error::Overflow {
            file: file.to_string(),
            dim: config.dim,
            hidden_dim: config.hidden_dim,
            n_layers: config.n_layers,
            vocab_size: config.vocab_size,
            seq_len: config.seq_len,
        };
        let mut ends = Vec::with_capacity(segments.len());
        let mut end = header_bytes;
        for s in &segments {
            end = tensor_bytes(&s.shape).and_then(|b| end.checked_add(b)).ok_or_else(overflow)?;
            ends.push(end);
        }
        let expected = end;
        let classifier_bytes = tensor_bytes(&[config.vocab_size, config.dim]).unwrap_or(0);
        if actual < expected {
            let field = segments.iter().zip(&ends).find(|(_, &e)| e > actual).map_or("header", |(s, _)| s.name);
            let hint = if !config.shared_classifier && expected - actual == classifier_bytes {
                format!(
                    " (exactly the classifier `wcls` [{}, {}] is missing: the header says it is not shared{})",
                    config.vocab_size,
                    config.dim,
                    if format == Format::Legacy { " because vocab_size is negative" } else { "" }
                )
            } else {
                String::new()
            };
            return Err(Error::Truncated { file: file.to_string(), field: field.to_string(), expected, actual, hint });
        }
        if actual > expected {
            let field = segments.last().map_or("header", |s| s.name).to_string();
            let hint = if config.shared_classifier && actual - expected == classifier_bytes {
                format!(
                    " (exactly one more [{}, {}] matrix: an unshared classifier `wcls`? {})",
                    config.vocab_size,
                    config.dim,
                    match format {
                        Format::Legacy => "version 0 marks it with a negative vocab_size",
                        Format::V1 => "the header's shared-classifier byte says it is shared",
                    }
                )
            } else {
                String::new()
            };
            let extra = actual - expected;
            return Err(Error::TrailingBytes { file: file.to_string(), field, extra, expected, actual, hint });
        }

        // The sizes match: every range below is inside `bytes`.
        let mut tensors: Named = Vec::with_capacity(segments.len());
        let mut start = header_bytes;
        for (s, &end) in segments.iter().zip(&ends) {
            if s.keep {
                let range = usize::try_from(start).ok().zip(usize::try_from(end).ok());
                let raw = range.and_then(|(a, b)| bytes.get(a..b)).ok_or_else(overflow)?;
                let data =
                    raw.chunks_exact(4).map(|c| c.first_chunk::<4>().map_or(0.0, |b| f32::from_le_bytes(*b))).collect();
                tensors.push((s.name, s.shape.clone(), data));
            }
            start = end;
        }
        let weights = Weights::from_named(tensors, file)?;
        Ok(Checkpoint { config, format, weights })
    }

    /// Writes the checkpoint as a version 0 (legacy) file, the format `run.c` reads: the header (negative
    /// `vocab_size` when `wcls` is present), the tensors in `run.c`'s order, and the RoPE tables
    /// `freq_cis_real`/`freq_cis_imag` as llama2.c's `model.py` computes them (θ = 10000). Checks that the
    /// config is valid and every tensor has the shape it implies.
    pub fn to_legacy_bytes(&self) -> Result<Vec<u8>> {
        let c = &self.config;
        c.validate("<checkpoint>")?;
        let header = c.legacy_header()?;
        let w = &self.weights;
        if w.wcls.is_some() == c.shared_classifier {
            return Err(Error::Invalid(format!(
                "config.shared_classifier is {} but weights.wcls is {}",
                c.shared_classifier,
                if w.wcls.is_some() { "present" } else { "absent" }
            )));
        }
        let named = w.tensors();
        let segments = layout(c, Format::Legacy);
        // Shapes first, so that a wrong config is an error before anything is allocated for it.
        let mut stored = Vec::with_capacity(named.len());
        for s in segments.iter().filter(|s| s.keep) {
            let tensor = named.iter().find(|(name, _)| *name == s.name).map(|(_, t)| t);
            let tensor = tensor.ok_or_else(|| Error::Invalid(format!("no tensor `{}`", s.name)))?;
            if tensor.shape() != s.shape.as_slice() {
                return Err(Error::Invalid(format!(
                    "`{}` has shape {:?}, the config implies {:?}",
                    s.name,
                    tensor.shape(),
                    s.shape
                )));
            }
            stored.push(tensor);
        }
        let total = segments
            .iter()
            .try_fold(LEGACY_HEADER_BYTES, |acc, s| acc.checked_add(tensor_bytes(&s.shape)?))
            .and_then(|t| usize::try_from(t).ok())
            .ok_or_else(|| Error::Invalid("the checkpoint is larger than memory can address".to_string()))?;
        let mut out = Vec::new();
        out.try_reserve_exact(total).map_err(|e| Error::Invalid(format!("cannot allocate {total} bytes: {e}")))?;
        for int in header {
            out.extend_from_slice(&int.to_le_bytes());
        }
        let head_size = c.head_size();
        let half = head_size / 2;
        let mut stored = stored.into_iter();
        for s in &segments {
            if s.keep {
                let tensor = stored.next().ok_or_else(|| Error::Invalid(format!("no tensor `{}`", s.name)))?;
                for x in tensor.iter() {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            } else {
                // model.py's precompute_freqs_cis: freq_i = 1 / 10000^(2i / head_size), angle = pos * freq_i.
                let sine = s.name == "freq_cis_imag";
                for pos in 0..c.seq_len {
                    for i in 0..half {
                        let freq = 1.0 / 10000f32.powf((2 * i) as f32 / head_size as f32);
                        let angle = pos as f32 * freq;
                        let x = if sine { angle.sin() } else { angle.cos() };
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Writes [`Checkpoint::to_legacy_bytes`] to a file.
    pub fn write_legacy(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_legacy_bytes()?;
        std::fs::write(path, bytes).map_err(|source| Error::Io { file: path.display().to_string(), source })
    }
}

type Named = Vec<(&'static str, Vec<usize>, Vec<f32>)>;

/// Removes the tensor `name` from `tensors`.
fn take(tensors: &mut Named, name: &str, file: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let at = tensors.iter().position(|(n, _, _)| *n == name);
    let (_, shape, data) =
        at.map(|i| tensors.swap_remove(i)).ok_or_else(|| Error::Invalid(format!("{file}: no tensor `{name}`")))?;
    Ok((shape, data))
}

fn take2(tensors: &mut Named, name: &str, file: &str) -> Result<Array2<f32>> {
    let (shape, data) = take(tensors, name, file)?;
    match *shape.as_slice() {
        [a, b] => Array2::from_shape_vec((a, b), data).map_err(|e| Error::Invalid(format!("{file}: `{name}`: {e}"))),
        _ => Err(Error::Invalid(format!("{file}: `{name}` is not 2-D"))),
    }
}

fn take3(tensors: &mut Named, name: &str, file: &str) -> Result<Array3<f32>> {
    let (shape, data) = take(tensors, name, file)?;
    match *shape.as_slice() {
        [a, b, c] => {
            Array3::from_shape_vec((a, b, c), data).map_err(|e| Error::Invalid(format!("{file}: `{name}`: {e}")))
        }
        _ => Err(Error::Invalid(format!("{file}: `{name}` is not 3-D"))),
    }
}

impl Weights {
    /// Builds the weights from the tensors read from a file (every name of the layout, shapes already right).
    fn from_named(mut t: Named, file: &str) -> Result<Weights> {
        let t = &mut t;
        let wcls = if t.iter().any(|(n, _, _)| *n == "wcls") { Some(take2(t, "wcls", file)?) } else { None };
        Ok(Weights {
            token_embedding_table: take2(t, "token_embedding_table", file)?,
            rms_att_weight: take2(t, "rms_att_weight", file)?,
            wq: take3(t, "wq", file)?,
            wk: take3(t, "wk", file)?,
            wv: take3(t, "wv", file)?,
            wo: take3(t, "wo", file)?,
            rms_ffn_weight: take2(t, "rms_ffn_weight", file)?,
            w1: take3(t, "w1", file)?,
            w2: take3(t, "w2", file)?,
            w3: take3(t, "w3", file)?,
            rms_final_weight: Array1::from_vec(take(t, "rms_final_weight", file)?.1),
            wcls,
        })
    }
}
