//! Real llama2.c files, when present: `$MOTE_LLAMA2C_DIR`, else `shared/llama2c` beside the checkout. None ships in
//! this repository (see the crate README for why and where to get them); without them these tests print SKIP.

use std::path::PathBuf;

use mote_llm::{Checkpoint, Tokenizer, BOS};

fn model_dir() -> PathBuf {
    match std::env::var_os("MOTE_LLAMA2C_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/llama2c"),
    }
}

/// The files, or `None` after printing SKIP.
fn files(names: &[&str]) -> Option<Vec<PathBuf>> {
    let dir = model_dir();
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
        println!("SKIP: {} not found (set MOTE_LLAMA2C_DIR)", missing.display());
        return None;
    }
    Some(paths)
}

#[test]
fn stories260k_reads_and_its_tokenizer_round_trips() {
    let Some(paths) = files(&["stories260K.bin", "tok512.bin"]) else { return };
    let ck = Checkpoint::read(&paths[0]).unwrap();
    // llama2.c's doc/stories260K.md: dim 64, 5 layers, 8 heads, 4 kv heads, vocab 512, seq_len 512.
    let c = ck.config;
    assert_eq!((c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len), (64, 5, 8, 4, 512, 512));
    assert!(ck.weights.tensors().iter().all(|(_, t)| t.iter().all(|x| x.is_finite())));
    let tok = Tokenizer::read(&paths[1], c.vocab_size).unwrap();
    let text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";
    let ids = tok.encode(text, true, false).unwrap();
    assert_eq!(ids[0], BOS);
    assert!(ids.len() < text.len(), "merges happened: {ids:?}");
    assert!(ids.iter().all(|&id| (id as usize) < c.vocab_size));
    assert_eq!(tok.decode_text(&ids).unwrap(), text.as_bytes());
}

/// llama2.c's test.c checks run.c's encode with the Llama 2 tokenizer (tokenizer.bin, 32000 tokens) on these
/// prompts (the ids are SentencePiece's, from Meta's example prompts); ours must give the same.
#[test]
fn llama2_tokenizer_encodes_as_run_c() {
    let Some(paths) = files(&["tokenizer.bin"]) else { return };
    let tok = Tokenizer::read(&paths[0], 32000).unwrap();
    let cases: [(&str, &[u32]); 4] = [
        ("", &[1]),
        ("I believe the meaning of life is", &[1, 306, 4658, 278, 6593, 310, 2834, 338]),
        (
            "Simply put, the theory of relativity states that ",
            &[1, 3439, 17632, 1925, 29892, 278, 6368, 310, 14215, 537, 5922, 393, 29871],
        ),
        (
            "Translate English to French:\n\n        sea otter => loutre de mer\n        peppermint => menthe poivrée\n        plush girafe => girafe peluche\n        cheese =>",
            &[
                1, 4103, 9632, 4223, 304, 5176, 29901, 13, 13, 4706, 7205, 4932, 357, 1149, 301, 449, 276, 316, 2778, 13,
                4706, 1236, 407, 837, 524, 1149, 6042, 354, 772, 440, 29878, 1318, 13, 4706, 715, 1878, 330, 3055, 1725,
                1149, 330, 3055, 1725, 4639, 28754, 13, 4706, 923, 968, 1149,
            ],
        ),
    ];
    for (text, expected) in cases {
        let ids = tok.encode(text, true, false).unwrap();
        assert_eq!(ids, expected, "{text:?}");
        assert_eq!(tok.decode_text(&ids).unwrap(), text.as_bytes());
    }
}
