//! The fortunes example (`examples/fortunes/`, our own llama2.c-format decoder trained on Debian's fortune cookies):
//! the checkpoint and tokenizer load, the Rust tokenizer agrees with the Python one `train.py` used (ids of sample
//! strings, and a checksum of the whole of `calib.txt`), and the float decoder (`mote_llm::float::forward`, run.c's
//! step) on the weights `Checkpoint::read` returns reproduces torch's logits and greedy generations from
//! `reference.json`.

use std::path::PathBuf;

use mote_llm::float::{forward, FloatCache};
use mote_llm::{Checkpoint, Config, Format, Tokenizer, BOS};
use ndarray::{Array1, Array2};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/fortunes")
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tokenizer() -> Tokenizer {
    Tokenizer::read(dir().join("tokenizer.bin"), 512).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|i| u32::try_from(i.as_u64().unwrap()).unwrap()).collect()
}

/// The held-out cookies: each followed by a line holding only `%`, as in a fortune file.
fn calib_entries() -> Vec<String> {
    let text = std::fs::read_to_string(dir().join("calib.txt")).unwrap();
    let body = text.strip_suffix("\n%\n").unwrap();
    body.split("\n%\n").map(str::to_string).collect()
}

#[test]
fn checkpoint_has_the_example_config() {
    let ck = Checkpoint::read(dir().join("model.bin")).unwrap();
    let want = Config {
        dim: 64,
        hidden_dim: 256,
        n_layers: 8,
        n_heads: 16,
        n_kv_heads: 16,
        vocab_size: 512,
        seq_len: 256,
        shared_classifier: true,
    };
    assert_eq!(ck.config, want);
    assert_eq!(ck.format, Format::Legacy);
    assert!(ck.weights.wcls.is_none());
    assert_eq!(ck.weights.token_embedding_table.dim(), (512, 64));
    assert_eq!(ck.weights.w1.dim(), (8, 256, 64));
    assert_eq!(ck.weights.w2.dim(), (8, 64, 256));
    // A trained model: every tensor finite, the norms no longer all ones.
    assert!(ck.weights.tensors().iter().all(|(_, t)| t.iter().all(|v| v.is_finite())));
    assert!(ck.weights.rms_final_weight.iter().any(|&v| v != 1.0));
}

#[test]
fn tokenizer_layout_is_llama2s() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 512);
    assert_eq!(tok.token(0), Some(&b"<unk>"[..]));
    assert_eq!(tok.token(1), Some(&b"<s>"[..]));
    assert_eq!(tok.token(2), Some(&b"</s>"[..]));
    for b in 0..=255u8 {
        assert_eq!(tok.token(u32::from(b) + 3), Some(format!("<0x{b:02X}>").as_bytes()));
    }
    // Single characters from id 259 on, tab first; then merges, earlier ones scoring higher.
    assert_eq!(tok.token(259), Some(&b"\t"[..]));
    assert!(tok.id_of(b" ").is_some());
    let merges: Vec<f32> = (259..512).filter_map(|id| tok.score(id)).filter(|&s| s > -1e6).collect();
    assert!(merges.len() > 100);
    assert!(merges.windows(2).all(|w| w[0] > w[1]));
    assert_eq!(tok.max_token_length() as usize, (0..512).map(|id| tok.token(id).unwrap().len()).max().unwrap());
}

#[test]
fn encode_matches_the_python_tokenizer() {
    let tok = tokenizer();
    let checks = json("tokenizer_check.json");
    let checks = checks.as_array().unwrap();
    assert!(checks.len() >= 10);
    for c in checks {
        let text = c["text"].as_str().unwrap();
        let want = ids(&c["ids"]);
        // Stored as run.c prompts: encode(text, bos = true, eos = false).
        let got = tok.encode(text, true, false).unwrap();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(tok.decode_text(&got).unwrap(), text.as_bytes(), "{text:?}");
    }
}

#[test]
fn calib_round_trips_and_matches_the_python_encoding() {
    let tok = tokenizer();
    let entries = calib_entries();
    let want = &json("reference.json")["calib_ids"];
    assert_eq!(entries.len() as u64, want["entries"].as_u64().unwrap());
    let mut stream = Vec::new();
    for e in &entries {
        let enc = tok.encode(e, true, false).unwrap();
        assert_eq!(tok.decode_text(&enc).unwrap(), e.as_bytes(), "{e:?}");
        let with_eos = tok.encode(e, true, true).unwrap();
        assert_eq!(with_eos[..enc.len()], enc[..]);
        assert_eq!(tok.decode_text(&with_eos).unwrap(), e.as_bytes());
        stream.extend(enc);
    }
    let sum: u64 = stream.iter().map(|&t| u64::from(t)).sum();
    let weighted: u64 = stream.iter().zip(1u64..).map(|(&t, i)| u64::from(t) * i).sum();
    assert_eq!(stream.len() as u64, want["tokens"].as_u64().unwrap());
    assert_eq!(sum, want["sum"].as_u64().unwrap());
    assert_eq!(weighted, want["position_weighted_sum"].as_u64().unwrap());
}

fn argmax(v: &Array1<f32>) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn float_decoder_reproduces_torch() {
    let ck = Checkpoint::read(dir().join("model.bin")).unwrap();
    let tok = tokenizer();
    let reference = json("reference.json");
    let want_logits =
        Array1::from_iter(reference["last_logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32));
    assert_eq!(want_logits.len(), 512);
    let prompts = reference["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 3);
    for (n, p) in prompts.iter().enumerate() {
        let prompt_ids = ids(&p["prompt_ids"]);
        assert_eq!(prompt_ids[0], BOS);
        assert_eq!(tok.encode(p["prompt"].as_str().unwrap(), true, false).unwrap(), prompt_ids);
        let greedy = ids(&p["greedy_ids"]);
        assert_eq!(greedy.len(), 24);
        let all: Vec<u32> = prompt_ids.iter().chain(&greedy).copied().collect();
        let text = tok.decode_text(&all).unwrap();
        assert_eq!(String::from_utf8_lossy(&text), p["text"].as_str().unwrap());

        let mut cache = FloatCache::new(&ck.config, all.len());
        let mut step = |token: u32, pos: usize| forward(&ck, &mut cache, token as usize, pos, &mut |_, _| {}).unwrap();
        let mut logits = Array1::zeros(0);
        for (pos, &t) in prompt_ids.iter().enumerate() {
            logits = step(t, pos);
        }
        if n == 0 {
            let err = (&logits - &want_logits).iter().fold(0f32, |m, d| m.max(d.abs()));
            assert!(err < 1e-3, "last prompt logits differ from torch's by {err}");
        }
        // Greedy: each reference token is our argmax, or within float noise of it (a near-tie may flip).
        for (i, &want) in greedy.iter().enumerate() {
            let got = argmax(&logits);
            let gap = logits[got as usize] - logits[want as usize];
            assert!(got == want || gap < 1e-4, "prompt {n}, token {i}: argmax {got}, torch {want} ({gap} apart)");
            logits = step(want, prompt_ids.len() + i);
        }
    }
}

#[test]
fn rope_tables_match_the_header() {
    // The legacy file also stores freq_cis_real/imag [seq_len, head_size / 2]; Checkpoint::read skips them, so check
    // the file size accounts for them and that they are cos/sin of pos * 10000^(-2i/head_size).
    let bytes = std::fs::read(dir().join("model.bin")).unwrap();
    let ck = Checkpoint::from_bytes(&bytes).unwrap();
    let c = ck.config;
    let half = c.head_size() / 2;
    let rope = c.seq_len * half;
    let floats: Vec<f32> = bytes[28..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let weights: usize = ck.weights.tensors().iter().map(|(_, t)| t.len()).sum();
    assert_eq!(floats.len(), weights + 2 * rope);
    let real = Array2::from_shape_vec((c.seq_len, half), floats[weights..weights + rope].to_vec()).unwrap();
    let imag = Array2::from_shape_vec((c.seq_len, half), floats[weights + rope..].to_vec()).unwrap();
    for pos in 0..c.seq_len {
        for i in 0..half {
            let angle = pos as f64 * 10000f64.powf(-2.0 * i as f64 / c.head_size() as f64);
            assert!((f64::from(real[[pos, i]]) - angle.cos()).abs() < 1e-4);
            assert!((f64::from(imag[[pos, i]]) - angle.sin()).abs() < 1e-4);
        }
    }
}
