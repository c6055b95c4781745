//! Cortex-M: cortex-m-rt entry and HardFault, semihosting via cortex-m-semihosting.

use cortex_m_rt::{entry, exception, ExceptionFrame};
// Links cortex-m's single-core critical-section implementation, which the semihosting output uses.
use cortex_m as _;

#[entry]
fn entry() -> ! {
    crate::start()
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    crate::println!("mote: fault: HardFault at pc={:#010x}", ef.pc());
    crate::exit(crate::EXIT_FAULT)
}

/// Writes `s` to the host's stdout.
pub fn write_str(s: &str) {
    cortex_m_semihosting::export::hstdout_str(s);
}

/// Current stack pointer.
#[inline(always)]
pub fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads a register, touches no memory.
    unsafe { core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

pub fn exit(code: i32) -> ! {
    // SYS_EXIT_EXTENDED (0x20) with ADP_Stopped_ApplicationExit: QEMU exits with `code` (SYS_EXIT only has 0/1).
    let block = [0x2_0026usize, code as usize];
    loop {
        // SAFETY: a valid semihosting call with a two-word parameter block; it does not return under QEMU.
        unsafe { cortex_m_semihosting::syscall(0x20, &block) };
    }
}
