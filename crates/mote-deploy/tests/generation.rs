//! Generation on emulated cores: an int8 decoder compiled to a no_std crate, fed a prompt and sampled token by
//! token on QEMU, must produce the host reference's token sequence exactly (greedy and seeded top-k).
//!
//! The model is a llama2.c checkpoint with seeded random weights (grouped-query attention: 4 query heads on 2
//! key/value heads, separate classifier), written and re-read in llama2.c's format. Without QEMU or a Rust target
//! the tests print `SKIP: <reason>` and pass, except when `CI` is set, where they fail.

use std::time::Duration;

use mote_deploy::{run_generation, Board, GenerationJob, Paths, DEFAULT_STACK_BYTES};
use mote_llm::generate::{generate, PackedDecoder, Sampling};
use mote_llm::quant::{calibrate, quantize, QuantDecoder};
use mote_llm::{Checkpoint, Config};

const CONTEXT: usize = 40;

fn decoder() -> QuantDecoder {
    let config = Config {
        dim: 32,
        hidden_dim: 96,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 80,
        seq_len: 64,
        shared_classifier: false,
    };
    let bytes = Checkpoint::random(config, 11).unwrap().to_legacy_bytes().unwrap();
    let ck = Checkpoint::from_bytes(&bytes).unwrap();
    let mut s = 5u64;
    let seqs: Vec<Vec<u32>> = (0..6)
        .map(|_| {
            (0..CONTEXT)
                .map(|i| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    if i == 0 {
                        1
                    } else {
                        ((s >> 33) % 80) as u32
                    }
                })
                .collect()
        })
        .collect();
    quantize(&ck, &calibrate(&ck, &seqs, CONTEXT).unwrap(), CONTEXT).unwrap()
}

fn check(board: &str, sampling: Sampling) {
    let board = Board::resolve(board).unwrap();
    let paths = Paths::locate().unwrap();
    if mote_qemu::tools_or_skip(board.core, &paths.plugin_dir()).is_none() {
        return;
    }
    let q = decoder();
    let dec = PackedDecoder::new(&q, board.packed_layout().unwrap()).unwrap();
    let prompt = [1, 40, 7, 63];
    let steps = 24;
    let host = generate(&dec, &prompt, steps, sampling, &mut |_| {}).unwrap();
    let job = GenerationJob {
        prompt: &prompt,
        steps,
        sampling,
        stack: DEFAULT_STACK_BYTES,
        timeout: Duration::from_secs(120),
        tokens: None,
    };
    let dep = run_generation(&paths, &board, &dec, &job).unwrap();
    assert_eq!(dep.run.tokens, host, "{}: tokens differ from the host reference", board.name);
    assert_eq!(dep.run.step_instructions.len(), prompt.len() - 1 + host.len());
    // Attention grows with the position: the last step costs more than the first.
    let (first, last) = (dep.run.step_instructions[0], *dep.run.step_instructions.last().unwrap());
    assert!(last > first, "{}: step instructions {first} -> {last}", board.name);
    assert_eq!(dep.sizes.cache_bytes, 2 * 2 * CONTEXT * 16);
}

#[test]
fn greedy_on_cortex_m4() {
    check("stm32l4r5", Sampling::Greedy);
}

#[test]
fn top_k_on_cortex_m7() {
    check("stm32f746", Sampling::TopK { k: 10, temperature: 0.9, seed: 1234 });
}

#[test]
fn top_k_on_cortex_m55_and_rv32() {
    check("corstone-300", Sampling::TopK { k: 0, temperature: 1.2, seed: 7 });
    check("esp32c3", Sampling::Greedy);
}
