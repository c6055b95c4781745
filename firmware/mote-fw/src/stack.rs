//! Stack high-water measurement by painting: fill the unused stack with a pattern at reset, and later find the
//! lowest word that no longer holds it.
//!
//! The stack is the `STACK` region of the generated `memory.x` (`_mote_stack_bottom` .. `_stack_start`, growing
//! down). The measurement is exact as long as the firmware never writes the pattern value itself at the deepest
//! point, and it counts the frames live at painting time (the entry's) as used.

use core::ptr;

/// The paint pattern; an odd, unlikely value (not a valid pointer, not a small integer).
const PAINT: u32 = 0xC5AC_CE55;

extern "C" {
    /// Lowest address of the stack region (linker script).
    static _mote_stack_bottom: u32;
    /// One past the highest address of the stack region: the initial stack pointer (linker script).
    static _stack_start: u32;
}

/// Stack region bounds `(bottom, top)` as addresses.
fn bounds() -> (usize, usize) {
    // Only the symbols' addresses are taken; the memory is reached through integer addresses below, as for
    // memory-mapped registers, because Rust owns no object there.
    let bottom = ptr::addr_of!(_mote_stack_bottom) as usize;
    let top = ptr::addr_of!(_stack_start) as usize;
    (bottom, top)
}

/// Stack use measured by [`usage`].
#[derive(Clone, Copy, Debug)]
pub struct StackUsage {
    /// Bytes between the top of the stack and the deepest word written since [`paint`].
    pub used: usize,
    /// Size of the stack region in bytes.
    pub size: usize,
}

/// Fills the stack below the current frame with the pattern. Called once by the entry, before main.
#[inline(never)]
pub fn paint() {
    let (bottom, _) = bounds();
    // Nothing below this function's frame is live (it calls nothing while it paints; no interrupt is enabled).
    // The guard keeps the paint off that frame: LLVM may read `sp` before pushing the frame (shrink-wrapping),
    // which we saw on Cortex-M. The unpainted guard words count as used, an overestimate of at most GUARD.
    const GUARD: usize = 128;
    let limit = crate::arch::stack_pointer().saturating_sub(GUARD) & !3;
    let mut p = bottom;
    while p < limit {
        // SAFETY: `p` is word-aligned inside the stack region, below the stack pointer (unused memory).
        unsafe { ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Scans the painted stack from the bottom for the deepest word that was overwritten.
#[inline(never)]
pub fn usage() -> StackUsage {
    let (bottom, top) = bounds();
    let mut p = bottom;
    // SAFETY: word-aligned reads inside the stack region.
    while p < top && unsafe { ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    StackUsage { used: top - p, size: top - bottom }
}
