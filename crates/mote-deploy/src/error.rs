//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Result with [`DeployError`].
pub type Result<T, E = DeployError> = std::result::Result<T, E>;

/// Why a model could not be compiled, fitted, built, emulated or reported. Messages name the file, board or
/// field involved and, where something is missing, how to install it.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// `--board NAME` names no known board.
    #[error(
        "unknown board `{name}`; known boards: {} (or pass a board file: --board path/to/board.toml, or add \
         NAME.toml to a directory listed in $MOTE_BOARDS)",
        .known.join(", ")
    )]
    UnknownBoard {
        /// The name asked for.
        name: String,
        /// Every board that can be found by name.
        known: Vec<String>,
    },
    /// A board file is unreadable or malformed.
    #[error("board file {file}: {message}")]
    BoardFile {
        /// The file (or the built-in profile) it came from.
        file: String,
        /// What is wrong, with the field or line.
        message: String,
    },
    /// The model does not fit the board's SRAM or flash.
    #[error("{0}")]
    DoesNotFit(String),
    /// Code generation or the host reference failed.
    #[error(transparent)]
    Model(#[from] mote_core::Error),
    /// Building or running the firmware failed (QEMU or a Rust target missing, a build error, a timeout).
    #[error(transparent)]
    Emulation(#[from] mote_qemu::Error),
    /// The firmware ran but its output is not what a mote firmware prints.
    #[error("firmware on {machine}: {message}")]
    Firmware {
        /// The emulated board.
        machine: &'static str,
        /// What went wrong, with what the firmware printed.
        message: String,
    },
    /// Something mote needs beside the binary (the firmware runtime, the kernels) is not where it should be.
    #[error("{}: {message}", .path.display())]
    Missing {
        /// The path looked at.
        path: PathBuf,
        /// What should be there.
        message: String,
    },
    /// Bad arguments (e.g. an output directory that exists).
    #[error("{0}")]
    Usage(String),
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl DeployError {
    /// An [`DeployError::Io`] with its context.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> DeployError {
        let context = context.into();
        move |source| DeployError::Io { context, source }
    }
}
