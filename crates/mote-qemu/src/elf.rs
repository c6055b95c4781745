//! Reading firmware ELF files: section sizes and symbol addresses.

use std::path::Path;

use object::elf::{SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE};
use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SectionKind};

use crate::{Core, Error, Result};

/// Memory a firmware image occupies, by kind of section (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElfSizes {
    /// Executable code.
    pub text: u64,
    /// Read-only data, including the Cortex-M vector table.
    pub rodata: u64,
    /// Initialized writable data (stored in flash, copied to RAM at reset).
    pub data: u64,
    /// Zero-initialized and uninitialized RAM.
    pub bss: u64,
}

impl ElfSizes {
    /// Flash bytes: `text + rodata + data` (the initial values of `.data` live in flash).
    pub fn flash(&self) -> u64 {
        self.text + self.rodata + self.data
    }

    /// Static RAM bytes: `data + bss` (the stack comes on top).
    pub fn ram(&self) -> u64 {
        self.data + self.bss
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<object::File<'a>> {
    object::File::parse(bytes).map_err(|e| Error::Elf { path: path.to_owned(), message: e.to_string() })
}

/// Sizes of the allocated sections of an ELF, grouped as `size`'s text/rodata/data/bss.
///
/// riscv-rt's `.stack` and `.heap` are reservations, not data, and are left out.
pub fn elf_sizes(path: &Path) -> Result<ElfSizes> {
    let bytes = read(path)?;
    let file = parse(path, &bytes)?;
    let mut sizes = ElfSizes::default();
    for section in file.sections() {
        let SectionFlags::Elf { sh_flags } = section.flags() else {
            return Err(Error::Elf { path: path.to_owned(), message: "not an ELF file".into() });
        };
        let name = section.name().unwrap_or("");
        if sh_flags & u64::from(SHF_ALLOC) == 0 || matches!(name, ".stack" | ".heap") {
            continue;
        }
        // object classifies SHT_NOBITS sections as uninitialized data.
        let nobits = matches!(section.kind(), SectionKind::UninitializedData | SectionKind::UninitializedTls);
        let size = section.size();
        if sh_flags & u64::from(SHF_EXECINSTR) != 0 {
            sizes.text += size;
        } else if sh_flags & u64::from(SHF_WRITE) == 0 {
            sizes.rodata += size;
        } else if nobits {
            sizes.bss += size;
        } else {
            sizes.data += size;
        }
    }
    Ok(sizes)
}

/// Value of the symbol `name` (for Thumb code including the Thumb bit), if the ELF defines it.
pub fn symbol_address(path: &Path, name: &str) -> Result<Option<u64>> {
    let bytes = read(path)?;
    let file = parse(path, &bytes)?;
    Ok(file.symbols().find(|s| s.name() == Ok(name) && !s.is_undefined()).map(|s| s.address()))
}

/// Address of the section `name`, if the ELF has it.
pub fn section_address(path: &Path, name: &str) -> Result<Option<u64>> {
    let bytes = read(path)?;
    let file = parse(path, &bytes)?;
    Ok(file.section_by_name(name).map(|s| s.address()))
}

/// Address of the first instruction of `mote_mark` (Thumb bit cleared), which the counting plugin watches.
pub fn marker_address(path: &Path, core: Core) -> Result<u64> {
    let addr = symbol_address(path, "mote_mark")?.ok_or_else(|| Error::Elf {
        path: path.to_owned(),
        message: "no `mote_mark` symbol: instruction counting needs a firmware linked with mote-fw".into(),
    })?;
    Ok(if core.is_thumb() { addr & !1 } else { addr })
}
