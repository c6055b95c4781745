//! The one error type of the crate.

/// Everything that can go wrong reading, writing or using llama2.c files. `file` is the path given to `read`
/// (or `<bytes>` for `from_bytes`), so every message says which file is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint header field has a value the format does not allow.
    #[error("{file}: header field `{field}` = {value}: {reason}")]
    Header {
        /// The file.
        file: String,
        /// The field, as llama2.c's `Config` names it (`dim`, `n_heads`, ...).
        field: &'static str,
        /// Its value in the file.
        value: i64,
        /// Why it is refused.
        reason: String,
    },

    /// The checkpoint header implies more bytes than a 64-bit size can count.
    #[error("{file}: the header (dim = {dim}, hidden_dim = {hidden_dim}, n_layers = {n_layers}, vocab_size = {vocab_size}, seq_len = {seq_len}) implies more than 2^64 bytes")]
    Overflow {
        /// The file.
        file: String,
        /// `dim` from the header.
        dim: usize,
        /// `hidden_dim` from the header.
        hidden_dim: usize,
        /// `n_layers` from the header.
        n_layers: usize,
        /// `vocab_size` from the header (absolute value).
        vocab_size: usize,
        /// `seq_len` from the header.
        seq_len: usize,
    },

    /// The checkpoint is shorter than its header implies.
    #[error(
        "{file}: the file ends inside `{field}`: the header implies {expected} bytes, the file has {actual}{hint}"
    )]
    Truncated {
        /// The file.
        file: String,
        /// The header or the tensor the file ends in (`wq`, `w2`, `wcls`, ...).
        field: String,
        /// The bytes the header implies (for `header`: the header's own size).
        expected: u64,
        /// The bytes in the file.
        actual: u64,
        /// An explanation when the missing bytes have a likely cause (empty otherwise).
        hint: String,
    },

    /// The checkpoint is longer than its header implies.
    #[error("{file}: {extra} bytes after the last tensor `{field}`: the header implies {expected} bytes, the file has {actual}{hint}")]
    TrailingBytes {
        /// The file.
        file: String,
        /// The last tensor the header implies.
        field: String,
        /// `actual - expected`.
        extra: u64,
        /// The bytes the header implies.
        expected: u64,
        /// The bytes in the file (more than `expected`).
        actual: u64,
        /// An explanation when the extra bytes have a likely cause (empty otherwise).
        hint: String,
    },

    /// A llama2.c file version or variant this crate does not read.
    #[error("{file}: {what} is not supported")]
    Unsupported {
        /// The file.
        file: String,
        /// What was found.
        what: String,
    },

    /// The tokenizer file ends inside a field.
    #[error("{file}: the file ends inside {field}: it needs at least {needed} bytes, it has {actual}")]
    TokenizerTruncated {
        /// The file.
        file: String,
        /// The field: `max_token_length`, or `token 17's score` / `length` / `bytes`.
        field: String,
        /// The bytes needed to hold that field.
        needed: u64,
        /// The bytes in the file.
        actual: u64,
    },

    /// A tokenizer token's length field is negative or above the file's `max_token_length`.
    #[error("{file}: token {index}'s length {len} is outside 0..={max_token_length} (the file's max_token_length)")]
    TokenLength {
        /// The file.
        file: String,
        /// The token id.
        index: usize,
        /// The length in the file.
        len: i64,
        /// The file's `max_token_length`.
        max_token_length: u32,
    },

    /// The tokenizer file holds more than the `vocab_size` tokens asked for.
    #[error("{file}: {extra} bytes after the {vocab_size} tokens asked for (the file holds {tokens_in_file}): is it the tokenizer of another model?")]
    TokenizerTrailing {
        /// The file.
        file: String,
        /// The bytes after token `vocab_size - 1`.
        extra: u64,
        /// The vocabulary size asked for (the model's `vocab_size`).
        vocab_size: usize,
        /// How many whole tokens the file holds, as text (`at least N` when the rest does not parse).
        tokens_in_file: String,
    },

    /// `encode` of non-empty text needs a `" "` token for the dummy prefix, and the vocabulary has none.
    #[error("the vocabulary has no \" \" token for the dummy prefix that encode puts before non-empty text")]
    NoDummyPrefix,

    /// `encode` fell back to a raw byte whose token (`byte + 3`) is outside the vocabulary.
    #[error("byte 0x{byte:02X} is not in the vocabulary and its byte-fallback token {token} is outside the vocabulary of {vocab_size}")]
    ByteFallback {
        /// The byte.
        byte: u8,
        /// The token id the fallback needs (`byte + 3`).
        token: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },

    /// A token id is outside the vocabulary.
    #[error("token {token} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange {
        /// The token id.
        token: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },

    /// An argument or an in-memory value is unusable (a zero `vocab_size`, a weight of the wrong shape, ...).
    #[error("{0}")]
    Invalid(String),
}
