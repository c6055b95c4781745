//! Checkpoint reading: files written here byte for byte from known numbers, read back exactly, and every error.

use mote_llm::{Checkpoint, Config, Error, Format};
use proptest::prelude::*;

/// A small model: head_size 2, grouped-query attention (kv_dim 4), 2 layers.
const DIM: usize = 8;
const HIDDEN: usize = 12;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const VOCAB: usize = 6;
const SEQ: usize = 3;
const KV_DIM: usize = KV_HEADS * (DIM / HEADS);
const ROPE: usize = SEQ * (DIM / HEADS) / 2;

fn header(ints: [i32; 7]) -> Vec<u8> {
    ints.iter().flat_map(|i| i.to_le_bytes()).collect()
}

fn ints(vocab: i32) -> [i32; 7] {
    [DIM as i32, HIDDEN as i32, LAYERS as i32, HEADS as i32, KV_HEADS as i32, vocab, SEQ as i32]
}

/// The tensors of a version 0 file in order, with their element counts, as run.c's memory_map_weights steps.
fn legacy_order(shared: bool) -> Vec<(&'static str, usize)> {
    let mut order = vec![
        ("token_embedding_table", VOCAB * DIM),
        ("rms_att_weight", LAYERS * DIM),
        ("wq", LAYERS * DIM * DIM),
        ("wk", LAYERS * KV_DIM * DIM),
        ("wv", LAYERS * KV_DIM * DIM),
        ("wo", LAYERS * DIM * DIM),
        ("rms_ffn_weight", LAYERS * DIM),
        ("w1", LAYERS * HIDDEN * DIM),
        ("w2", LAYERS * DIM * HIDDEN),
        ("w3", LAYERS * HIDDEN * DIM),
        ("rms_final_weight", DIM),
        ("freq_cis_real", ROPE),
        ("freq_cis_imag", ROPE),
    ];
    if !shared {
        order.push(("wcls", VOCAB * DIM));
    }
    order
}

/// export.py's version1_export order: norms first, no RoPE tables.
fn v1_order(shared: bool) -> Vec<(&'static str, usize)> {
    let legacy = legacy_order(shared);
    let count = |name| legacy.iter().find(|(n, _)| *n == name).unwrap().1;
    let mut names = vec!["rms_att_weight", "rms_ffn_weight", "rms_final_weight", "token_embedding_table"];
    names.extend(["wq", "wk", "wv", "wo", "w1", "w2", "w3"]);
    if !shared {
        names.push("wcls");
    }
    names.into_iter().map(|n| (n, count(n))).collect()
}

/// Element k of the file's float data is `k` (exact in f32 for these sizes); returns the file and where each tensor
/// starts, in floats.
fn file_with_counting_floats(head: Vec<u8>, order: &[(&'static str, usize)]) -> (Vec<u8>, Vec<(&'static str, usize)>) {
    let mut out = head;
    let mut starts = vec![];
    let mut k = 0usize;
    for &(name, n) in order {
        starts.push((name, k));
        for _ in 0..n {
            out.extend_from_slice(&(k as f32).to_le_bytes());
            k += 1;
        }
    }
    (out, starts)
}

fn legacy_file(shared: bool) -> (Vec<u8>, Vec<(&'static str, usize)>) {
    let vocab = if shared { VOCAB as i32 } else { -(VOCAB as i32) };
    file_with_counting_floats(header(ints(vocab)), &legacy_order(shared))
}

fn v1_header(shared: bool) -> Vec<u8> {
    let mut h = 0x616b_3432u32.to_le_bytes().to_vec();
    h.extend_from_slice(&1i32.to_le_bytes());
    h.extend(header(ints(VOCAB as i32)));
    h.push(u8::from(shared));
    h.resize(256, 0);
    h
}

/// Every tensor holds the counting floats from where the layout says it starts.
fn assert_counting(ck: &Checkpoint, starts: &[(&'static str, usize)]) {
    for (name, tensor) in ck.weights.tensors() {
        let start = starts.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{name} not in the file")).1;
        let expected: Vec<f32> = (start..start + tensor.len()).map(|k| k as f32).collect();
        assert_eq!(tensor.iter().copied().collect::<Vec<f32>>(), expected, "{name}");
    }
}

fn start_of(starts: &[(&'static str, usize)], name: &str) -> f32 {
    starts.iter().find(|(n, _)| *n == name).unwrap().1 as f32
}

#[test]
fn legacy_shared_classifier_reads_back_exactly() {
    let (bin, starts) = legacy_file(true);
    let ck = Checkpoint::from_bytes(&bin).unwrap();
    let expected = Config {
        dim: DIM,
        hidden_dim: HIDDEN,
        n_layers: LAYERS,
        n_heads: HEADS,
        n_kv_heads: KV_HEADS,
        vocab_size: VOCAB,
        seq_len: SEQ,
        shared_classifier: true,
    };
    assert_eq!(ck.config, expected);
    assert_eq!((ck.config.head_size(), ck.config.kv_dim()), (2, KV_DIM));
    assert_eq!(ck.format, Format::Legacy);
    let w = &ck.weights;
    assert_eq!(w.token_embedding_table.shape(), [VOCAB, DIM]);
    assert_eq!(w.wq.shape(), [LAYERS, DIM, DIM]);
    assert_eq!(w.wk.shape(), [LAYERS, KV_DIM, DIM]);
    assert_eq!(w.wv.shape(), [LAYERS, KV_DIM, DIM]);
    assert_eq!(w.wo.shape(), [LAYERS, DIM, DIM]);
    assert_eq!(w.w1.shape(), [LAYERS, HIDDEN, DIM]);
    assert_eq!(w.w2.shape(), [LAYERS, DIM, HIDDEN]);
    assert_eq!(w.w3.shape(), [LAYERS, HIDDEN, DIM]);
    assert_eq!(w.rms_att_weight.shape(), [LAYERS, DIM]);
    assert_eq!(w.rms_final_weight.shape(), [DIM]);
    assert!(w.wcls.is_none());
    assert_eq!(w.classifier(), w.token_embedding_table.view());
    assert_counting(&ck, &starts);
    // Row-major [layer, out, in], as run.c indexes `w + l*dim*kv_dim` then `i*n + j`.
    assert_eq!(w.wk[[1, 3, 7]], start_of(&starts, "wk") + (KV_DIM * DIM + 3 * DIM + 7) as f32);
    assert_eq!(w.w2[[0, 7, 11]], start_of(&starts, "w2") + (7 * HIDDEN + 11) as f32);
    assert_eq!(w.token_embedding_table[[5, 1]], (5 * DIM + 1) as f32);
    assert_eq!(w.rms_final_weight[7], start_of(&starts, "rms_final_weight") + 7.0);
    let names: Vec<&str> = w.tensors().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        legacy_order(true).iter().map(|(n, _)| *n).filter(|n| !n.starts_with("freq")).collect::<Vec<_>>()
    );
}

#[test]
fn legacy_unshared_classifier_follows_the_rope_tables() {
    let (bin, starts) = legacy_file(false);
    let ck = Checkpoint::from_bytes(&bin).unwrap();
    assert!(!ck.config.shared_classifier);
    assert_eq!(ck.config.vocab_size, VOCAB);
    assert_counting(&ck, &starts);
    let wcls = ck.weights.wcls.as_ref().unwrap();
    // The RoPE tables (2 * ROPE floats) sit between rms_final_weight and wcls, and are skipped.
    let after_final = start_of(&starts, "rms_final_weight") + DIM as f32;
    assert_eq!(wcls[[0, 0]], after_final + (2 * ROPE) as f32);
    assert_eq!(ck.weights.classifier(), wcls.view());
}

#[test]
fn version_1_reads_back_exactly() {
    for shared in [true, false] {
        let (bin, starts) = file_with_counting_floats(v1_header(shared), &v1_order(shared));
        let ck = Checkpoint::from_bytes(&bin).unwrap();
        assert_eq!(ck.format, Format::V1);
        assert_eq!(ck.config.shared_classifier, shared);
        assert_eq!(ck.config.vocab_size, VOCAB);
        assert_counting(&ck, &starts);
        assert_eq!(ck.weights.rms_att_weight[[0, 0]], 0.0);
    }
}

#[test]
fn writes_version_0_that_reads_back_equal() {
    for shared in [true, false] {
        let (bin, _) = legacy_file(shared);
        let ck = Checkpoint::from_bytes(&bin).unwrap();
        let written = ck.to_legacy_bytes().unwrap();
        assert_eq!(written.len(), bin.len());
        // Everything but the RoPE tables is the same bytes.
        let floats_before_rope =
            legacy_order(true).iter().take_while(|(n, _)| !n.starts_with("freq")).map(|(_, c)| c).sum::<usize>();
        let rope_at = 28 + 4 * floats_before_rope;
        assert_eq!(written[..rope_at], bin[..rope_at]);
        assert_eq!(written[rope_at + 8 * ROPE..], bin[rope_at + 8 * ROPE..]);
        assert_eq!(Checkpoint::from_bytes(&written).unwrap(), ck);
        // model.py's tables: cos/sin(pos / 10000^(2i / head_size)); head_size 2 has one frequency, 1.
        let f = |k: usize| f32::from_le_bytes(written[rope_at + 4 * k..rope_at + 4 * k + 4].try_into().unwrap());
        assert_eq!([f(0), f(1), f(2)], [1.0, 1f32.cos(), 2f32.cos()]);
        assert_eq!([f(ROPE), f(ROPE + 1), f(ROPE + 2)], [0.0, 1f32.sin(), 2f32.sin()]);
    }
    // A version 1 checkpoint is written as version 0, same weights.
    let (bin, _) = file_with_counting_floats(v1_header(false), &v1_order(false));
    let v1 = Checkpoint::from_bytes(&bin).unwrap();
    let v0 = Checkpoint::from_bytes(&v1.to_legacy_bytes().unwrap()).unwrap();
    assert_eq!((v0.format, v0.config, &v0.weights), (Format::Legacy, v1.config, &v1.weights));
}

#[test]
fn writing_checks_shapes_and_the_classifier_flag() {
    let (bin, _) = legacy_file(true);
    let ck = Checkpoint::from_bytes(&bin).unwrap();
    let mut bad = ck.clone();
    bad.weights.w2 = ndarray::Array3::zeros((LAYERS, HIDDEN, DIM));
    let e = bad.to_legacy_bytes().unwrap_err();
    assert!(e.to_string().contains("`w2` has shape [2, 12, 8], the config implies [2, 8, 12]"), "{e}");
    let mut bad = ck.clone();
    bad.config.shared_classifier = false;
    assert!(matches!(bad.to_legacy_bytes(), Err(Error::Invalid(_))));
    let mut bad = ck.clone();
    bad.config.n_heads = 0;
    assert!(matches!(bad.to_legacy_bytes(), Err(Error::Header { field: "n_heads", .. })));
    let dir = std::env::temp_dir().join(format!("mote-llm-ck-write-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    ck.write_legacy(dir.join("m.bin")).unwrap();
    assert_eq!(Checkpoint::read(dir.join("m.bin")).unwrap(), ck);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn header_err(ints: [i32; 7]) -> Error {
    let mut bin = header(ints);
    bin.resize(bin.len() + 4096, 0);
    Checkpoint::from_bytes(&bin).unwrap_err()
}

#[test]
fn non_positive_header_fields_are_refused_by_name() {
    let names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
    for (k, name) in names.iter().enumerate() {
        for bad in [0, -1, i32::MIN] {
            if *name == "vocab_size" && bad != 0 {
                continue; // negative means an unshared classifier
            }
            let mut h = ints(VOCAB as i32);
            h[k] = bad;
            match header_err(h) {
                Error::Header { field, value, .. } => assert_eq!((field, value), (*name, i64::from(bad))),
                e => panic!("{name} = {bad}: {e}"),
            }
        }
    }
    let mut h = ints(0);
    h[5] = 0;
    let e = header_err(h);
    assert_eq!(
        e.to_string(),
        "<bytes>: header field `vocab_size` = 0: must not be 0 (a negative value means an unshared classifier)"
    );
}

#[test]
fn head_counts_must_divide() {
    let e = header_err([8, 12, 2, 3, 3, 6, 3]);
    assert_eq!(e.to_string(), "<bytes>: header field `n_heads` = 3: does not divide dim = 8");
    let e = header_err([8, 12, 2, 4, 3, 6, 3]);
    assert_eq!(e.to_string(), "<bytes>: header field `n_kv_heads` = 3: does not divide n_heads = 4");
    let e = header_err([8, 12, 2, 4, 8, 6, 3]);
    assert!(matches!(e, Error::Header { field: "n_kv_heads", value: 8, .. }), "{e}");
    let e = header_err([12, 12, 2, 4, 4, 6, 3]);
    assert!(e.to_string().contains("head_size = dim / n_heads = 12 / 4 = 3 odd"), "{e}");
}

#[test]
fn size_mismatches_name_the_file_the_field_and_both_sizes() {
    let (bin, _) = legacy_file(true);
    let full = bin.len() as u64;
    let dir = std::env::temp_dir().join(format!("mote-llm-ck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stories.bin");
    std::fs::write(&path, &bin[..bin.len() - 4]).unwrap();
    let e = Checkpoint::read(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: the file ends inside `freq_cis_imag`: the header implies {full} bytes, the file has {}",
            path.display(),
            full - 4
        )
    );
    // Cut inside w2.
    let (_, starts) = legacy_file(true);
    let in_w2 = 28 + 4 * (starts.iter().find(|(n, _)| *n == "w2").unwrap().1 + 5);
    match Checkpoint::from_bytes(&bin[..in_w2]).unwrap_err() {
        Error::Truncated { field, expected, actual, .. } => {
            assert_eq!((field.as_str(), expected, actual), ("w2", full, in_w2 as u64))
        }
        e => panic!("{e}"),
    }
    // Shorter than the header.
    match Checkpoint::from_bytes(&bin[..10]).unwrap_err() {
        Error::Truncated { field, expected: 28, actual: 10, .. } => assert_eq!(field, "header"),
        e => panic!("{e}"),
    }
    assert!(matches!(Checkpoint::from_bytes(&[]), Err(Error::Truncated { actual: 0, .. })));
    // Longer than the header implies.
    let mut long = bin.clone();
    long.extend_from_slice(&[0; 4]);
    let e = Checkpoint::from_bytes(&long).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "<bytes>: 4 bytes after the last tensor `freq_cis_imag`: the header implies {full} bytes, the file has {}",
            full + 4
        )
    );
    let e = Checkpoint::read(dir.join("missing.bin")).unwrap_err();
    assert!(matches!(&e, Error::Io { file, .. } if file.ends_with("missing.bin")), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_lost_or_wrong_classifier_sign_is_explained() {
    // Unshared data under a positive vocab_size: exactly one [vocab, dim] matrix too many.
    let (mut bin, _) = legacy_file(false);
    bin[20..24].copy_from_slice(&(VOCAB as i32).to_le_bytes());
    let e = Checkpoint::from_bytes(&bin).unwrap_err();
    assert!(matches!(e, Error::TrailingBytes { extra, .. } if extra == (4 * VOCAB * DIM) as u64), "{e}");
    assert!(
        e.to_string().contains("an unshared classifier `wcls`? version 0 marks it with a negative vocab_size"),
        "{e}"
    );
    // Shared data under a negative vocab_size: exactly wcls missing.
    let (mut bin, _) = legacy_file(true);
    bin[20..24].copy_from_slice(&(-(VOCAB as i32)).to_le_bytes());
    let e = Checkpoint::from_bytes(&bin).unwrap_err();
    assert!(matches!(&e, Error::Truncated { field, .. } if field == "wcls"), "{e}");
    assert!(e.to_string().contains("exactly the classifier `wcls` [6, 8] is missing"), "{e}");
}

#[test]
fn huge_headers_neither_overflow_nor_allocate() {
    // Sizes that fit u64: a plain size mismatch.
    let e = header_err([1 << 20, i32::MAX, 1, 1 << 19, 1 << 19, i32::MAX, i32::MAX]);
    assert!(matches!(e, Error::Truncated { field, .. } if field == "token_embedding_table"));
    // n_layers * dim * dim * 4 bytes beyond u64.
    let e = header_err([1 << 30, 1, i32::MAX, 1 << 29, 1 << 29, 1, 1]);
    assert!(matches!(e, Error::Overflow { .. }), "{e}");
    let e = header_err([2, 1, 1, 1, 1, i32::MIN, 1]);
    assert!(matches!(e, Error::Header { field: "vocab_size", value, .. } if value == i64::from(i32::MIN)), "{e}");
    let e = header_err([2, 1, 1, 1, 1, -i32::MAX, 1]);
    assert!(matches!(&e, Error::Truncated { field, .. } if field == "token_embedding_table"), "{e}");
}

#[test]
fn other_versions_are_refused() {
    let mut v2 = v1_header(true);
    v2[4..8].copy_from_slice(&2i32.to_le_bytes());
    let e = Checkpoint::from_bytes(&v2).unwrap_err();
    assert!(matches!(&e, Error::Unsupported { what, .. } if what.contains("version 2 (Q8_0")), "{e}");
    v2[4..8].copy_from_slice(&7i32.to_le_bytes());
    assert!(matches!(Checkpoint::from_bytes(&v2), Err(Error::Unsupported { .. })));
    let mut flag = v1_header(true);
    flag[36] = 2;
    assert!(matches!(Checkpoint::from_bytes(&flag), Err(Error::Header { field: "shared_classifier", value: 2, .. })));
    let mut negative = v1_header(true);
    negative[28..32].copy_from_slice(&(-6i32).to_le_bytes());
    assert!(matches!(Checkpoint::from_bytes(&negative), Err(Error::Header { field: "vocab_size", value: -6, .. })));
    assert!(matches!(Checkpoint::from_bytes(&v1_header(true)[..100]), Err(Error::Truncated { expected: 256, .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Checkpoint::from_bytes(&bytes);
    }

    #[test]
    fn random_headers_never_panic(h in proptest::array::uniform7(prop_oneof![any::<i32>(), 0i32..10, -10i32..0, Just(i32::MAX), Just(i32::MIN)]),
                                  floats in 0usize..2000, v1: bool) {
        let mut bin = if v1 { v1_header(true)[..8].to_vec() } else { vec![] };
        bin.extend(header(h));
        if v1 {
            bin.resize(256, 0);
        }
        bin.resize(bin.len() + 4 * floats, 0);
        if let Ok(ck) = Checkpoint::from_bytes(&bin) {
            prop_assert_eq!(Checkpoint::from_bytes(&ck.to_legacy_bytes().unwrap()).unwrap().weights, ck.weights);
        }
    }

    #[test]
    fn every_truncation_is_an_error(cut in 0usize..100_000, shared: bool) {
        let (bin, _) = legacy_file(shared);
        let cut = cut % bin.len();
        prop_assert!(Checkpoint::from_bytes(&bin[..cut]).is_err());
    }
}
