//! Portable integer reference kernels for mote.
//!
//! `#![no_std]`, no `alloc`, no floating point, no `unsafe` outside the per-core assembly. These kernels are the single
//! definition of mote's integer arithmetic: the host reference interpreter and the generated MCU
//! code both call them, and faster (SIMD) variants must match them bit for bit.
//!
//! Conventions shared by every kernel:
//! * Tensors are flat slices in row-major (C) order: the **last** dimension listed in a layout is
//!   contiguous. No alignment beyond that of the element type is required.
//! * Every kernel validates slice lengths, dims and parameters up front and returns
//!   `Err(KernelError)` **before writing anything**. After validation it only indexes inside the
//!   validated bounds; there are no panicking paths.
//! * The Deeploy operators follow the integer semantics of `peer-models/SEMANTICS.md` §3 exactly
//!   (true-value domain: unsigned tensors hold 0..255, no zero points).
//! * 32-bit accumulators use two's-complement wrapping arithmetic, like the Cortex-M C references;
//!   results are exact whenever the true value fits in `i32` (per-kernel bounds are documented).
#![no_std]
// `unsafe` only in the per-core assembly modules (`packed::dsp`, `packed::mve`), each of which says why.
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::float_arithmetic)]
// `x.max(lo).min(hi)` is used instead of `clamp`, whose `lo <= hi` assertion is a panic path.
#![allow(clippy::manual_clamp)]

#[cfg(any(test, feature = "host"))]
extern crate std;

mod elem;
mod error;

pub mod activation;
pub mod arena;
pub mod attention;
pub mod conv;
pub mod decoder;
pub mod elementwise;
pub mod gather;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod packed;
pub mod pool;
pub mod requant;
pub mod softmax;

#[cfg(feature = "host")]
pub mod host;

#[cfg(test)]
mod testutil;

pub use elem::IntElem;
pub use error::KernelError;
