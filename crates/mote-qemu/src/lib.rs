//! Emulated microcontrollers for mote: build a firmware crate for a [`Core`], run its ELF in QEMU with a
//! timeout, capture what it prints over semihosting, and count the instructions it executes per region.
//!
//! ```no_run
//! use std::time::Duration;
//! use mote_qemu::{build_firmware, run_elf, Core, RunOptions};
//!
//! let elf = build_firmware("firmware/kernel-smoke".as_ref(), Core::CortexM4, "target/firmware".as_ref())?;
//! let out = run_elf(Core::CortexM4, &elf, &RunOptions { count_instructions: true, ..RunOptions::default() })?;
//! println!("exit {} printed {:?}", out.exit_code, out.stdout);
//! for r in out.instructions.as_ref().map(|c| c.regions()).unwrap_or_default() {
//!     println!("region {}: {} instructions", r.id, r.instructions);
//! }
//! # Ok::<(), mote_qemu::Error>(())
//! ```
//!
//! # Firmware contract
//! Firmwares link the `firmware/mote-fw` runtime, which provides the reset entry, semihosting output and
//! exit (QEMU's exit status is the firmware's exit code), stack painting (it prints
//! `mote: stack used=N size=M`, see [`RunOutput::stack`]) and the marker function `mote_mark(id: u32)`.
//!
//! # Instruction counting
//! QEMU models no pipeline, so the counts are executed instructions, not cycles. A TCG plugin
//! (`plugin/mote_count.c`) adds 1 to a per-vCPU counter on every executed guest instruction (an inline op, so
//! exact even for blocks left early) and, whenever the instruction at `mote_mark`'s address runs, records the
//! running count and the mark id read from the first argument register (r0 / a0). The runner reads the address
//! from the ELF symbol table. Region `id` is the code between `mote_mark(id)` and the next mark;
//! [`MARK_END`] closes a region without opening one. Each region includes the marker's own few instructions
//! (argument set-up, call and marker body: 5 on Cortex-M, 4 on RV32; an empty region measures it).
//!
//! # The plugin and its header
//! The plugin is C, built on first use with the system C compiler against glib's headers (`pkg-config
//! glib-2.0`) into a cache directory ([`RunOptions::plugin_dir`]; named by a hash of its source, so a changed
//! source rebuilds). Its source and QEMU 10.0's `qemu-plugin.h` (plugin API v4) are vendored in `plugin/` and
//! compiled into this crate with `include_str!`, so building it needs no QEMU source tree and no network: Debian
//! ships the header in no binary package, and fetching QEMU's 39 MB source package at every CI run was
//! judged less reliable. The header is GPL-2.0-or-later, which permits redistribution with its license text
//! (`plugin/COPYING.GPL-2.0`); the plugin, built against it and loaded into QEMU, is GPL-2.0-or-later too, while
//! the Rust code of this crate stays Apache-2.0. It loads in QEMU 10 (Debian bookworm-backports); an older
//! QEMU refuses it with [`Error::Qemu`].
#![deny(missing_docs)]

mod build;
mod cores;
mod elf;
mod error;
mod plugin;
mod run;

pub use build::{build_firmware, check_target};
pub use cores::{Core, MemoryRegion};
pub use elf::{elf_sizes, marker_address, section_address, symbol_address, ElfSizes};
pub use error::{Error, Result};
pub use plugin::build_plugin;
pub use run::{
    check_qemu, check_tools, run_elf, tools_or_skip, InstructionCounts, Mark, Region, RunOptions, RunOutput, StackUsage,
};

/// Mark id that closes the current region without opening one (`mote_fw::MARK_END`).
pub const MARK_END: u32 = u32::MAX;
