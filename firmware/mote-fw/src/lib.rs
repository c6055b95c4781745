//! Runtime shared by mote firmwares on the emulated MCUs (Cortex-M via cortex-m-rt, RV32 via riscv-rt).
//!
//! A firmware is a `#![no_std] #![no_main]` binary that depends on this crate and names its main function with
//! [`main!`]. This crate owns the reset entry, which
//! 1. paints the stack region with a pattern ([`stack::paint`]),
//! 2. calls the firmware's main (`fn() -> i32`),
//! 3. prints `mote: stack used=<bytes> size=<bytes>` (the stack high-water mark),
//! 4. exits QEMU through semihosting with main's return value as the process exit code.
//!
//! Panics print `mote: panic: ...` and exit with [`EXIT_PANIC`]; CPU faults print `mote: fault ...` and exit
//! with [`EXIT_FAULT`], so a broken firmware never hangs the emulator.
//!
//! Instruction counting: [`mark`] calls the `mote_mark` symbol, whose address `mote-qemu` reads from the ELF;
//! its QEMU plugin records the running instruction count and the mark id (first argument register) at each
//! call. The code between two marks is a region named by the first mark's id; [`MARK_END`] closes a region
//! without opening one (so printing between regions is not counted).
//!
//! Large buffers (a model's arena) belong in statics, not on the stack: [`singleton!`] hands out one
//! `&'static mut` to a value in `.bss`.
#![no_std]
#![deny(missing_docs)]

#[cfg_attr(target_arch = "arm", path = "arm.rs")]
#[cfg_attr(target_arch = "riscv32", path = "riscv.rs")]
mod arch;
mod print;
pub mod singleton;
pub mod stack;

pub use print::{_print, Hex, HexI8};

/// Exit code after a panic (as a Rust `std` program that panics).
pub const EXIT_PANIC: i32 = 101;
/// Exit code after a CPU fault (HardFault on Cortex-M, an exception trap on RISC-V).
pub const EXIT_FAULT: i32 = 102;
/// Mark id that ends the current region without starting a new one.
pub const MARK_END: u32 = u32::MAX;

/// Defines the firmware's main function: `mote_fw::main!(run);` with `fn run() -> i32` (the exit code).
#[macro_export]
macro_rules! main {
    ($f:path) => {
        /// Called by the mote-fw entry after stack painting; returns the exit code.
        #[no_mangle]
        pub extern "C" fn mote_main() -> i32 {
            let f: fn() -> i32 = $f;
            f()
        }
    };
}

/// Prints a line on the host's stdout through semihosting (`format!` syntax).
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::_print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Marks an instruction-count point: the region `id` starts here and the previous one ends.
#[inline(always)]
pub fn mark(id: u32) {
    mote_mark(id);
}

/// The marker the QEMU plugin watches (the id is in the first argument register, r0 / a0, at its entry).
///
/// Never inlined, so every mark is a call to this one address. The `asm!` is its whole body and does three
/// things: it uses `id` (else LTO drops the argument set-up at the call sites, the function's result being
/// unused), its text makes the body unlike any other function (rustc merges functions with identical bodies
/// into one address), and without `nomem` it makes the call opaque, so LLVM cannot move loads and stores of the
/// measured work across a mark.
#[no_mangle]
#[inline(never)]
pub extern "C" fn mote_mark(id: u32) {
    // SAFETY: emits no instruction; it only pins `id` and acts as a compiler barrier.
    unsafe { core::arch::asm!("/* mote_mark {0} */", in(reg) id, options(nostack, preserves_flags)) };
}

/// Exits the emulator with `code` as the host process exit status (semihosting `SYS_EXIT_EXTENDED`).
pub fn exit(code: i32) -> ! {
    arch::exit(code)
}

/// The reset path after the runtime's own init: paint, run main, report the stack, exit.
fn start() -> ! {
    extern "C" {
        fn mote_main() -> i32;
    }
    stack::paint();
    // SAFETY: `mote_main` is defined by `main!` in the firmware as `extern "C" fn() -> i32`.
    let code = unsafe { mote_main() };
    let usage = stack::usage();
    println!("mote: stack used={} size={}", usage.used, usage.size);
    exit(code)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("mote: panic: {}", info);
    exit(EXIT_PANIC)
}
