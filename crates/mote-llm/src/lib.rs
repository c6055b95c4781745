//! Host-side readers for the files of Andrej Karpathy's llama2.c, the format of the TinyStories family of tiny
//! decoders (stories260K, stories15M, ...):
//!
//! - [`Checkpoint`]: `model.bin`, a header of hyperparameters ([`Config`]) and f32 [`Weights`] in `run.c`'s
//!   order (version 0 as `run.c` reads it, and version 1), validated against the file size before anything is
//!   allocated; [`Checkpoint::to_legacy_bytes`] writes version 0.
//! - [`Tokenizer`]: `tokenizer.bin`, a scored byte-pair vocabulary, with `run.c`'s [`Tokenizer::encode`]
//!   (dummy prefix, UTF-8 code points, byte fallback, highest-score merges) and [`Tokenizer::decode`].
//!
//! Nothing here panics on a malformed file: every problem is an [`Error`] naming the file and what is wrong.
//!
//! ```
//! use mote_llm::{Tokenizer, BOS};
//! // <unk>, <s>, </s>, the 256 byte tokens, then " ", "h", "i", "hi", " hi".
//! let mut tokens: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"\n<s>\n".to_vec(), b"\n</s>\n".to_vec()];
//! tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>").into_bytes()));
//! tokens.extend([" ", "h", "i", "hi", " hi"].map(|t| t.as_bytes().to_vec()));
//! let scores: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
//! let tok = Tokenizer::new(tokens, scores).unwrap();
//! let ids = tok.encode("hi!", true, false).unwrap();
//! assert_eq!(ids, [BOS, 263, u32::from(b'!') + 3]); // " hi", then '!' by byte fallback
//! assert_eq!(tok.decode_text(&ids).unwrap(), b"hi!");
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod checkpoint;
mod error;
pub mod float;
pub mod from_graph;
pub mod generate;
pub mod quant;
mod store;
mod tokenizer;

pub use checkpoint::{Checkpoint, Config, Format, Weights};
pub use error::Error;
pub use tokenizer::{Tokenizer, BOS, BYTE_FALLBACK_OFFSET, EOS};

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
