//! ecgformer_mhsa, fused variant (see the `attention_enn` crate doc).
#![no_std]
#![no_main]

use attention_enn::block::{ECGFORMER, ECGFORMER_MHSA};
use attention_enn::{run, Variant};

const ARENA: usize = ECGFORMER.arena_bytes();

mote_fw::main!(start);

fn start() -> i32 {
    let Some(arena) = mote_fw::singleton!([i8; ARENA] = [0; ARENA]) else {
        return 1;
    };
    run(&ECGFORMER_MHSA, Variant::Fused, arena)
}
