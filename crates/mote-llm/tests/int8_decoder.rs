//! The int8 decoder against the float one, across packing layouts, and its generation errors.

use mote_kernels::packed::PackedLayout;
use mote_llm::float::{forward, FloatCache};
use mote_llm::generate::{generate, PackedDecoder, Sampling, Session};
use mote_llm::quant::{calibrate, quantize, QuantDecoder};
use mote_llm::{Checkpoint, Config};

const CONTEXT: usize = 32;

fn config(kv_heads: usize) -> Config {
    Config {
        dim: 32,
        hidden_dim: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: kv_heads,
        vocab_size: 64,
        seq_len: 48,
        shared_classifier: kv_heads == 4,
    }
}

/// Deterministic token sequences (BOS first).
fn sequences(n: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            std::iter::once(1)
                .chain((1..len).map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 33) % 64) as u32
                }))
                .collect()
        })
        .collect()
}

fn model(kv_heads: usize) -> (Checkpoint, QuantDecoder) {
    let ck = Checkpoint::random(config(kv_heads), 7).unwrap();
    let ranges = calibrate(&ck, &sequences(6, CONTEXT, 1), CONTEXT).unwrap();
    let q = quantize(&ck, &ranges, CONTEXT).unwrap();
    (ck, q)
}

/// Signal-to-noise ratio (dB) of `b` against `a`.
fn sqnr(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum();
    let n: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x - y).powi(2)).sum();
    10.0 * (s / n).log10()
}

#[test]
fn int8_logits_follow_the_float_decoder() {
    for kv_heads in [4, 2] {
        let (ck, q) = model(kv_heads);
        let packed = PackedDecoder::new(&q, PackedLayout::Dsp16).unwrap();
        let mut session = Session::new(&packed);
        let mut cache = FloatCache::new(&ck.config, CONTEXT);
        let (mut fl, mut il) = (Vec::new(), Vec::new());
        for (pos, &t) in sequences(1, CONTEXT, 99)[0].iter().enumerate() {
            let f = forward(&ck, &mut cache, t as usize, pos, &mut |_, _| {}).unwrap();
            let i = session.step(t).unwrap();
            let (s, z) = q.logits;
            fl.extend(f.iter().copied());
            il.extend(i.iter().map(|&v| ((f64::from(v) - f64::from(z)) * s) as f32));
        }
        let db = sqnr(&fl, &il);
        // Stated tolerance: int8 weights and activations over 2 blocks keep the logits above 20 dB.
        assert!(db > 20.0, "kv_heads {kv_heads}: logits SQNR {db:.2} dB");
    }
}

#[test]
fn every_layout_gives_the_same_integers() {
    let (_, q) = model(2);
    let run = |layout| {
        let packed = PackedDecoder::new(&q, layout).unwrap();
        let mut session = Session::new(&packed);
        sequences(1, CONTEXT, 5)[0].iter().flat_map(|&t| session.step(t).unwrap().to_vec()).collect::<Vec<i8>>()
    };
    let dsp = run(PackedLayout::Dsp16);
    assert_eq!(run(PackedLayout::Mve8), dsp);
    assert_eq!(run(PackedLayout::Rv32), dsp);
}

#[test]
fn sampling_is_seeded_and_top1_is_greedy() {
    let (_, q) = model(4);
    let packed = PackedDecoder::new(&q, PackedLayout::Rv32).unwrap();
    let prompt = [1, 17, 33];
    let gen = |s| generate(&packed, &prompt, 20, s, &mut |_| {}).unwrap();
    let greedy = gen(Sampling::Greedy);
    assert!(!greedy.is_empty());
    assert_eq!(gen(Sampling::TopK { k: 1, temperature: 0.7, seed: 3 }), greedy);
    let a = gen(Sampling::TopK { k: 8, temperature: 1.0, seed: 42 });
    assert_eq!(gen(Sampling::TopK { k: 8, temperature: 1.0, seed: 42 }), a);
    let others: Vec<Vec<u32>> = (1..6).map(|seed| gen(Sampling::TopK { k: 0, temperature: 2.0, seed })).collect();
    assert!(others.iter().any(|o| o != &greedy), "hot sampling never left the greedy path");
}

#[test]
fn generation_errors_name_the_problem() {
    let (_, q) = model(4);
    let packed = PackedDecoder::new(&q, PackedLayout::Dsp16).unwrap();
    let long = vec![1u32; 30];
    let e = generate(&packed, &long, 8, Sampling::Greedy, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("30 tokens") && e.contains("compiled context of 32"), "{e}");
    let e = generate(&packed, &[1, 64], 2, Sampling::Greedy, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("token 64 is outside the vocabulary of 64"), "{e}");
    let e = generate(&packed, &[], 2, Sampling::Greedy, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let hot = Sampling::TopK { k: 4, temperature: 0.0, seed: 1 };
    let e = generate(&packed, &[1], 2, hot, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("temperature 0"), "{e}");
}

#[test]
fn quantized_decoder_file_round_trips() {
    let (_, q) = model(2);
    let dir = std::env::temp_dir().join(format!("mote-llm-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("d.npz");
    q.write(&path).unwrap();
    assert_eq!(QuantDecoder::read(&path).unwrap(), q);
    // A file without the decoder's arrays names the file and the first missing one.
    let other = dir.join("other.npz");
    mote_core::npz::write(&other, &[("x".to_string(), mote_core::Tensor::from_vec(&[1], vec![1i32]).unwrap())])
        .unwrap();
    let e = QuantDecoder::read(&other).unwrap_err().to_string();
    assert!(e.contains("other.npz") && e.contains("no array `config`"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
