//! RV32: riscv-rt entry and exception handler, semihosting via riscv-semihosting.

use riscv_rt::entry;
// Links riscv's single-hart critical-section implementation, which the semihosting output uses.
use riscv as _;

#[entry]
fn entry() -> ! {
    crate::start()
}

/// Replaces riscv-rt's default (`abort`, an endless loop) so a trap ends the emulation with a message.
#[export_name = "ExceptionHandler"]
fn exception_handler(_frame: &riscv_rt::TrapFrame) -> ! {
    let cause = riscv::register::mcause::read().bits();
    let pc = riscv::register::mepc::read();
    crate::println!("mote: fault: exception mcause={cause:#x} at pc={pc:#010x}");
    crate::exit(crate::EXIT_FAULT)
}

/// Writes `s` to the host's stdout.
pub fn write_str(s: &str) {
    riscv_semihosting::export::hstdout_str(s);
}

/// Current stack pointer.
#[inline(always)]
pub fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads a register, touches no memory.
    unsafe { core::arch::asm!("mv {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

pub fn exit(code: i32) -> ! {
    // SYS_EXIT_EXTENDED (0x20) with ADP_Stopped_ApplicationExit: QEMU exits with `code` (SYS_EXIT only has 0/1).
    let block = [0x2_0026usize, code as usize];
    loop {
        // SAFETY: a valid semihosting call with a two-word parameter block; it does not return under QEMU.
        unsafe { riscv_semihosting::syscall(0x20, &block) };
    }
}
