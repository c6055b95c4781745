//! Arm DSP-extension kernels (Cortex-M4/M7/M33/M55): `SXTB16` activation panels and an `SMLAD` tile loop.
//!
//! `unsafe` here: inline `SXTB16` (no memory access), and one call into the hand-written tile loop, which reads
//! exactly the panel and blocks whose lengths [`tiles`] checks and writes two bytes per tile into each of the
//! two output rows, also checked first.

use core::arch::{asm, global_asm};

use super::{block_words, fill_panel_portable};
use crate::KernelError;

/// `[x₀, x₂]` of four bytes, sign-extended to two half-words.
#[inline(always)]
fn sxtb16(x: u32) -> i32 {
    let r: i32;
    // SAFETY: a register-only instruction.
    unsafe {
        asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `[x₁, x₃]` of four bytes, sign-extended to two half-words.
#[inline(always)]
fn sxtb16_ror8(x: u32) -> i32 {
    let r: i32;
    // SAFETY: a register-only instruction.
    unsafe {
        asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// [`fill_panel_portable`] with one load and two `SXTB16` per four activations of a row.
pub(super) fn fill_panel(x: &[i8], k: usize, r0: usize, r1: usize, panel: &mut [i32]) {
    let word = |r: usize, c: usize| -> u32 {
        match x.get(r * k + c..r * k + c + 4) {
            Some(&[a, b, c, d]) => u32::from_le_bytes([a as u8, b as u8, c as u8, d as u8]),
            _ => 0,
        }
    };
    let full = k / 4;
    for (q, quad) in panel.chunks_exact_mut(4).take(full).enumerate() {
        let (a, b) = (word(r0, 4 * q), word(r1, 4 * q));
        if let [p0, p1, p2, p3] = quad {
            (*p0, *p1, *p2, *p3) = (sxtb16(a), sxtb16_ror8(a), sxtb16(b), sxtb16_ror8(b));
        }
    }
    if k % 4 != 0 {
        fill_panel_tail(x, k, r0, r1, panel, full);
    }
}

/// Fills quad `q`, the last one, shorter than four: the portable fill of the two zero-padded row tails.
fn fill_panel_tail(x: &[i8], k: usize, r0: usize, r1: usize, panel: &mut [i32], q: usize) {
    let mut tails = [0i8; 8];
    for (tail, r) in tails.chunks_exact_mut(4).zip([r0, r1]) {
        for (c, v) in tail.iter_mut().enumerate().take(k - 4 * q) {
            *v = x.get(r * k + 4 * q + c).copied().unwrap_or(0);
        }
    }
    if let Some(slot) = panel.get_mut(4 * q..4 * q + 4) {
        fill_panel_portable(&tails, 4, 0, 1, slot);
    }
}

/// Arguments of `mote_dsp_linear_tiles`, read with one `LDM`.
#[repr(C)]
struct TileArgs {
    panel: *const i32,
    blocks: *const i32,
    out0: *mut i8,
    out1: *mut i8,
    quads: u32,
    tiles: u32,
    zero_point: i32,
}

extern "C" {
    /// For each of `tiles` blocks: the 2×2 accumulators over `quads` quads (bias-initialised), requantized with
    /// `SMMLAR acc, acc, mul, zero_point` and `SSAT #8`, stored as two bytes at `out0` and at `out1` (both advance
    /// by 2 per block; `out0 == out1` is allowed and writes row 0 twice).
    fn mote_dsp_linear_tiles(args: *const TileArgs);
}

/// Runs the assembly over `tiles` full blocks (`blocks`, each [`block_words`] long) for the panel of rows
/// `rows`, writing columns `0..2·tiles` of those rows of `out [.., n]`.
pub(super) fn tiles(
    panel: &[i32],
    blocks: &[i32],
    tiles: usize,
    zero_point: i32,
    n: usize,
    (r0, r1): (usize, usize),
    out: &mut [i8],
) -> Result<(), KernelError> {
    let quads = panel.len() / 4;
    let rows_ok =
        [r0, r1].iter().all(|r| r.checked_mul(n).and_then(|s| s.checked_add(n)).is_some_and(|e| e <= out.len()));
    if panel.len() % 4 != 0 || blocks.len() != tiles * block_words(4 * quads) || 2 * tiles > n || !rows_ok || tiles == 0
    {
        return if tiles == 0 { Ok(()) } else { Err(KernelError::ShapeMismatch) };
    }
    let base = out.as_mut_ptr();
    let args = TileArgs {
        panel: panel.as_ptr(),
        blocks: blocks.as_ptr(),
        // SAFETY: r·n + 2·tiles <= r·n + n <= out.len() for both rows (checked above).
        out0: unsafe { base.add(r0 * n) },
        out1: unsafe { base.add(r1 * n) },
        quads: quads as u32,
        tiles: tiles as u32,
        zero_point,
    };
    // SAFETY: the routine reads `4·quads` panel words and `tiles·block_words` block words, writes `2·tiles` bytes
    // from each output row pointer, and restores every callee-saved register (AAPCS).
    unsafe { mote_dsp_linear_tiles(&args) };
    Ok(())
}

/// One quad (four `k`) of the 2×2 tile: `r0` walks the panel, `r1` the block; accumulators r4–r7.
macro_rules! quad {
    () => {
        "ldm r0!, {{r8, r9, r10, r11}}
        ldm r1!, {{r2, r3, r12, lr}}
        smlad r4, r8, r2, r4
        smlad r4, r9, r3, r4
        smlad r5, r8, r12, r5
        smlad r5, r9, lr, r5
        smlad r6, r10, r2, r6
        smlad r6, r11, r3, r6
        smlad r7, r10, r12, r7
        smlad r7, r11, lr, r7"
    };
}

/// Module-level assembly is assembled for the target triple's base features, not `-C target-cpu`: ARMv8-M
/// Mainline has no DSP extension by default, so M33/M55 builds name a core that has it (ARMv7E-M always does).
#[cfg(mote_v8m)]
macro_rules! cpu_directive {
    () => {
        ".cpu cortex-m33"
    };
}
#[cfg(not(mote_v8m))]
macro_rules! cpu_directive {
    () => {
        ""
    };
}

// Registers: r0 panel pointer, r1 block pointer, r4-r7 accumulators (row0·col0, row0·col1, row1·col0,
// row1·col1), r8-r11 activations, r2/r3/r12/lr weights. Loop state that does not fit lives on the stack:
// [sp] panel start, [sp+4] end of the single quads, [sp+8] panel end, [sp+12] out0, [sp+16] out1,
// [sp+20] blocks left, [sp+24] zero point. The quads run as `quads % 8` single ones, then groups of eight.
global_asm!(
    ".section .text.mote_dsp_linear_tiles,\"ax\",%progbits",
    ".syntax unified",
    ".thumb",
    cpu_directive!(),
    ".global mote_dsp_linear_tiles",
    ".type mote_dsp_linear_tiles,%function",
    ".p2align 2",
    ".thumb_func",
    "mote_dsp_linear_tiles:",
    "push {{r4-r11, lr}}",
    "sub sp, sp, #28",
    "ldm r0, {{r1-r7}}",
    "str r1, [sp, #0]",
    "and r8, r5, #7",
    "add r8, r1, r8, lsl #4",
    "str r8, [sp, #4]",
    "add r8, r1, r5, lsl #4",
    "str r8, [sp, #8]",
    "strd r3, r4, [sp, #12]",
    "str r6, [sp, #20]",
    "str r7, [sp, #24]",
    "mov r1, r2",
    "cmp r6, #0",
    "beq 9f",
    "1:",
    "ldr r0, [sp, #0]",
    "ldm r1!, {{r4, r5}}",
    "mov r6, r4",
    "mov r7, r5",
    "ldr r2, [sp, #4]",
    "cmp r0, r2",
    "beq 3f",
    "2:",
    quad!(),
    "ldr r2, [sp, #4]",
    "cmp r0, r2",
    "bne 2b",
    "3:",
    "ldr r2, [sp, #8]",
    "cmp r0, r2",
    "beq 5f",
    "4:",
    quad!(),
    quad!(),
    quad!(),
    quad!(),
    quad!(),
    quad!(),
    quad!(),
    quad!(),
    "ldr r2, [sp, #8]",
    "cmp r0, r2",
    "bne 4b",
    "5:",
    "ldm r1!, {{r2, r3}}",
    "ldr r12, [sp, #24]",
    "smmlar r4, r4, r2, r12",
    "smmlar r5, r5, r3, r12",
    "smmlar r6, r6, r2, r12",
    "smmlar r7, r7, r3, r12",
    "ssat r4, #8, r4",
    "ssat r5, #8, r5",
    "ssat r6, #8, r6",
    "ssat r7, #8, r7",
    "ldrd r8, r9, [sp, #12]",
    "strb r5, [r8, #1]",
    "strb r4, [r8], #2",
    "strb r7, [r9, #1]",
    "strb r6, [r9], #2",
    "strd r8, r9, [sp, #12]",
    "ldr r2, [sp, #20]",
    "subs r2, r2, #1",
    "str r2, [sp, #20]",
    "bne 1b",
    "9:",
    "add sp, sp, #28",
    "pop {{r4-r11, pc}}",
    ".size mote_dsp_linear_tiles, . - mote_dsp_linear_tiles",
    ".text",
);
