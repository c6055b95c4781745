//! The crate's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a firmware could not be built, run or measured; messages say what to install where that is the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The QEMU system emulator for the core is not on `PATH`.
    #[error(
        "{binary} not found on PATH: install QEMU 10 with `apt-get install -y --no-install-recommends -t \
         bookworm-backports {package}` (Debian bookworm with the bookworm-backports suite in apt's sources)"
    )]
    QemuNotFound {
        /// The missing executable, e.g. `qemu-system-arm`.
        binary: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
    },
    /// The Rust standard library for the core's target triple is not installed.
    #[error("Rust target {triple} is not installed: run `rustup target add {triple}`")]
    TargetMissing {
        /// The target triple.
        triple: &'static str,
    },
    /// QEMU ran longer than [`crate::RunOptions::timeout`] and was killed.
    #[error("emulation timed out after {}s on {machine}", .timeout.as_secs_f64())]
    Timeout {
        /// The emulated board.
        machine: &'static str,
        /// The time limit that expired.
        timeout: Duration,
        /// What the firmware printed before it was killed.
        stdout: String,
    },
    /// QEMU itself failed (bad arguments, a plugin it refused, a crash), as opposed to the firmware exiting.
    #[error("QEMU failed on {machine}: {message}")]
    Qemu {
        /// The emulated board.
        machine: &'static str,
        /// QEMU's own error output or exit status.
        message: String,
    },
    /// The instruction-counting plugin could not be built.
    #[error("cannot build the QEMU instruction-counting plugin: {0}")]
    Plugin(String),
    /// `cargo build` of a firmware crate failed.
    #[error("firmware build of {} for {triple} failed; cargo's stderr ends with:\n{stderr_tail}", .dir.display())]
    FirmwareBuild {
        /// The firmware crate directory.
        dir: PathBuf,
        /// The target triple.
        triple: &'static str,
        /// The last lines of cargo's stderr.
        stderr_tail: String,
    },
    /// An ELF file could not be read or lacks what is needed.
    #[error("{}: {message}", .path.display())]
    Elf {
        /// The ELF file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] with its context.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
