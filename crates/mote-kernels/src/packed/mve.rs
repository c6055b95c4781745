//! Arm Helium (MVE) kernel for [`PackedLayout::Mve8`](super::PackedLayout::Mve8) (Cortex-M55/M85).
//!
//! One call into hand-written assembly runs the whole layer. Per pair of rows it copies the two activation
//! rows into a panel (`[chunk][row][16 bytes]`, tail-predicated `DLSTP` loop), then for each tile of four
//! output channels it accumulates the 2×4 outputs in the eight even general-purpose registers with
//! `VMLADAVA.S8` (16 MACs each), fetching two chunks of both rows and one chunk of four channels per `VLDM`,
//! and requantizes the tile in vector registers: `+ bias`, `VRMULH` (`⌊(acc·mul + 2³¹) / 2³²⌋`, as `SMMLAR`),
//! `+ zero point`, two saturating narrows to 8 bits and one `VSTRB.32` of four bytes per row. The padding
//! channels of a last partial tile are masked off the stores (`VCTP`). With an odd `m` the last row is
//! computed twice into the same bytes. Bytes of the panel past `k` are left as they are: they meet zero
//! weights.
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

// Registers in the tile loops: r1 out0 and r3 out1 (row pointers of the pair; equal for the last row of an odd
// `m`), r5 weights, r7 panel end, r9 panel, r11 tiles left; accumulators r0 r2 r4 r6 (row 0, channels 0-3) and
// r8 r10 r12 lr (row 1); q0-q3 activations (row 0 and row 1 of two chunks), q4-q7 one chunk of four channels.
// Stack frame: [sp] zero point, [sp+4] panel start, [sp+8] tile-loop variant, [sp+12] full tiles,
// [sp+16] channels of the partial tile, [sp+20] x row of the pair, [sp+24] out row of the pair, [sp+28] rows left,
// [sp+32] k, [sp+36] n, [sp+40] words, [sp+44] 1 if the number of chunks is odd.
//
// The first one (odd count) or two chunks of a tile use the non-accumulating VMLADAV, so no zeroing is needed;
// the tile-loop variants differ in that and in whether pairs of chunks remain after it.
global_asm!(
    r#".section .text.mote_mve_linear,"ax",%progbits
    .syntax unified
    .thumb
    // Module-level assembly does not see -C target-cpu: name the core for MVE, FP and low-overhead loops.
    .cpu cortex-m55

    // One chunk of both rows against four channels, not accumulating (the first chunk of an odd count).
    .macro MOTE_MVE_SINGLE
    vldmia r9!, {{s0-s7}}
    vldmia r5!, {{s16-s31}}
    vmladav.s8 r0, q0, q4
    vmladav.s8 r2, q0, q5
    vmladav.s8 r4, q0, q6
    vmladav.s8 r6, q0, q7
    vmladav.s8 r8, q1, q4
    vmladav.s8 r10, q1, q5
    vmladav.s8 r12, q1, q6
    vmladav.s8 lr, q1, q7
    .endm

    // Two chunks of both rows against four channels; `first` is vmladav (set) or vmladava (accumulate) for the
    // first of the two chunks.
    .macro MOTE_MVE_PAIR first
    vldmia r9!, {{s0-s15}}
    vldmia r5!, {{s16-s31}}
    \first\().s8 r0, q0, q4
    \first\().s8 r2, q0, q5
    \first\().s8 r4, q0, q6
    \first\().s8 r6, q0, q7
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
    .endm

    // Requantizes the tile and stores four bytes per row (`masked`: only the channels below n % 4). Leaves the
    // panel pointer r9 at the panel start for the next tile.
    .macro MOTE_MVE_REQUANT masked
    // VMOV Qd[i+2], Qd[i], Rt, Rt2 writes Rt to lane i and Rt2 to lane i+2.
    vmov q0[2], q0[0], r0, r4
    vmov q0[3], q0[1], r2, r6
    vmov q1[2], q1[0], r8, r12
    vmov q1[3], q1[1], r10, lr
    vldmia r5!, {{s8-s15}}
    ldrd r0, r9, [sp]
    vadd.i32 q0, q0, q2
    vadd.i32 q1, q1, q2
    vrmulh.s32 q0, q0, q3
    vrmulh.s32 q1, q1, q3
    vadd.i32 q0, q0, r0
    vadd.i32 q1, q1, r0
    vqmovnb.s32 q4, q0
    vqmovnb.s32 q5, q1
    vqmovnb.s16 q6, q4
    vqmovnb.s16 q7, q5
    .if \masked
    ldr r2, [sp, #16]
    vctp.32 r2
    vpstt
    vstrbt.32 q6, [r1], #4
    vstrbt.32 q7, [r3], #4
    .else
    vstrb.32 q6, [r1], #4
    vstrb.32 q7, [r3], #4
    .endif
    .endm

    // The loop over the r11 >= 1 full tiles of a row pair: `single` = odd chunk count, `pairs` = pairs of chunks
    // remain after the first one or two chunks.
    .macro MOTE_MVE_TILES single, pairs
1:
    .if \single
    MOTE_MVE_SINGLE
    .else
    MOTE_MVE_PAIR vmladav
    .endif
    .if \pairs
2:
    MOTE_MVE_PAIR vmladava
    cmp r9, r7
    bne 2b
    .endif
    MOTE_MVE_REQUANT 0
    subs r11, r11, #1
    bne 1b
    b .Lmote_mve_partial
    .endm

    .global mote_mve_linear
    .type mote_mve_linear,%function
    .p2align 2
    .thumb_func
mote_mve_linear:
    push {{r4-r11, lr}}
    vpush {{s16-s31}}
    sub sp, sp, #48
    ldm r0, {{r1-r8}}
    strd r8, r4, [sp]
    add r9, r6, #15
    lsr r9, r9, #4
    and r10, r9, #1
    str r10, [sp, #44]
    cmp r9, #3
    it hs
    addhs r10, r10, #2
    str r10, [sp, #8]
    lsr r10, r7, #2
    str r10, [sp, #12]
    and r10, r7, #3
    str r10, [sp, #16]
    strd r1, r3, [sp, #20]
    strd r5, r6, [sp, #28]
    strd r7, r2, [sp, #36]

.Lmote_mve_rows:
    // Rows r and r+1 (or r twice): sources r0, r2 and outputs r1, r3; copy both rows into the panel.
    ldrd r0, r1, [sp, #20]
    ldrd r6, r8, [sp, #28]
    ldr r10, [sp, #36]
    mov r2, r0
    mov r3, r1
    cmp r6, #2
    itt hs
    addhs r2, r0, r8
    addhs r3, r1, r10
    ldr r4, [sp, #4]
    dlstp.8 lr, r8
3:
    vldrb.u8 q0, [r0], #16
    vldrb.u8 q1, [r2], #16
    vstrb.8 q1, [r4, #16]
    vstrb.8 q0, [r4], #32
    letp lr, 3b
    mov r7, r4
    ldr r9, [sp, #4]
    ldr r5, [sp, #40]
    ldr r11, [sp, #12]
    cmp r11, #0
    beq .Lmote_mve_partial
    ldr r0, [sp, #8]
    tbh [pc, r0, lsl #1]
.Lmote_mve_table:
    .hword (.Lmote_mve_v0 - .Lmote_mve_table) / 2
    .hword (.Lmote_mve_v1 - .Lmote_mve_table) / 2
    .hword (.Lmote_mve_v2 - .Lmote_mve_table) / 2
    .hword (.Lmote_mve_v3 - .Lmote_mve_table) / 2
.Lmote_mve_v0:
    MOTE_MVE_TILES 0, 0
.Lmote_mve_v1:
    MOTE_MVE_TILES 1, 0
.Lmote_mve_v2:
    MOTE_MVE_TILES 0, 1
.Lmote_mve_v3:
    MOTE_MVE_TILES 1, 1

.Lmote_mve_partial:
    // The last n % 4 channels, if any: the same tile with runtime checks and masked stores.
    ldr r0, [sp, #16]
    cmp r0, #0
    beq .Lmote_mve_next
    ldr r0, [sp, #44]
    cbz r0, 4f
    MOTE_MVE_SINGLE
    b 5f
4:
    MOTE_MVE_PAIR vmladav
5:
    cmp r9, r7
    beq 7f
6:
    MOTE_MVE_PAIR vmladava
    cmp r9, r7
    bne 6b
7:
    MOTE_MVE_REQUANT 1

.Lmote_mve_next:
    ldrd r0, r1, [sp, #20]
    ldrd r6, r8, [sp, #28]
    ldr r10, [sp, #36]
    add r0, r0, r8, lsl #1
    add r1, r1, r10, lsl #1
    strd r0, r1, [sp, #20]
    subs r6, r6, #2
    str r6, [sp, #28]
    bgt .Lmote_mve_rows

    add sp, sp, #48
    vpop {{s16-s31}}
    pop {{r4-r11, pc}}
    .size mote_mve_linear, . - mote_mve_linear

    .purgem MOTE_MVE_SINGLE
    .purgem MOTE_MVE_PAIR
    .purgem MOTE_MVE_REQUANT
    .purgem MOTE_MVE_TILES
    .text"#
);
