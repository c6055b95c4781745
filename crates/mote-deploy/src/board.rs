//! Board profiles: one TOML file per board (name, core, SRAM and flash bytes, clock), shipped in `boards/` and
//! extensible by users.
//!
//! ```toml
//! name = "stm32l4r5"
//! core = "cortex-m4"        # cortex-m3 | cortex-m4 | cortex-m7 | cortex-m33 | cortex-m55 | rv32imc
//! sram_bytes = 655_360      # the SRAM one arena, the statics and the stack must share
//! flash_bytes = 2_097_152
//! clock_hz = 120_000_000
//! notes = "optional free text"
//! ```
//!
//! [`Board::resolve`] takes a path (anything with a path separator or ending in `.toml`) or a name. A name is
//! looked up as `NAME.toml` in each directory of `$MOTE_BOARDS` (separated like `PATH`), then in the checkout's
//! `boards/` directory, then among the boards compiled into mote (the shipped `boards/*.toml`, so an installed
//! binary knows them without the checkout).

use std::fmt;
use std::path::{Path, PathBuf};

use mote_codegen::PackedLayout;
use mote_qemu::Core;
use serde::Deserialize;

use crate::{DeployError, Result};

/// The environment variable naming extra board directories.
pub const BOARDS_ENV: &str = "MOTE_BOARDS";

/// The shipped board files, compiled in: `(file name, contents)`.
const BUILTIN: [(&str, &str); 6] = [
    ("corstone-300.toml", include_str!("../../../boards/corstone-300.toml")),
    ("esp32c3.toml", include_str!("../../../boards/esp32c3.toml")),
    ("nrf52840.toml", include_str!("../../../boards/nrf52840.toml")),
    ("stm32f746.toml", include_str!("../../../boards/stm32f746.toml")),
    ("stm32h743.toml", include_str!("../../../boards/stm32h743.toml")),
    ("stm32l4r5.toml", include_str!("../../../boards/stm32l4r5.toml")),
];

/// A microcontroller board: the memory and clock a deployed model must live with, and the core it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Board {
    /// Short name, e.g. `stm32l4r5`.
    pub name: String,
    /// The CPU core, which picks the Rust target and the QEMU board that emulates it.
    pub core: Core,
    /// SRAM bytes available to the firmware (arena, other statics and the stack).
    pub sram_bytes: u64,
    /// Flash bytes available to the firmware (code, weights, constant data).
    pub flash_bytes: u64,
    /// Core clock in Hz, for latency estimates.
    pub clock_hz: u64,
    /// Free text from the file.
    pub notes: Option<String>,
    /// Where the profile came from.
    pub source: BoardSource,
}

impl Board {
    /// The weight layout of this core's packed linear kernel: `Mve8` (Helium `VMLADAVA`) on Cortex-M55, `Dsp16`
    /// (`SMLAD`) on the other Arm cores with the DSP extension, `Rv32` (int8 byte lanes for `MUL` + `ADD`) on
    /// RV32IMC; `None` (plain weights, portable kernels) on Cortex-M3.
    pub fn packed_layout(&self) -> Option<PackedLayout> {
        match self.core {
            Core::CortexM55 => Some(PackedLayout::Mve8),
            Core::CortexM4 | Core::CortexM7 | Core::CortexM33 => Some(PackedLayout::Dsp16),
            Core::Rv32imc => Some(PackedLayout::Rv32),
            Core::CortexM3 => None,
        }
    }
}

/// Where a [`Board`] profile was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoardSource {
    /// Compiled into mote from the shipped `boards/` directory (the file name).
    Builtin(&'static str),
    /// A TOML file on disk.
    File(PathBuf),
}

impl fmt::Display for BoardSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoardSource::Builtin(file) => write!(f, "boards/{file} (built in)"),
            BoardSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The file format, checked field by field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardFile {
    name: String,
    core: String,
    sram_bytes: u64,
    flash_bytes: u64,
    clock_hz: u64,
    notes: Option<String>,
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl Board {
    /// Parses a board file's `text`; `source` names it in error messages.
    pub fn parse(text: &str, source: BoardSource) -> Result<Board> {
        let bad = |message: String| DeployError::BoardFile { file: source.to_string(), message };
        let file: BoardFile = toml::from_str(text).map_err(|e| {
            let mut message = e.message().trim().to_string();
            let Some(span) = e.span() else { return bad(message) };
            let (line, col) = line_col(text, span.start);
            // Name the field when the error sits on a `key = value` line and does not say which key.
            let key = text.lines().nth(line - 1).and_then(|l| l.split_once('=')).map(|(k, _)| k.trim());
            if let Some(key) = key.filter(|k| !k.is_empty() && !k.contains(' ') && !message.contains(k)) {
                message = format!("field `{key}`: {message}");
            }
            bad(format!("line {line}, column {col}: {message}"))
        })?;
        if file.name.is_empty() || !file.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(bad(format!(
                "field `name`: `{}` is not a board name (letters, digits, `-`, `_`, `.`)",
                file.name
            )));
        }
        let core = file.core.parse::<Core>().map_err(|e| bad(format!("field `core`: {e}")))?;
        for (field, value) in
            [("sram_bytes", file.sram_bytes), ("flash_bytes", file.flash_bytes), ("clock_hz", file.clock_hz)]
        {
            if value == 0 {
                return Err(bad(format!("field `{field}` must be positive")));
            }
        }
        Ok(Board {
            name: file.name,
            core,
            sram_bytes: file.sram_bytes,
            flash_bytes: file.flash_bytes,
            clock_hz: file.clock_hz,
            notes: file.notes.filter(|n| !n.trim().is_empty()),
            source,
        })
    }

    /// Reads and parses a board file.
    pub fn from_file(path: &Path) -> Result<Board> {
        let text = std::fs::read_to_string(path).map_err(|e| DeployError::BoardFile {
            file: path.display().to_string(),
            message: format!("cannot read it: {e}"),
        })?;
        Board::parse(&text, BoardSource::File(path.to_owned()))
    }

    /// The boards shipped with mote (compiled in).
    pub fn builtin() -> Vec<Board> {
        BUILTIN
            .iter()
            .map(|(file, text)| Board::parse(text, BoardSource::Builtin(file)).expect("shipped board files parse"))
            .collect()
    }

    /// A board by path (`--board path/to/x.toml`) or by name (see the module docs for the search order).
    /// An unknown name is an error that lists every known board.
    pub fn resolve(spec: &str) -> Result<Board> {
        let looks_like_path = spec.contains(std::path::MAIN_SEPARATOR) || spec.contains('/') || spec.ends_with(".toml");
        if looks_like_path {
            return Board::from_file(Path::new(spec));
        }
        for dir in search_dirs() {
            let path = dir.join(format!("{spec}.toml"));
            if path.is_file() {
                return Board::from_file(&path);
            }
        }
        if let Some(b) = Board::builtin().into_iter().find(|b| b.name == spec) {
            return Ok(b);
        }
        Err(DeployError::UnknownBoard { name: spec.to_string(), known: known_board_names() })
    }

    /// The emulated board's name for this board's core (QEMU `-machine`).
    pub fn qemu_machine(&self) -> &'static str {
        self.core.qemu_machine()
    }
}

/// The directories searched for `NAME.toml`: `$MOTE_BOARDS`, then the checkout's `boards/` if it exists.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os(BOARDS_ENV)
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../boards");
    if checkout.is_dir() {
        dirs.push(checkout);
    }
    dirs
}

/// Names of every board [`Board::resolve`] can find by name, sorted and without duplicates.
pub fn known_board_names() -> Vec<String> {
    let mut names: Vec<String> = Board::builtin().into_iter().map(|b| b.name).collect();
    for dir in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                    names.push(stem.to_string());
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_boards() {
        let boards = Board::builtin();
        let find = |n: &str| boards.iter().find(|b| b.name == n).unwrap_or_else(|| panic!("{n}"));
        for (name, core, sram, flash, clock) in [
            ("stm32l4r5", Core::CortexM4, 640 << 10, 2 << 20, 120_000_000),
            ("stm32f746", Core::CortexM7, 320 << 10, 1 << 20, 216_000_000),
            ("stm32h743", Core::CortexM7, 512 << 10, 2 << 20, 480_000_000),
            ("nrf52840", Core::CortexM4, 256 << 10, 1 << 20, 64_000_000),
            ("corstone-300", Core::CortexM55, 512 << 10, 2560 << 10, 32_000_000),
            ("esp32c3", Core::Rv32imc, 400 << 10, 4 << 20, 160_000_000),
        ] {
            let b = find(name);
            assert_eq!((b.core, b.sram_bytes, b.flash_bytes, b.clock_hz), (core, sram, flash, clock), "{name}");
        }
        for b in &boards {
            // Each file is named after its board, and fits the emulated board's memory.
            let BoardSource::Builtin(file) = b.source else { panic!() };
            assert_eq!(file, format!("{}.toml", b.name));
            assert!(b.sram_bytes <= b.core.ram().size && b.flash_bytes <= b.core.flash_capacity(), "{}", b.name);
        }
    }

    #[test]
    fn packed_layouts() {
        let layout = |name: &str| Board::resolve(name).unwrap().packed_layout();
        assert_eq!(layout("stm32l4r5"), Some(PackedLayout::Dsp16));
        assert_eq!(layout("corstone-300"), Some(PackedLayout::Mve8));
        assert_eq!(layout("esp32c3"), Some(PackedLayout::Rv32));
    }

    #[test]
    fn resolve_by_name_and_unknown() {
        assert_eq!(Board::resolve("esp32c3").unwrap().core, Core::Rv32imc);
        let err = Board::resolve("stm32f999").unwrap_err().to_string();
        assert!(err.contains("unknown board `stm32f999`"), "{err}");
        for n in ["corstone-300", "esp32c3", "nrf52840", "stm32f746", "stm32h743", "stm32l4r5"] {
            assert!(err.contains(n), "{err}");
        }
    }

    #[test]
    fn parse_errors_name_the_file_and_field() {
        let src = || BoardSource::File("my.toml".into());
        let ok = "name = \"x\"\ncore = \"cortex-m4\"\nsram_bytes = 1024\nflash_bytes = 2048\nclock_hz = 1\n";
        let b = Board::parse(ok, src()).unwrap();
        assert_eq!((b.name.as_str(), b.sram_bytes, b.notes.as_deref()), ("x", 1024, None));

        let err = |text: &str| Board::parse(text, src()).unwrap_err().to_string();
        let e = err(&ok.replace("cortex-m4", "cortex-m0"));
        assert!(e.starts_with("board file my.toml: field `core`: unknown core `cortex-m0`"), "{e}");
        assert!(e.contains("rv32imc"), "{e}");
        let e = err(&ok.replace("sram_bytes = 1024\n", ""));
        assert!(e.contains("my.toml") && e.contains("missing field `sram_bytes`"), "{e}");
        let e = err(&format!("{ok}ram = 3\n"));
        assert!(e.contains("line 6, column 1") && e.contains("unknown field `ram`"), "{e}");
        let e = err(&ok.replace("flash_bytes = 2048", "flash_bytes = \"2M\""));
        assert!(e.contains("line 4, column 15: field `flash_bytes`: invalid type: string \"2M\""), "{e}");
        let e = err(&ok.replace("clock_hz = 1", "clock_hz = 0"));
        assert!(e.contains("field `clock_hz` must be positive"), "{e}");
        let e = err(&ok.replace("\"x\"", "\"a b\""));
        assert!(e.contains("field `name`"), "{e}");
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
    }
}
