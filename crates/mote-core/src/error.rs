//! The one error type of the IR and its users.
use std::fmt;

/// Result alias used across mote.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with enough context (file, node, op, tensor) for a user to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model or data is malformed or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// The model uses something mote does not support (yet).
    #[error("{0}")]
    Unsupported(String),
    /// An error inside one node, with the node's name and op type prepended.
    #[error("node `{node}` ({op}): {source}")]
    Node {
        /// Node name as in the model.
        node: String,
        /// Op type, e.g. `MatMul`.
        op: String,
        /// What went wrong.
        source: Box<Error>,
    },
    /// An I/O or file-format error, with the path.
    #[error("{path}: {msg}")]
    File {
        /// The file involved.
        path: String,
        /// What went wrong.
        msg: String,
    },
}

impl Error {
    /// Wraps this error with the node it happened in.
    pub fn at_node(self, node: &str, op: &str) -> Error {
        Error::Node { node: node.to_string(), op: op.to_string(), source: Box::new(self) }
    }

    /// Builds an [`Error::File`].
    pub fn file(path: impl fmt::Display, msg: impl fmt::Display) -> Error {
        Error::File { path: path.to_string(), msg: msg.to_string() }
    }
}

/// Returns early with an [`Error::Invalid`] built by `format!`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::Error::Invalid(format!($($arg)*))) };
}

/// Returns early with an [`Error::Invalid`] unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => { if !$cond { $crate::bail!($($arg)*) } };
}
