//! Host-side readers for the files of Andrej Karpathy's llama2.c, the format of the TinyStories family of tiny
//! decoders (stories260K, stories15M, ...):
//!
//! - [`Checkpoint`]: `model.bin`, a header of hyperparameters ([`Config`]) and f32 [`Weights`] in `run.c`'s
//!   order (version 0 as `run.c` reads it, and version 1), validated against the file size before anything is
//!   allocated; [`Checkpoint::to_legacy_bytes`] writes version 0.
//!
//! Nothing here panics on a malformed file: every problem is an [`Error`] naming the file and what is wrong.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod checkpoint;
mod error;

pub use checkpoint::{Checkpoint, Config, Format, Weights};
pub use error::Error;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
