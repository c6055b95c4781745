//! The error type shared by all kernels.

use core::fmt;

/// Why a kernel refused its arguments; it is returned before any output is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelError {
    /// A slice length disagrees with the given dims (or a dim that must be non-zero is zero).
    ShapeMismatch,
    /// A scalar parameter is outside its documented range (shift, stride, `n_levels`, ...).
    InvalidParam,
    /// A gather index lies outside the table.
    IndexOutOfRange,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelError::ShapeMismatch => "slice length does not match the given shape",
            KernelError::InvalidParam => "kernel parameter out of range",
            KernelError::IndexOutOfRange => "index out of range",
        })
    }
}
