//! Arm Helium (MVE) kernel for [`PackedLayout::Mve8`](super::PackedLayout::Mve8) (Cortex-M55/M85).
//!
//! One call into hand-written assembly runs the whole layer. Per pair of rows it copies the two activation
//! rows into a panel (`[chunk][row][16 bytes]`, tail-predicated `DLSTP` loop), then for each tile of four
//! output channels it accumulates the 2×4 outputs in the eight even general-purpose registers with
//! `VMLADAVA.S8` (16 MACs each), fetching two chunks of both rows and one chunk of four channels per `VLDM`,
//! and requantizes the tile in vector registers: `+ bias`, `VRMULH` (`⌊(acc·mul + 2³¹) / 2³²⌋`, as `SMMLAR`),
//! `+ zero point` (wrapping, as [`crate::requant::high_mul`]), two saturating narrows to 8 bits and one
//! `VSTRB.32` of four bytes per row. The last row of an odd `m` (all of `m = 1`) runs alone with 1×4 tiles.
//! The padding channels of a last partial tile are masked off the stores (`VCTP`). Panel bytes past `k` hold
//! whatever the tail-predicated loads leave there: they meet zero weights.
//!
//! Cost on Cortex-M55 (QEMU instruction counts of the whole call): 64×64×64 8.4 MACs per instruction,
//! 128×128×128 9.9, 16×256×256 10.9 (the `VMLADAVA.S8` bound is 16); per tile of 2×4 outputs the fixed part
//! is 20 instructions (gather, requantization, stores, loop) and each further 32 `k` cost 19 (three `VLDM`,
//! sixteen `VMLADAVA`; 21 inside the loop). Code size about 2.3 KiB: the tile loop is specialised (assembler
//! macros) for an odd or even chunk count and for zero, one or more further pairs of chunks. Stack: 152 bytes.
//!
//! `unsafe` here: one call into the assembly, after [`linear`] has checked every length it relies on.

use core::arch::global_asm;

use super::{check, mve_tile_words, PackedLinear, MVE_CHUNK};
use crate::KernelError;

/// Arguments of `mote_mve_linear`, read with one `LDM`.
#[repr(C)]
struct Args {
    x: *const i8,
    words: *const i32,
    out: *mut i8,
    panel: *mut i32,
    m: u32,
    k: u32,
    n: u32,
    zero_point: i32,
}

extern "C" {
    /// `out [m,n] = linear(x [m,k])` over the Mve8 `words` of `⌈n/4⌉` tiles, using `panel` (8·⌈k/16⌉ words) as
    /// scratch. Reads `m·k` bytes of `x`, writes exactly the `m·n` bytes of `out`.
    fn mote_mve_linear(args: *const Args);
}

/// The packed linear layer `x [m,k] -> out [m,n]` for Mve8 weights, in Helium assembly.
///
/// Errors: lengths that disagree with `m`, `n`, `k` (as [`super::linear_packed`]), or a dimension past `u32`.
pub(super) fn linear(
    x: &[i8],
    p: &PackedLinear<'_>,
    m: usize,
    zero_point: i32,
    scratch: &mut [i32],
    out: &mut [i8],
) -> Result<(), KernelError> {
    check(x, p, m, scratch, out)?;
    let dim = |d: usize| u32::try_from(d).map_err(|_| KernelError::ShapeMismatch);
    let (chunks, tiles) = (p.k.div_ceil(MVE_CHUNK), p.n.div_ceil(4));
    if scratch.len() < 8 * chunks || p.words.len() != tiles * mve_tile_words(p.k) {
        return Err(KernelError::ShapeMismatch);
    }
    let args = Args {
        x: x.as_ptr(),
        words: p.words.as_ptr(),
        out: out.as_mut_ptr(),
        panel: scratch.as_mut_ptr(),
        m: dim(m)?,
        k: dim(p.k)?,
        n: dim(p.n)?,
        zero_point,
    };
    // SAFETY: `check` and the test above give `x.len() == m·k`, `out.len() == m·n`, `m, k, n >= 1`, a panel of
    // `8·⌈k/16⌉` words and `⌈n/4⌉` tiles of `mve_tile_words(k)` words; the routine reads rows `0..m` of `x`
    // (tail-predicated past `k`), writes the panel, reads the words in order, stores only columns `0..n` of rows
    // `0..m` of `out`, and restores every callee-saved register (r4-r11, s16-s31) as AAPCS requires.
    unsafe { mote_mve_linear(&args) };
    Ok(())
}

// Registers in the tile loops: r1 out0 and r3 out1 (the output rows), r5 weights, r7 panel end, r9 panel,
// r11 tiles left; accumulators r0 r2 r4 r6 (row 0, channels 0-3) and r8 r10 r12 lr (row 1); q0-q3 activations
// (two chunks of the rows), q4-q7 one chunk of four channels. Stack frame: [sp] zero point, [sp+4] panel start,
// [sp+8] tile-loop variant, [sp+12] full tiles, [sp+16] channels of the partial tile, [sp+20] x row, [sp+24] out
// row, [sp+28] row pairs left, [sp+32] k, [sp+36] n, [sp+40] words, [sp+44] 1 if the number of chunks is odd,
// [sp+48] 1 if m is odd.
//
// Rows go in pairs (2×4 tiles, panel `[chunk][row][16 bytes]`), then the last row of an odd `m` alone (1×4
// tiles, panel `[chunk][16 bytes]`). The first one (odd chunk count) or two chunks of a tile use the
// non-accumulating VMLADAV, so no zeroing is needed; the tile-loop variants differ in that and in how many pairs
// of chunks remain after it (none, one, or a loop over two or more).
global_asm!(
    r#".section .text.mote_mve_linear,"ax",%progbits
    .syntax unified
    .thumb
    // Module-level assembly does not see -C target-cpu: name the core for MVE, FP and low-overhead loops.
    .cpu cortex-m55

    // The first chunk of an odd count against four channels (VMLADAV: sets the accumulators).
    .macro MOTE_MVE_SINGLE rows
    .if \rows == 2
    vldmia r9!, {{s0-s7}}
    .else
    vldmia r9!, {{s0-s3}}
    .endif
    vldmia r5!, {{s16-s31}}
    vmladav.s8 r0, q0, q4
    vmladav.s8 r2, q0, q5
    vmladav.s8 r4, q0, q6
    vmladav.s8 r6, q0, q7
    .if \rows == 2
    vmladav.s8 r8, q1, q4
    vmladav.s8 r10, q1, q5
    vmladav.s8 r12, q1, q6
    vmladav.s8 lr, q1, q7
    .endif
    .endm

    // Two chunks against four channels; `first` is vmladav (set) or vmladava (accumulate) for the first chunk.
    .macro MOTE_MVE_PAIR rows, first
    .if \rows == 2
    vldmia r9!, {{s0-s15}}
    .else
    vldmia r9!, {{s0-s7}}
    .endif
    vldmia r5!, {{s16-s31}}
    \first\().s8 r0, q0, q4
    \first\().s8 r2, q0, q5
    \first\().s8 r4, q0, q6
    \first\().s8 r6, q0, q7
    .if \rows == 2
    \first\().s8 r8, q1, q4
    \first\().s8 r10, q1, q5
    \first\().s8 r12, q1, q6
    \first\().s8 lr, q1, q7
    vldmia r5!, {{s16-s31}}
    vmladava.s8 r0, q2, q4
    vmladava.s8 r2, q2, q5
    vmladava.s8 r4, q2, q6
    vmladava.s8 r6, q2, q7
    vmladava.s8 r8, q3, q4
    vmladava.s8 r10, q3, q5
    vmladava.s8 r12, q3, q6
    vmladava.s8 lr, q3, q7
    .else
    vldmia r5!, {{s16-s31}}
    vmladava.s8 r0, q1, q4
    vmladava.s8 r2, q1, q5
    vmladava.s8 r4, q1, q6
    vmladava.s8 r6, q1, q7
    .endif
    .endm

    // Requantizes the tile and stores four bytes per row (`masked`: only the channels below n % 4). Leaves the
    // panel pointer r9 at the panel start for the next tile.
    .macro MOTE_MVE_REQUANT rows, masked
    // VMOV Qd[i+2], Qd[i], Rt, Rt2 writes Rt to lane i and Rt2 to lane i+2.
    vmov q0[2], q0[0], r0, r4
    vmov q0[3], q0[1], r2, r6
    .if \rows == 2
    vmov q1[2], q1[0], r8, r12
    vmov q1[3], q1[1], r10, lr
    .endif
    vldmia r5!, {{s8-s15}}
    ldrd r0, r9, [sp]
    vadd.i32 q0, q0, q2
    vrmulh.s32 q0, q0, q3
    vadd.i32 q0, q0, r0
    vqmovnb.s32 q4, q0
    vqmovnb.s16 q6, q4
    .if \rows == 2
    vadd.i32 q1, q1, q2
    vrmulh.s32 q1, q1, q3
    vadd.i32 q1, q1, r0
    vqmovnb.s32 q5, q1
    vqmovnb.s16 q7, q5
    .endif
    .if \masked
    ldr r2, [sp, #16]
    vctp.32 r2
    .if \rows == 2
    vpstt
    vstrbt.32 q6, [r1], #4
    vstrbt.32 q7, [r3], #4
    .else
    vpst
    vstrbt.32 q6, [r1], #4
    .endif
    .else
    vstrb.32 q6, [r1], #4
    .if \rows == 2
    vstrb.32 q7, [r3], #4
    .endif
    .endif
    .endm

    // The loop over the r11 >= 1 full tiles: `single` = odd chunk count; `pairs` = pairs of chunks after the
    // first one or two chunks: 0, 1, or 2 for a loop over any number >= 1.
    .macro MOTE_MVE_TILES rows, single, pairs
1:
    .if \single
    MOTE_MVE_SINGLE \rows
    .else
    MOTE_MVE_PAIR \rows, vmladav
    .endif
    .if \pairs == 1
    MOTE_MVE_PAIR \rows, vmladava
    .elseif \pairs == 2
2:
    MOTE_MVE_PAIR \rows, vmladava
    cmp r9, r7
    bne 2b
    .endif
    MOTE_MVE_REQUANT \rows, 0
    subs r11, r11, #1
    bne 1b
    .endm

    // The last n % 4 channels, if any: the same tile with runtime checks and masked stores.
    .macro MOTE_MVE_PARTIAL rows
    ldr r0, [sp, #16]
    cmp r0, #0
    beq 8f
    ldr r0, [sp, #44]
    cbz r0, 4f
    MOTE_MVE_SINGLE \rows
    b 5f
4:
    MOTE_MVE_PAIR \rows, vmladav
5:
    cmp r9, r7
    beq 7f
6:
    MOTE_MVE_PAIR \rows, vmladava
    cmp r9, r7
    bne 6b
7:
    MOTE_MVE_REQUANT \rows, 1
8:
    .endm

    .global mote_mve_linear
    .type mote_mve_linear,%function
    .p2align 2
    .thumb_func
mote_mve_linear:
    push {{r4-r11, lr}}
    vpush {{s16-s31}}
    sub sp, sp, #52
    ldm r0, {{r1-r8}}
    strd r8, r4, [sp]
    // Chunks C = ceil(k/16), parity C & 1, pairs after the first one or two chunks (C - 2 + parity) / 2.
    add r9, r6, #15
    lsr r9, r9, #4
    and r10, r9, #1
    str r10, [sp, #44]
    sub r12, r9, #2
    add r12, r12, r10
    lsr r12, r12, #1
    cmp r12, #2
    it hi
    movhi r12, #2
    add r10, r10, r12, lsl #1
    str r10, [sp, #8]
    lsr r10, r7, #2
    str r10, [sp, #12]
    and r10, r7, #3
    str r10, [sp, #16]
    and r10, r5, #1
    str r10, [sp, #48]
    lsr r5, r5, #1
    strd r1, r3, [sp, #20]
    strd r5, r6, [sp, #28]
    strd r7, r2, [sp, #36]
    cmp r5, #0
    beq .Lmote_mve_last

.Lmote_mve_rows:
    // Rows r (source r0, output r1) and r+1 (r2, r3); the frame moves on to the next pair.
    add r12, sp, #20
    ldm r12, {{r0, r1, r6, r8, r10}}
    add r2, r0, r8
    add r3, r1, r10
    add r4, r2, r8
    add r5, r3, r10
    sub r6, r6, #1
    stm r12, {{r4, r5, r6}}
    ldr r4, [sp, #4]
    dlstp.8 lr, r8
3:
    vldrb.u8 q0, [r0], #16
    vldrb.u8 q1, [r2], #16
    vstmia r4!, {{s0-s7}}
    letp lr, 3b
    mov r7, r4
    ldr r9, [sp, #4]
    ldr r5, [sp, #40]
    ldrd r0, r11, [sp, #8]
    cmp r11, #0
    beq .Lmote_mve_partial2
    tbh [pc, r0, lsl #1]
.Lmote_mve_table2:
    .hword (.Lmote_mve_2v0 - .Lmote_mve_table2) / 2
    .hword (.Lmote_mve_2v1 - .Lmote_mve_table2) / 2
    .hword (.Lmote_mve_2v2 - .Lmote_mve_table2) / 2
    .hword (.Lmote_mve_2v3 - .Lmote_mve_table2) / 2
    .hword (.Lmote_mve_2v4 - .Lmote_mve_table2) / 2
    .hword (.Lmote_mve_2v5 - .Lmote_mve_table2) / 2
.Lmote_mve_2v0:
    MOTE_MVE_TILES 2, 0, 0
    b .Lmote_mve_partial2
.Lmote_mve_2v1:
    MOTE_MVE_TILES 2, 1, 0
    b .Lmote_mve_partial2
.Lmote_mve_2v2:
    MOTE_MVE_TILES 2, 0, 1
    b .Lmote_mve_partial2
.Lmote_mve_2v3:
    MOTE_MVE_TILES 2, 1, 1
    b .Lmote_mve_partial2
.Lmote_mve_2v4:
    MOTE_MVE_TILES 2, 0, 2
    b .Lmote_mve_partial2
.Lmote_mve_2v5:
    MOTE_MVE_TILES 2, 1, 2
.Lmote_mve_partial2:
    MOTE_MVE_PARTIAL 2
    ldr r6, [sp, #28]
    cmp r6, #0
    bne .Lmote_mve_rows

.Lmote_mve_last:
    // The last row of an odd m, alone.
    ldr r0, [sp, #48]
    cmp r0, #0
    beq .Lmote_mve_exit
    ldrd r0, r1, [sp, #20]
    ldr r8, [sp, #32]
    ldr r4, [sp, #4]
    dlstp.8 lr, r8
3:
    vldrb.u8 q0, [r0], #16
    vstrb.8 q0, [r4], #16
    letp lr, 3b
    mov r7, r4
    ldr r9, [sp, #4]
    ldr r5, [sp, #40]
    ldrd r0, r11, [sp, #8]
    cmp r11, #0
    beq .Lmote_mve_partial1
    tbh [pc, r0, lsl #1]
.Lmote_mve_table1:
    .hword (.Lmote_mve_1v0 - .Lmote_mve_table1) / 2
    .hword (.Lmote_mve_1v1 - .Lmote_mve_table1) / 2
    .hword (.Lmote_mve_1v2 - .Lmote_mve_table1) / 2
    .hword (.Lmote_mve_1v3 - .Lmote_mve_table1) / 2
    .hword (.Lmote_mve_1v2 - .Lmote_mve_table1) / 2
    .hword (.Lmote_mve_1v3 - .Lmote_mve_table1) / 2
.Lmote_mve_1v0:
    MOTE_MVE_TILES 1, 0, 0
    b .Lmote_mve_partial1
.Lmote_mve_1v1:
    MOTE_MVE_TILES 1, 1, 0
    b .Lmote_mve_partial1
.Lmote_mve_1v2:
    MOTE_MVE_TILES 1, 0, 2
    b .Lmote_mve_partial1
.Lmote_mve_1v3:
    MOTE_MVE_TILES 1, 1, 2
.Lmote_mve_partial1:
    MOTE_MVE_PARTIAL 1

.Lmote_mve_exit:
    add sp, sp, #52
    vpop {{s16-s31}}
    pop {{r4-r11, pc}}
    .size mote_mve_linear, . - mote_mve_linear

    .purgem MOTE_MVE_SINGLE
    .purgem MOTE_MVE_PAIR
    .purgem MOTE_MVE_REQUANT
    .purgem MOTE_MVE_TILES
    .purgem MOTE_MVE_PARTIAL
    .text"#
);
