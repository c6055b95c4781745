//! Arm DSP-extension kernels (Cortex-M4/M7/M33/M55): one hand-written routine runs a whole packed linear layer,
//! a second one adds a part of the input columns to the `i32` sums of a layer computed in parts (below).
//!
//! Per pair of rows it widens the two activation rows into the panel (2×`SXTB16` per row word, one `STM` per
//! two quads; the row words are read with `LDM` when every row starts on a word boundary, else with `LDR`),
//! then walks the [`PackedLayout::Dsp16`] blocks with a 2×2 output tile: per four `k`
//! one `LDM` of four weight words, one `LDM` of four activation words and eight `SMLAD` (16 MACs), then
//! `SMMLAR acc, acc, mul, zero_point`, `SSAT #8` and a byte store per output. A lone last row (odd `m`) runs a
//! 1×2 tile over the same panel (four `SMLAD` per quad) instead of computing the row twice.
//!
//! Why 2×2: the loop keeps a panel and a block pointer, four accumulators and eight operand registers, which
//! is all fourteen registers there are (sp and pc are not free); every other tile shape with one `LDM` per
//! operand needs more loads per `SMLAD`, so 10 instructions per 16 MACs is the loop's floor. A 2×2 tile costs
//! `10·⌈k/4⌉ + 17` instructions: 12 of the 17 are the `SMMLAR`, `SSAT` and `STRB` of its four outputs, the
//! other five load the multipliers and the loop state (one `LDM sp`), store the output pointers and close
//! the tile loop.
//!
//! The k loop has no counter, no compare and no branch: the panel carries *jump words*. The quads are unrolled
//! `DSP_CHUNK` (16) times; the activation `LDM` of the last quad of each chunk also loads `pc`
//! (`LDM r0!, {r8-r11, pc}`) from the word that follows that quad in the panel, which is where the `SMLAD`s of
//! that quad are: the top of the unrolled loop again, a later point of it (so that the next chunk is shorter,
//! as in Duff's device) or the epilogue. Quad 0 is a chunk of its own, so that the tile's first `LDM` can also
//! load the four accumulators (the bias quad that starts each block). The routine writes the jump words itself
//! (again when it switches to the one-row tile); the fill skips their slots.
//!
//! Panel layout (`dsp_panel_words(k)` words): quad `q` at word `4q + ⌈q/16⌉` as
//! `[x₀(0,2), x₀(1,3), x₁(0,2), x₁(1,3)]` (see [`super::fill_panel_portable`]), a jump word after quads 0,
//! 16, 32, … and after the last quad. The quad of the last `k % 4` activations is the row's last word shifted
//! right (or, when `k < 4`, made of the row's bytes), so that no row is read past its end.
//!
//! The product in parts ([`acc_pairs`], for `super::dsp16_acc_add`: the attention kernel's output projection
//! summed head by head): the same 2×2 tile and registers over the quads of one part of each block, but the four
//! sums come from and go back to memory (two `LDRD` and two `STRD` per tile) instead of bias and requantization;
//! no jump words (one computed jump into an unrolled loop of at most 16 quads per tile, 10·quads + 13
//! instructions), and the panel is widened once per pair of rows (per quad and row one `LDR` and two `SXTB16`).
//!
//! `unsafe` here: two `asm!` blocks. Each reads exactly the activation rows, the packed words and the panel
//! whose lengths its Rust caller checks first, writes the panel and the output (or the sums), and saves and
//! restores every register it uses but r0–r3, r12 and lr (declared clobbered). Row words that may be unaligned are read
//! with `LDR`, which needs unaligned accesses enabled (`CCR.UNALIGN_TRP` = 0, the reset value; the Rust code
//! LLVM generates for these cores makes the same assumption).

use core::arch::asm;
use core::mem::{offset_of, size_of};

use super::{block_words, dsp_panel_words, PackedLayout, PackedLinear, DSP_CHUNK};
use crate::KernelError;

/// The routine's state: built by [`linear_packed`], copied to the routine's stack frame, where one `LDM sp`
/// per tile reloads the first five words.
#[repr(C)]
struct Frame {
    /// The panel (`dsp_panel_words(k)` words).
    panel: *mut i32,
    /// Output pointers of the current tile (rows 0 and 1 of the pair); set by the routine.
    out0: *mut i8,
    out1: *mut i8,
    /// End of the blocks of the current tile loop.
    end: *const i32,
    /// Output zero point.
    zero_point: i32,
    /// Where a pair's tiles start (the tile loop, or the odd block when `n == 1`); set by the routine.
    tile_entry: usize,
    /// The tile loop of the current mode (two rows or the lone row); set by the routine.
    tile_loop: usize,
    /// The panel fill chosen by `fill`; set by the routine.
    fill_entry: usize,
    // The per-pair group, read with one `LDM` (and its first five words written back with one `STM`).
    /// First activation row of the current pair.
    x: *const i8,
    /// Bytes from a pair's first activation row to its second: `k` (0 for the lone row).
    x_stride: usize,
    /// First output row of the current pair.
    out: *mut i8,
    /// Bytes from a pair's first output row to its second: `n` (0 for the lone row).
    out_stride: usize,
    /// Pairs of rows left: `m / 2`, then 1 for the lone row.
    pairs: usize,
    /// `2k`.
    x_step: usize,
    /// `2n`.
    out_step: usize,
    /// The panel fill: 0 any rows (`LDR`), 1 rows that start on a word boundary (`x` aligned and
    /// `k % 4 == 0`: `LDM`), 2 rows shorter than a word (`k < 4`: `LDRSB`).
    fill: usize,
    /// `m % 2`: whether a lone last row follows the pairs.
    lone: usize,
    /// Full quads after quad 0: `k/4 - 1`; `k` itself for the short fill.
    fill_rest: usize,
    /// `k % 4 - 4` (wrapping): the last row word's offset from the end of the full quads.
    tail_off: usize,
    /// `8·(4 - k % 4)`, or 0 when `k % 4 == 0` or `k < 4` (no tail step): the right shift of that word.
    tail_shift: usize,
    /// The packed words (`⌈n/2⌉` blocks).
    blocks: *const i32,
    /// End of the `n / 2` blocks with two real output channels.
    end_full: *const i32,
    /// Bytes of one block.
    block_bytes: usize,
    /// State of the last block when `n` is odd (second channel is padding): 0 none, 1 pending, 2 running.
    odd: usize,
    /// `⌈k/4⌉`.
    quads: usize,
    /// The odd block's output bytes (row 0 at +0, row 1 at +2); its real output pointers.
    dummy: [i8; 4],
    saved: [*mut i8; 2],
}

/// Frame words: copied as 11 + 11 + 6.
const FRAME_WORDS: usize = 28;
const _: () = assert!(size_of::<Frame>() == 4 * FRAME_WORDS);
/// Bytes pushed by the routine (`r4-r11, lr`).
const PUSHED: usize = 36;
/// Bytes reserved for the frame, keeping sp 8-byte aligned.
const FRAME_BYTES: usize = (size_of::<Frame>() + PUSHED).div_ceil(8) * 8 - PUSHED;

/// `acc + lo(a)·lo(b) + hi(a)·hi(b)`: one `SMLAD` (for the Rust tile loops of `linear_packed_requant` and the
/// product in parts).
#[inline(always)]
pub(super) fn smlad(acc: i32, a: i32, b: i32) -> i32 {
    let r: i32;
    // SAFETY: a register-only instruction.
    unsafe {
        asm!("smlad {r}, {a}, {b}, {acc}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, acc = in(reg) acc,
             options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// Bytes 0 and 2 of `w` sign-extended into the low and high half-words: one `SXTB16` (for the panel fill of the
/// product in parts).
#[inline(always)]
pub(super) fn sxtb16(w: i32) -> i32 {
    let r: i32;
    // SAFETY: a register-only instruction.
    unsafe {
        asm!("sxtb16 {r}, {w}", r = lateout(reg) r, w = in(reg) w, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// The packed linear layer with the DSP routine (see [`super::linear_packed`]).
pub(super) fn linear_packed(
    x: &[i8],
    p: &PackedLinear<'_>,
    m: usize,
    zero_point: i32,
    scratch: &mut [i32],
    out: &mut [i8],
) -> Result<(), KernelError> {
    let (n, k) = (p.n, p.k);
    let bw = block_words(k);
    let sizes_ok = p.layout == PackedLayout::Dsp16
        && m.checked_mul(k) == Some(x.len())
        && m.checked_mul(n) == Some(out.len())
        && n.div_ceil(2).checked_mul(bw) == Some(p.words.len())
        && scratch.len() >= dsp_panel_words(k);
    if m == 0 || n == 0 || k == 0 || !sizes_ok {
        return Err(KernelError::ShapeMismatch);
    }
    let blocks = p.words.as_ptr();
    let tail = k % 4;
    let frame = Frame {
        panel: scratch.as_mut_ptr(),
        out0: core::ptr::null_mut(),
        out1: core::ptr::null_mut(),
        end: blocks.wrapping_add(n / 2 * bw),
        zero_point,
        tile_entry: 0,
        tile_loop: 0,
        fill_entry: 0,
        x: x.as_ptr(),
        x_stride: k,
        out: out.as_mut_ptr(),
        out_stride: n,
        pairs: m / 2,
        x_step: 2 * k,
        out_step: 2 * n,
        fill: if k < 4 { 2 } else { usize::from((x.as_ptr() as usize | k) % 4 == 0) },
        lone: m % 2,
        fill_rest: if k < 4 { k } else { k / 4 - 1 },
        tail_off: tail.wrapping_sub(4),
        tail_shift: if tail == 0 || k < 4 { 0 } else { 8 * (4 - tail) },
        blocks,
        end_full: blocks.wrapping_add(n / 2 * bw),
        block_bytes: 4 * bw,
        odd: n % 2,
        quads: k.div_ceil(4),
        dummy: [0; 4],
        saved: [core::ptr::null_mut(); 2],
    };
    run(&frame);
    Ok(())
}

/// The eight `SMLAD` of one quad of the 2×2 tile: accumulators r2 (row 0·col 0), r3 (row 0·col 1),
/// r4 (row 1·col 0), r5 (row 1·col 1); activations r8, r9 (row 0), r10, r11 (row 1); weights r6, r7 (col 0),
/// r12, lr (col 1). 32 bytes (the jump words are computed from that size).
macro_rules! smlad2 {
    () => {
        "smlad r2, r8, r6, r2
        smlad r2, r9, r7, r2
        smlad r3, r8, r12, r3
        smlad r3, r9, lr, r3
        smlad r4, r10, r6, r4
        smlad r4, r11, r7, r4
        smlad r5, r10, r12, r5
        smlad r5, r11, lr, r5"
    };
}

/// The four `SMLAD` of one quad of the 1×2 tile (row 0 of [`smlad2`]). 16 bytes.
macro_rules! smlad1 {
    () => {
        "smlad r2, r8, r6, r2
        smlad r2, r9, r7, r2
        smlad r3, r8, r12, r3
        smlad r3, r9, lr, r3"
    };
}

/// The unrolled quads after the top `SMLAD`s: `DSP_CHUNK - 1` times the weight and activation `LDM`s and the
/// `SMLAD`s, then the last quad's `LDM`s, the activation one with the jump. 8 bytes of `LDM`s per quad.
macro_rules! chunk_rest {
    ($smlad:expr) => {
        concat!(
            ".rept {chunk} - 1\n",
            "ldm r1!, {{r6, r7, r12, lr}}\n",
            "ldm r0!, {{r8-r11}}\n",
            $smlad,
            "\n.endr\n",
            "ldm r1!, {{r6, r7, r12, lr}}\n",
            "ldm r0!, {{r8-r11, pc}}"
        )
    };
}

/// Widens one quad of both rows (r0, r1 advance by 4) into the panel (r2 advances by 16); uses r4-r7.
/// Any alignment.
macro_rules! fill1 {
    () => {
        "ldr r4, [r0], #4
        ldr r6, [r1], #4
        sxtb16 r5, r4, ror #8
        sxtb16 r4, r4
        sxtb16 r7, r6, ror #8
        sxtb16 r6, r6
        stm r2!, {{r4-r7}}"
    };
}

/// The `SXTB16`s and the `STM` of two quads whose row words are r4, r8 (row 0) and r6, r10 (row 1).
macro_rules! widen2 {
    () => {
        "sxtb16 r5, r4, ror #8
        sxtb16 r4, r4
        sxtb16 r7, r6, ror #8
        sxtb16 r6, r6
        sxtb16 r9, r8, ror #8
        sxtb16 r8, r8
        sxtb16 r11, r10, ror #8
        sxtb16 r10, r10
        stm r2!, {{r4-r11}}"
    };
}

/// Widens two quads of both rows (r0, r1 advance by 8) into the panel (r2 advances by 32); uses r4-r11.
/// Any alignment (`LDR`).
macro_rules! fill2 {
    () => {
        concat!(
            "ldr r4, [r0], #4
            ldr r6, [r1], #4
            ldr r8, [r0], #4
            ldr r10, [r1], #4\n",
            widen2!()
        )
    };
}

/// [`fill2`] for word-aligned rows (`LDM`).
macro_rules! fill2_aligned {
    () => {
        concat!("ldm r0!, {{r4, r8}}\nldm r1!, {{r6, r10}}\n", widen2!())
    };
}

/// The fill of a pair's panel with the given one- and two-quad steps (r0, r1 rows; r2 panel; r3 full quads
/// after quad 0): quad 0 and its jump word's slot, chunks of 16 quads (four per loop step) each followed by
/// a jump word's slot, then the rest (1, 2, then four per step); ends at `6f` (the tail quad).
macro_rules! fill_panel {
    ($f1:expr, $f2:expr) => {
        concat!(
            $f1,
            "\nadd r2, r2, #4
            cmp r3, #0
            beq 6f
            3:
            subs r3, r3, #{chunk}
            blt 5f
            add r12, r2, #{chunk_bytes}
            4:\n",
            $f2,
            "\n",
            $f2,
            "\ncmp r2, r12
            bne 4b
            add r2, r2, #4
            cmp r3, #0
            bne 3b
            b 6f
            5:
            add r3, r3, #{chunk}
            lsrs r3, r3, #1
            bcc 51f\n",
            $f1,
            "\n51:
            lsrs r3, r3, #1
            bcc 52f\n",
            $f2,
            "\n52:
            beq 6f
            add r12, r2, r3, lsl #6
            53:\n",
            $f2,
            "\n",
            $f2,
            "\ncmp r2, r12
            bne 53b
            b 6f"
        )
    };
}

/// Runs the routine on `frame`.
///
/// Registers in the tile loops: r0 panel, r1 block, r2-r5 accumulators, r6/r7/r12/lr weights, r8-r11
/// activations. Everything else lives in the [`Frame`] at sp.
#[inline(never)]
fn run(frame: &Frame) {
    // SAFETY: `linear_packed` checked that `x` holds `m` rows of `k >= 1` bytes, `out` `m` rows of `n`, the packed
    // words `⌈n/2⌉` blocks of `block_words(k)` and the scratch at least `dsp_panel_words(k)` words, and built the
    // frame from those slices. The routine reads the row words `[4q, 4q+4)` for `q < k/4` and, when
    // `k % 4 != 0`, `[k-4, k)` (`k >= 4`) or the bytes `[0, k)` (`k < 4`) of rows `2p`, `2p+1` (or of the lone
    // row), with `LDM` only when the frame says the rows are word-aligned; reads each block once per pair of rows,
    // writes and reads only panel words below `dsp_panel_words(k)`, writes output bytes `[0, 2·(n/2))` of its
    // rows directly and the last column of an odd `n` through its own frame, jumps only to its own code (the
    // jump words it writes), and restores sp, r4-r11 and lr; r0-r3 and r12 are declared clobbered.
    unsafe {
        asm!(
            "push {{r4-r11, lr}}",
            "sub sp, sp, #{frame_bytes}",
            // Copy the frame.
            "mov r12, sp",
            "ldm r0!, {{r1-r11}}",
            "stm r12!, {{r1-r11}}",
            "ldm r0!, {{r1-r11}}",
            "stm r12!, {{r1-r11}}",
            "ldm r0, {{r1-r6}}",
            "stm r12, {{r1-r6}}",
            // The fill (40 LDR, 41 LDM, 42 LDRSB); then the two-row tile, unless there are no pairs.
            "adr r0, 40f",
            "adr r1, 41f",
            "adr r3, 42f",
            "ldr r2, [sp, #{fill}]",
            "cmp r2, #1",
            "it eq",
            "moveq r0, r1",
            "cmp r2, #2",
            "it eq",
            "moveq r0, r3",
            "orr r0, r0, #1",
            "str r0, [sp, #{fill_entry}]",
            "ldr r0, [sp, #{pairs}]",
            "cmp r0, #0",
            "beq 14f",
            "adr r0, 8f",
            "adr r1, 9f",
            "adr r3, 70f",
            "mov r2, #40",
            "bl 30f",
            "ldrd r0, r1, [sp, #{x}]",
            // A pair of rows (r0 its first row, r1 the stride to the second): fill the panel.
            "2:",
            "add r1, r1, r0",
            "ldr r2, [sp, #{panel}]",
            "ldr r3, [sp, #{fill_rest}]",
            "ldr pc, [sp, #{fill_entry}]",
            "40:",
            fill_panel!(fill1!(), fill2!()),
            "41:",
            fill_panel!(fill1!(), fill2_aligned!()),
            // k < 4: the only quad, from the bytes of the rows (zero past k).
            "42:",
            "ldrsb r4, [r0]",
            "ldrsb r6, [r1]",
            "mov r5, #0",
            "mov r7, #0",
            "mov r8, #0",
            "mov r9, #0",
            "cmp r3, #2",
            "blt 43f",
            "ldrsb r5, [r0, #1]",
            "ldrsb r7, [r1, #1]",
            "beq 43f",
            "ldrsb r8, [r0, #2]",
            "ldrsb r9, [r1, #2]",
            "43:",
            "pkhbt r4, r4, r8, lsl #16",
            "uxth r5, r5",
            "pkhbt r6, r6, r9, lsl #16",
            "uxth r7, r7",
            "stm r2, {{r4-r7}}",
            "b 7f",
            // The quad of the last k % 4 activations: the row's last word shifted right (zero-filled).
            "6:",
            "ldrd r3, r4, [sp, #{tail_off}]",
            "cbz r4, 7f",
            "ldr r5, [r0, r3]",
            "ldr r6, [r1, r3]",
            "lsr r5, r5, r4",
            "lsr r6, r6, r4",
            "sxtb16 r8, r5",
            "sxtb16 r9, r5, ror #8",
            "sxtb16 r10, r6",
            "sxtb16 r11, r6, ror #8",
            "stm r2, {{r8-r11}}",
            // The tiles of this pair.
            "7:",
            "ldrd r0, r2, [sp, #{out}]",
            "add r2, r2, r0",
            "strd r0, r2, [sp, #{out0}]",
            "ldr r1, [sp, #{blocks}]",
            "ldr r0, [sp, #{panel}]",
            "ldr pc, [sp, #{tile_entry}]",
            // 2×2 tile: the bias quad into r2-r5 with quad 0's weights, quad 0's activations and the first jump.
            "70:",
            "ldm r1!, {{r2-r7, r12, lr}}",
            "ldm r0!, {{r8-r11, pc}}",
            "8:",
            smlad2!(),
            chunk_rest!(smlad2!()),
            "9:",
            smlad2!(),
            // Epilogue: multipliers; panel start, output pointers, end and zero point from the frame.
            "ldm r1!, {{r6, r7}}",
            "ldm sp, {{r0, r8, r9, r10, r12}}",
            "smmlar r2, r2, r6, r12",
            "smmlar r3, r3, r7, r12",
            "smmlar r4, r4, r6, r12",
            "smmlar r5, r5, r7, r12",
            "ssat r2, #8, r2",
            "ssat r3, #8, r3",
            "ssat r4, #8, r4",
            "ssat r5, #8, r5",
            "strb r3, [r8, #1]",
            "strb r2, [r8], #2",
            "strb r5, [r9, #1]",
            "strb r4, [r9], #2",
            "strd r8, r9, [sp, #{out0}]",
            "cmp r1, r10",
            "bne 70b",
            // After the tiles: the odd block if any, else the next pair.
            "10:",
            "ldr r2, [sp, #{odd}]",
            "cbnz r2, 16f",
            "13:",
            "add r12, sp, #{x}",
            "ldm r12, {{r0-r6}}", // x, x_stride, out, out_stride, pairs, x_step, out_step
            "add r0, r0, r5",
            "add r2, r2, r6",
            "subs r4, r4, #1",
            "stm r12, {{r0-r4}}",
            "bne 2b",
            "b 14f",
            "16:",
            "cmp r2, #1",
            "beq 11f",
            "b 12f",
            // After the pairs: the lone row, as a pair with itself, with the one-row tile.
            "14:",
            "ldr r0, [sp, #{lone}]",
            "cmp r0, #0",
            "beq 15f",
            "mov r0, #0",
            "str r0, [sp, #{lone}]",
            "str r0, [sp, #{x_stride}]",
            "str r0, [sp, #{out_stride}]",
            "mov r0, #1",
            "str r0, [sp, #{pairs}]",
            "adr r0, 81f",
            "adr r1, 91f",
            "adr r3, 71f",
            "mov r2, #24",
            "bl 30f",
            "ldrd r0, r1, [sp, #{x}]",
            "b 2b",
            // The odd block: its two columns go to the frame, then column 0 to the output (row 1 first: for
            // the lone row both pointers are the same and only row 0's bytes are written).
            "11:",
            "ldrd r8, r9, [sp, #{out0}]",
            "strd r8, r9, [sp, #{saved}]",
            "add r8, sp, #{dummy}",
            "add r9, r8, #2",
            "strd r8, r9, [sp, #{out0}]",
            "ldr r3, [sp, #{block_bytes}]",
            "add r3, r3, r1",
            "str r3, [sp, #{end}]",
            "mov r2, #2",
            "str r2, [sp, #{odd}]",
            "ldr r0, [sp, #{panel}]",
            "ldr pc, [sp, #{tile_loop}]",
            "12:",
            "ldrd r8, r9, [sp, #{saved}]",
            "ldrb r2, [sp, #{dummy} + 2]",
            "strb r2, [r9]",
            "ldrb r2, [sp, #{dummy}]",
            "strb r2, [r8]",
            "mov r2, #1",
            "str r2, [sp, #{odd}]",
            "ldr r2, [sp, #{end_full}]",
            "str r2, [sp, #{end}]",
            "b 13b",
            // Mode switch for the tile loop r3 whose unrolled quads start at r0 (its top), r2 bytes each, and
            // whose epilogue is r1: tile loop and tile entry (the odd block directly when there is no other
            // block), then the jump words. The last one (after the last quad) goes to the epilogue; the one after
            // quad 16·i where the SMLADs of that quad are followed by the next chunk's c = min(16, rem) quads,
            // rem = quads - 1 - 16·i: r0 + r2·(16 - c).
            "30:",
            "orr r0, r0, #1",
            "orr r1, r1, #1",
            "orr r3, r3, #1",
            "str r3, [sp, #{tile_loop}]",
            "ldr r4, [sp, #{end_full}]",
            "ldr r5, [sp, #{blocks}]",
            "adr r6, 11b",
            "orr r6, r6, #1",
            "cmp r4, r5",
            "it eq",
            "moveq r3, r6",
            "str r3, [sp, #{tile_entry}]",
            "ldr r3, [sp, #{quads}]",
            "ldr r12, [sp, #{panel}]",
            "sub r4, r3, #1", // rem for i = 0
            "add r5, r4, #{chunk} - 1",
            "lsr r5, r5, #{chunk_log2}",
            "add r5, r5, r3, lsl #2", // index of the last jump word: 4·quads + ⌈(quads-1)/16⌉
            "str r1, [r12, r5, lsl #2]",
            "add r5, r12, #16", // the jump word after quad 0
            "31:",
            "cmp r4, #0",
            "it le",
            "bxle lr",
            "cmp r4, #{chunk}",
            "ite hs",
            "movhs r6, #0",
            "rsblo r6, r4, #{chunk}",
            "mla r6, r6, r2, r0",
            "str r6, [r5]",
            "add r5, r5, #{jump_stride}", // a chunk and one jump word later
            "subs r4, r4, #{chunk}",
            "b 31b",
            // 1×2 tile for the lone row (row 1 of the panel is the same row and is not used).
            "71:",
            "ldm r1!, {{r2-r7, r12, lr}}",
            "ldm r0!, {{r8-r11, pc}}",
            "81:",
            smlad1!(),
            chunk_rest!(smlad1!()),
            "91:",
            smlad1!(),
            "ldm r1!, {{r6, r7}}",
            "ldm sp, {{r0, r8, r9, r10, r12}}",
            "smmlar r2, r2, r6, r12",
            "smmlar r3, r3, r7, r12",
            "ssat r2, #8, r2",
            "ssat r3, #8, r3",
            "strb r3, [r8, #1]",
            "strb r2, [r8], #2",
            "strd r8, r8, [sp, #{out0}]", // out1 follows out0 (the odd block copies row 1's column first)
            "cmp r1, r10",
            "bne 71b",
            "b 10b",
            "15:",
            "add sp, sp, #{frame_bytes}",
            "pop {{r4-r11, lr}}",
            frame_bytes = const FRAME_BYTES,
            chunk = const DSP_CHUNK,
            chunk_log2 = const DSP_CHUNK.trailing_zeros(),
            chunk_bytes = const 16 * DSP_CHUNK,
            jump_stride = const 4 * (4 * DSP_CHUNK + 1),
            panel = const offset_of!(Frame, panel),
            out0 = const offset_of!(Frame, out0),
            end = const offset_of!(Frame, end),
            tile_entry = const offset_of!(Frame, tile_entry),
            tile_loop = const offset_of!(Frame, tile_loop),
            fill_entry = const offset_of!(Frame, fill_entry),
            fill = const offset_of!(Frame, fill),
            x = const offset_of!(Frame, x),
            out = const offset_of!(Frame, out),
            pairs = const offset_of!(Frame, pairs),
            x_stride = const offset_of!(Frame, x_stride),
            out_stride = const offset_of!(Frame, out_stride),
            lone = const offset_of!(Frame, lone),
            fill_rest = const offset_of!(Frame, fill_rest),
            tail_off = const offset_of!(Frame, tail_off),
            blocks = const offset_of!(Frame, blocks),
            end_full = const offset_of!(Frame, end_full),
            block_bytes = const offset_of!(Frame, block_bytes),
            odd = const offset_of!(Frame, odd),
            quads = const offset_of!(Frame, quads),
            dummy = const offset_of!(Frame, dummy),
            saved = const offset_of!(Frame, saved),
            inout("r0") frame as *const Frame => _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            out("r12") _,
            out("lr") _,
        );
    }
}

/// Most quads of one part of a product in parts that [`acc_pair`] runs (its unrolled loop).
pub(super) const ACC_MAX_QUADS: usize = 16;

/// State of [`acc_pairs`]'s routine, on its stack frame.
#[repr(C)]
struct AccFrame {
    /// Sums of rows 0 and 1 of the current tile (two words each, advanced by the routine).
    cur0: *mut i32,
    cur1: *mut i32,
    /// The panel (`4·quads` words).
    panel: *mut i32,
    /// Quads of the part; replaced by the routine with the address of the first quad's `LDM`s in its loop.
    entry: usize,
    /// Bytes from the end of one block's part to the start of the next block's.
    skip: usize,
    /// Where the weight pointer is after the last tile (and its skip).
    end: *const i32,
    /// The part's first weight quad in the first block.
    weights: *const i32,
    /// Row 0 of the current pair of rows to widen into the panel (`4·quads` bytes, rows `x_stride` apart), or
    /// null when the panel is filled (one pair).
    x: *const i8,
    x_stride: usize,
    /// Sums of row 0 of the current pair (rows `acc_stride` bytes apart).
    acc: *mut i32,
    acc_stride: usize,
    /// Pairs of rows left.
    pairs: usize,
    /// Quads of the part.
    quads: usize,
}

/// Frame words.
const ACC_FRAME_WORDS: usize = 13;
const _: () = assert!(size_of::<AccFrame>() == 4 * ACC_FRAME_WORDS && (4 * ACC_FRAME_WORDS + PUSHED) % 8 == 0);

/// The rows [`acc_pairs`] runs: the first `2·p` of the sums and rows, or the lone row (computed as a pair of
/// itself: both tile rows read and write the same words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AccRows {
    /// `p` pairs of rows.
    Pairs(usize),
    /// One row.
    Lone,
}

/// The sums of the product in parts ([`super::dsp16_acc_add`]) for the blocks `0..n/2` of a Dsp16 layer and the
/// `rows` of `acc [_, n]`: plus the 2×2 `SMLAD` tile of each pair's panel (`4·quads` words) and each block's quads
/// `qa..qb`. With `x` (rows of `4·quads` bytes) it widens each pair's rows into the panel, else the panel is
/// filled and there is one pair (or the lone row). Returns the blocks done: `n/2`, or 0 when the arguments do not
/// fit (the panel and the sums then untouched).
///
/// Per tile: the four sums loaded with two `LDRD`, per quad one `LDM` per operand and eight `SMLAD` (a jump into
/// an unrolled loop of [`ACC_MAX_QUADS`] quads, whose end is the tile's), two `STRD`; 10·quads + 13 instructions.
/// The fill: per quad two `LDR`, four `SXTB16`, one `STM` (rows of any alignment).
pub(super) fn acc_pairs(
    x: Option<&[i8]>,
    panel: &mut [i32],
    p: &PackedLinear<'_>,
    (qa, qb): (usize, usize),
    rows: AccRows,
    acc: &mut [i32],
) -> usize {
    let (n, bw) = (p.n, block_words(p.k));
    let (blocks, quads) = (n / 2, qb.saturating_sub(qa));
    // Pairs, rows read and written, and the strides from a pair's first row to its second (bytes of x, of acc).
    let (pairs, count, x_stride, acc_stride) = match rows {
        AccRows::Pairs(pairs) => (pairs, 2 * pairs, 4 * quads, 4 * n),
        AccRows::Lone => (1, 1, 0, 0),
    };
    let x_ok = x.map_or(pairs == 1, |x| x.len() >= count * 4 * quads);
    let ok = p.layout == PackedLayout::Dsp16
        && (1..=ACC_MAX_QUADS).contains(&quads)
        && 4 + 4 * qb <= bw
        && panel.len() >= 4 * quads
        && blocks > 0
        && pairs > 0
        && p.words.len() >= blocks * bw
        && acc.len() >= count * n
        && x_ok;
    let Some(weights) = p.words.get(4 + 4 * qa..).map(<[i32]>::as_ptr) else { return 0 };
    if !ok {
        return 0;
    }
    let frame = AccFrame {
        cur0: core::ptr::null_mut(),
        cur1: core::ptr::null_mut(),
        panel: panel.as_mut_ptr(),
        entry: quads,
        skip: 4 * (bw - 4 * quads),
        end: weights.wrapping_add(blocks * bw),
        weights,
        x: x.map_or(core::ptr::null(), <[i8]>::as_ptr),
        x_stride,
        acc: acc.as_mut_ptr(),
        acc_stride,
        pairs,
        quads,
    };
    acc_run(&frame);
    blocks
}

/// Runs [`acc_pairs`]'s routine on `frame` (registers as in [`run`]'s tile loop: r0 panel, r1 weights, r2-r5
/// sums, r6/r7/r12/lr weights, r8-r11 activations).
#[inline(never)]
fn acc_run(frame: &AccFrame) {
    // SAFETY: `acc_pairs` checked that `quads` is 1..=16, that every block `t < n/2` holds the quads `qa..qb`
    // (words `t·bw + 4 + 4·qa ..` below `p.words.len()`), that the panel holds `4·quads` words, the sums its
    // `2·pairs` rows of `n` words (one row, both strides 0, for the lone row) and the rows to widen (if any) as
    // many rows of `4·quads` bytes, and built the frame from those slices. The routine reads those rows and writes the panel's `4·quads` words (only with
    // rows), reads the quads and panel words once per tile, reads and writes sums words `[2t, 2t+2)` of both rows
    // of a pair for tile `t`, jumps only into its own unrolled loop (at most 16 quads before its end), and
    // restores sp, r4-r11 and lr; r0-r3 and r12 are declared clobbered.
    unsafe {
        asm!(
            "push {{r4-r11, lr}}",
            "sub sp, sp, #{frame_bytes}",
            "ldm r0!, {{r1-r7}}",
            "stm sp, {{r1-r7}}",
            "ldm r0, {{r1-r6}}",
            "add r12, sp, #28",
            "stm r12, {{r1-r6}}",
            // The entry: `quads` quads of 40 bytes before the end of the unrolled loop, Thumb bit set.
            "adr r10, 3f",
            "ldr r4, [sp, #{quads}]",
            "mov r11, #40",
            "mls r10, r4, r11, r10",
            "orr r10, r10, #1",
            "str r10, [sp, #{entry}]",
            // A pair: its sums rows, then the fill when there are rows (r0, r1 rows; r2 panel; r3 quads).
            "2:",
            "ldrd r0, r1, [sp, #{acc}]",
            "add r2, r0, r1",
            "strd r0, r2, [sp]",
            "add r0, r2, r1",
            "str r0, [sp, #{acc}]",
            "ldrd r0, r1, [sp, #{x}]",
            "cmp r0, #0",
            "beq 5f",
            "add r2, r0, r1, lsl #1",
            "str r2, [sp, #{x}]",
            "add r1, r1, r0",
            "ldr r2, [sp, #{panel}]",
            "ldr r3, [sp, #{quads}]",
            "4:",
            "ldr r4, [r0], #4",
            "ldr r6, [r1], #4",
            "sxtb16 r5, r4, ror #8",
            "sxtb16 r4, r4",
            "sxtb16 r7, r6, ror #8",
            "sxtb16 r6, r6",
            "stm r2!, {{r4-r7}}",
            "subs r3, r3, #1",
            "bne 4b",
            "5:",
            "ldr r1, [sp, #{weights}]",
            // A tile: the sums, then the quads.
            "1:",
            "ldm sp, {{r0, r8, r9, r10}}",
            "ldrd r2, r3, [r0]",
            "ldrd r4, r5, [r8]",
            "mov r0, r9",
            "bx r10",
            ".rept {max_quads}",
            "ldm r1!, {{r6, r7, r12, lr}}",
            "ldm r0!, {{r8-r11}}",
            smlad2!(),
            ".endr",
            "3:",
            "ldm sp, {{r0, r8}}",
            "strd r2, r3, [r0], #8",
            "strd r4, r5, [r8], #8",
            "strd r0, r8, [sp]",
            "ldrd r6, r7, [sp, #{skip}]",
            "add r1, r1, r6",
            "cmp r1, r7",
            "bne 1b",
            "ldr r0, [sp, #{pairs}]",
            "subs r0, r0, #1",
            "str r0, [sp, #{pairs}]",
            "bne 2b",
            "add sp, sp, #{frame_bytes}",
            "pop {{r4-r11, lr}}",
            frame_bytes = const 4 * ACC_FRAME_WORDS,
            max_quads = const ACC_MAX_QUADS,
            entry = const offset_of!(AccFrame, entry),
            skip = const offset_of!(AccFrame, skip),
            weights = const offset_of!(AccFrame, weights),
            panel = const offset_of!(AccFrame, panel),
            x = const offset_of!(AccFrame, x),
            acc = const offset_of!(AccFrame, acc),
            pairs = const offset_of!(AccFrame, pairs),
            quads = const offset_of!(AccFrame, quads),
            inout("r0") frame as *const AccFrame => _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            out("r12") _,
            out("lr") _,
        );
    }
}
