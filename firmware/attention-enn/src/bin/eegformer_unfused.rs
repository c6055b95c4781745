//! eegformer_mhsa, unfused variant (see the `attention_enn` crate doc).
#![no_std]
#![no_main]

use attention_enn::block::{EEGFORMER, EEGFORMER_MHSA};
use attention_enn::{run, Variant};

const ARENA: usize = EEGFORMER.arena_bytes();

mote_fw::main!(start);

fn start() -> i32 {
    let Some(arena) = mote_fw::singleton!([i8; ARENA] = [0; ARENA]) else {
        return 1;
    };
    run(&EEGFORMER_MHSA, Variant::Unfused, arena)
}
