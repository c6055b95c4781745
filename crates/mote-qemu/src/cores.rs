//! The MCU cores mote targets and the QEMU boards that emulate them.

use std::fmt;
use std::str::FromStr;

/// An address range of the emulated board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First address.
    pub origin: u64,
    /// Size in bytes.
    pub size: u64,
}

impl MemoryRegion {
    /// Whether `addr` lies in `[origin, origin + size]` (the end is included: a stack top is one past the RAM).
    pub fn contains_or_ends_at(&self, addr: u64) -> bool {
        addr >= self.origin && addr - self.origin <= self.size
    }
}

/// A CPU core with its Rust target, code-generation flags and emulated board.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Core {
    /// Arm Cortex-M3 (ARMv7-M) on QEMU's mps2-an385.
    CortexM3,
    /// Arm Cortex-M4F (ARMv7E-M, DSP) on mps2-an386.
    CortexM4,
    /// Arm Cortex-M7 (ARMv7E-M, DSP) on mps2-an500.
    CortexM7,
    /// Arm Cortex-M33 (ARMv8-M Mainline, DSP) on mps2-an505, running Secure.
    CortexM33,
    /// Arm Cortex-M55 (ARMv8.1-M, Helium/MVE) on mps3-an547, running Secure.
    CortexM55,
    /// RV32IMC on QEMU's riscv32 `virt` board, machine mode, no firmware (`-bios none`).
    Rv32imc,
}

const MIB: u64 = 1024 * 1024;

impl Core {
    /// Every core, in declaration order.
    pub const ALL: [Core; 6] =
        [Core::CortexM3, Core::CortexM4, Core::CortexM7, Core::CortexM33, Core::CortexM55, Core::Rv32imc];

    /// Short name (`cortex-m4`, `rv32imc`); also `MOTE_CORE` for mote-fw's build script and [`FromStr`] input.
    pub fn name(self) -> &'static str {
        match self {
            Core::CortexM3 => "cortex-m3",
            Core::CortexM4 => "cortex-m4",
            Core::CortexM7 => "cortex-m7",
            Core::CortexM33 => "cortex-m33",
            Core::CortexM55 => "cortex-m55",
            Core::Rv32imc => "rv32imc",
        }
    }

    /// The Rust target triple.
    pub fn target_triple(self) -> &'static str {
        match self {
            Core::CortexM3 => "thumbv7m-none-eabi",
            Core::CortexM4 | Core::CortexM7 => "thumbv7em-none-eabihf",
            Core::CortexM33 | Core::CortexM55 => "thumbv8m.main-none-eabihf",
            Core::Rv32imc => "riscv32imc-unknown-none-elf",
        }
    }

    /// rustc flags for a firmware of this core: the CPU to tune and select instructions for (`cortex-m55`
    /// enables Helium), and the runtime's linker script (`link.x` of cortex-m-rt / riscv-rt).
    pub fn rustflags(self) -> &'static [&'static str] {
        match self {
            Core::CortexM3 => &["-C", "target-cpu=cortex-m3", "-C", "link-arg=-Tlink.x"],
            Core::CortexM4 => &["-C", "target-cpu=cortex-m4", "-C", "link-arg=-Tlink.x"],
            Core::CortexM7 => &["-C", "target-cpu=cortex-m7", "-C", "link-arg=-Tlink.x"],
            Core::CortexM33 => &["-C", "target-cpu=cortex-m33", "-C", "link-arg=-Tlink.x"],
            Core::CortexM55 => &["-C", "target-cpu=cortex-m55", "-C", "link-arg=-Tlink.x"],
            Core::Rv32imc => &["-C", "link-arg=-Tlink.x"],
        }
    }

    /// The QEMU system emulator executable.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Core::Rv32imc => "qemu-system-riscv32",
            _ => "qemu-system-arm",
        }
    }

    /// The Debian package that ships [`Core::qemu_binary`].
    pub fn qemu_package(self) -> &'static str {
        match self {
            Core::Rv32imc => "qemu-system-misc",
            _ => "qemu-system-arm",
        }
    }

    /// The QEMU board (`-machine`).
    pub fn qemu_machine(self) -> &'static str {
        match self {
            Core::CortexM3 => "mps2-an385",
            Core::CortexM4 => "mps2-an386",
            Core::CortexM7 => "mps2-an500",
            Core::CortexM33 => "mps2-an505",
            Core::CortexM55 => "mps3-an547",
            Core::Rv32imc => "virt",
        }
    }

    /// The QEMU CPU model (`-cpu`).
    pub fn qemu_cpu(self) -> &'static str {
        match self {
            Core::Rv32imc => "rv32",
            other => other.name(),
        }
    }

    /// Board and CPU arguments for QEMU (`-machine`, `-cpu`, and `-bios none` on RISC-V so that QEMU jumps
    /// straight to the ELF at 0x8000_0000 instead of loading OpenSBI).
    pub fn qemu_args(self) -> Vec<&'static str> {
        let mut args = vec!["-machine", self.qemu_machine(), "-cpu", self.qemu_cpu()];
        if self == Core::Rv32imc {
            args.extend(["-bios", "none"]);
        }
        args
    }

    /// The register holding the first function argument, by QEMU's (gdb) register name: the mark id.
    pub fn arg_register(self) -> &'static str {
        match self {
            Core::Rv32imc => "a0",
            _ => "r0",
        }
    }

    /// Whether code addresses carry the Thumb bit in ELF symbols (cleared to get the instruction address).
    pub fn is_thumb(self) -> bool {
        self != Core::Rv32imc
    }

    /// Where the firmware's code and read-only data go on the emulated board (mote-fw's generated `memory.x`;
    /// only the code where the board has a [`Core::rodata`] region).
    ///
    /// The boards have more memory than real parts; a real part's limits belong to the planner.
    pub fn flash(self) -> MemoryRegion {
        match self {
            Core::CortexM3 | Core::CortexM4 | Core::CortexM7 => MemoryRegion { origin: 0, size: 4 * MIB },
            Core::CortexM33 => MemoryRegion { origin: 0x1000_0000, size: 4 * MIB },
            Core::CortexM55 => MemoryRegion { origin: 0x1000_0000, size: 512 * 1024 },
            // `virt` has no flash: the image sits at the start of DRAM, where `-bios none` jumps.
            Core::Rv32imc => MemoryRegion { origin: 0x8000_0000, size: 4 * MIB },
        }
    }

    /// The emulated board's memory for read-only data besides [`Core::flash`], which then holds only code (mote-fw
    /// links `.rodata` there): the Cortex-M55 board's 2 MiB SRAM, loaded with the image like the ITCM.
    pub fn rodata(self) -> Option<MemoryRegion> {
        (self == Core::CortexM55).then_some(MemoryRegion { origin: 0x1100_0000, size: 2 * MIB })
    }

    /// Bytes of code and read-only data the emulated board holds: [`Core::flash`] and [`Core::rodata`].
    pub fn flash_capacity(self) -> u64 {
        self.flash().size + self.rodata().map_or(0, |r| r.size)
    }

    /// The firmware's RAM on the emulated board (data, bss and, at its top, the stack).
    pub fn ram(self) -> MemoryRegion {
        match self {
            Core::CortexM3 | Core::CortexM4 | Core::CortexM7 => MemoryRegion { origin: 0x2000_0000, size: 4 * MIB },
            Core::CortexM33 => MemoryRegion { origin: 0x3800_0000, size: 4 * MIB },
            Core::CortexM55 => MemoryRegion { origin: 0x3000_0000, size: 512 * 1024 },
            Core::Rv32imc => MemoryRegion { origin: 0x8040_0000, size: 4 * MIB },
        }
    }
}

impl fmt::Display for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Core {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Core::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
            let names: Vec<_> = Core::ALL.iter().map(|c| c.name()).collect();
            format!("unknown core `{s}` (expected one of {})", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Core::ALL {
            assert_eq!(c.name().parse::<Core>(), Ok(c));
        }
        assert!("cortex-m0".parse::<Core>().unwrap_err().contains("rv32imc"));
    }

    #[test]
    fn riscv_runs_without_bios() {
        assert_eq!(Core::Rv32imc.qemu_args(), ["-machine", "virt", "-cpu", "rv32", "-bios", "none"]);
        assert_eq!(Core::CortexM55.qemu_args(), ["-machine", "mps3-an547", "-cpu", "cortex-m55"]);
    }
}
