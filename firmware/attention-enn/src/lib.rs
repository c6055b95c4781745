//! The int8 multi-head self-attention block written with the `embedded-nn` crate, the comparison point of mote's
//! attention benchmark: what a Rust user gets by picking that library instead of mote. The block, its data and
//! its arena layout are in [`block`] (shared with the host by `crates/mote-bench/src/attention_enn.rs`).
//!
//! Each binary (`src/bin/`) runs one model ([`block::EEGFORMER_MHSA`], [`block::ECGFORMER_MHSA`]) in one
//! [`Variant`] once, on an arena in `.bss` of exactly [`block::Shape::arena_bytes`]:
//! 1. writes the pseudo-random input into the arena (not measured);
//! 2. region [`REGION`] (`mark(REGION)` to `mark(MARK_END)`) is exactly one block call: the three projections,
//!    attention and the output projection;
//! 3. prints `enn <model> <variant> <arena bytes> <FNV-1a of y, 8 hex digits>` (parsed by `mote-bench`, which
//!    recomputes the hash on the host), then mote-fw's stack line. Exit code 0, or 1 when a kernel refused its
//!    arguments.
//!
//! One binary per model and variant keeps each ELF's flash to one block's code and weights (`.rodata`).
#![no_std]

pub mod block;

use core::hint::black_box;

use block::Model;
use mote_fw::{mark, println, MARK_END};

/// Instruction-count region of the block call.
pub const REGION: u32 = 1;

/// How the block is written (see [`block`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// [`block::mhsa_fused`]: embedded-nn's fused `scaled_dot_product_attention_s8`.
    Fused,
    /// [`block::mhsa_unfused`]: transposes, per-head batch matmuls and softmax.
    Unfused,
}

impl Variant {
    /// The name in the output line.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Fused => "fused",
            Variant::Unfused => "unfused",
        }
    }
}

/// Runs `model` in `variant` on `arena` (see the crate doc) and returns the exit code.
pub fn run(model: &Model, variant: Variant, arena: &mut [i8]) -> i32 {
    block::fill_input(model, arena);
    // black_box: the input was just written from constants; keep LLVM from moving that work across the mark.
    let arena = black_box(arena);
    mark(REGION);
    let result = match variant {
        Variant::Fused => block::mhsa_fused(model, arena),
        Variant::Unfused => block::mhsa_unfused(model, arena),
    };
    mark(MARK_END);
    match result {
        Ok(()) => {
            let hash = block::fnv1a(block::output(model, arena));
            println!("enn {} {} {} {:08x}", model.name, variant.name(), arena.len(), hash);
            0
        }
        Err(e) => {
            println!("enn {} {}: kernel error: {}", model.name, variant.name(), e);
            1
        }
    }
}
