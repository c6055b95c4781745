//! llama2.c tokenizers (`tokenizer.bin`): a scored byte-pair vocabulary, with `run.c`'s `encode` and `decode`.

use std::collections::HashMap;
use std::path::Path;

use crate::{Error, Result};

/// The beginning-of-sequence token (`<s>`), as `run.c` hard-codes it.
pub const BOS: u32 = 1;
/// The end-of-sequence token (`</s>`), as `run.c` hard-codes it.
pub const EOS: u32 = 2;
/// Byte-fallback tokens start here: byte `b` is token `b + 3` (after `<unk>`, `<s>`, `</s>`).
pub const BYTE_FALLBACK_OFFSET: u32 = 3;

/// `run.c` starts its search for the best merge at this score, with a strict `>`: a merge scoring this or less
/// never happens.
const MERGE_FLOOR: f32 = -1e10;

/// Every byte value once, so that `decode` can return a one-byte slice for a `<0xXX>` token.
static BYTES: [u8; 256] = byte_table();

#[allow(clippy::indexing_slicing)] // i < 256, checked at compile time
const fn byte_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as u8;
        i += 1;
    }
    t
}

/// A llama2.c tokenizer: token byte strings (not necessarily UTF-8) with their merge scores.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    tokens: Vec<Vec<u8>>,
    scores: Vec<f32>,
    max_token_length: u32,
    /// The longest token's length (the file's `max_token_length` may claim more).
    longest: usize,
    /// Byte string → id; the lowest id when a string occurs more than once.
    ids: HashMap<Vec<u8>, u32>,
}

/// Reads the tokenizer file front to back, naming the field at fault.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    file: &'a str,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, field: impl FnOnce() -> String) -> Result<&[u8]> {
        let end = self.at.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.at..end)) {
            Some(b) => {
                self.at += n;
                Ok(b)
            }
            None => Err(Error::TokenizerTruncated {
                file: self.file.to_string(),
                field: field(),
                needed: (self.at as u64).saturating_add(n as u64),
                actual: self.bytes.len() as u64,
            }),
        }
    }

    fn word(&mut self, field: impl FnOnce() -> String) -> Result<[u8; 4]> {
        let b = self.take(4, field)?;
        Ok(b.first_chunk::<4>().copied().unwrap_or_default())
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }
}

impl Tokenizer {
    /// Reads `tokenizer.bin`: a u32 `max_token_length`, then for each of `vocab_size` tokens an f32 score, an
    /// i32 length and that many bytes. `vocab_size` is the model's (the file does not store it); a file holding
    /// more or fewer tokens is an error.
    pub fn read(path: impl AsRef<Path>, vocab_size: usize) -> Result<Tokenizer> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| Error::Io { file: file.clone(), source })?;
        Tokenizer::parse(&bytes, vocab_size, &file)
    }

    /// Reads a tokenizer from memory (errors name it `<bytes>`); see [`Tokenizer::read`].
    pub fn from_bytes(bytes: &[u8], vocab_size: usize) -> Result<Tokenizer> {
        Tokenizer::parse(bytes, vocab_size, "<bytes>")
    }

    fn parse(bytes: &[u8], vocab_size: usize, file: &str) -> Result<Tokenizer> {
        check_vocab_size(vocab_size)?;
        let mut r = Reader { bytes, at: 0, file };
        let max_token_length = u32::from_le_bytes(r.word(|| "max_token_length".to_string())?);
        // Each token takes at least 8 bytes: never reserve more than the file can hold.
        let cap = vocab_size.min(bytes.len() / 8);
        let (mut tokens, mut scores) = (Vec::with_capacity(cap), Vec::with_capacity(cap));
        for index in 0..vocab_size {
            let (score, token) = read_token(&mut r, index, max_token_length)?;
            scores.push(score);
            tokens.push(token);
        }
        if r.remaining() > 0 {
            let extra = r.remaining() as u64;
            let mut more = 0usize;
            let complete = loop {
                if r.remaining() == 0 {
                    break true;
                }
                if read_token(&mut r, vocab_size + more, max_token_length).is_err() {
                    break false;
                }
                more += 1;
            };
            let n = vocab_size + more;
            let tokens_in_file = if complete { format!("{n} tokens") } else { format!("at least {n} tokens") };
            return Err(Error::TokenizerTrailing { file: file.to_string(), extra, vocab_size, tokens_in_file });
        }
        Ok(Tokenizer::build(tokens, scores, max_token_length))
    }

    /// A tokenizer from its token byte strings and scores (`max_token_length` is the longest token).
    pub fn new(tokens: Vec<Vec<u8>>, scores: Vec<f32>) -> Result<Tokenizer> {
        check_vocab_size(tokens.len())?;
        if tokens.len() != scores.len() {
            return Err(Error::Invalid(format!("{} tokens but {} scores", tokens.len(), scores.len())));
        }
        let longest = tokens.iter().map(Vec::len).max().unwrap_or(0);
        let max_token_length = u32::try_from(longest).ok().filter(|&m| i32::try_from(m).is_ok()).ok_or_else(|| {
            Error::Invalid(format!("a token of {longest} bytes does not fit the format's i32 length"))
        })?;
        Ok(Tokenizer::build(tokens, scores, max_token_length))
    }

    fn build(tokens: Vec<Vec<u8>>, scores: Vec<f32>, max_token_length: u32) -> Tokenizer {
        let mut ids = HashMap::with_capacity(tokens.len());
        for (id, t) in tokens.iter().enumerate() {
            // vocab_size <= u32::MAX was checked, so the id fits.
            ids.entry(t.clone()).or_insert(id as u32);
        }
        let longest = tokens.iter().map(Vec::len).max().unwrap_or(0);
        Tokenizer { tokens, scores, max_token_length, longest, ids }
    }

    /// The tokenizer in the `tokenizer.bin` format ([`Tokenizer::read`] reads it back).
    pub fn to_bytes(&self) -> Vec<u8> {
        let size = 4 + self.tokens.iter().map(|t| 8 + t.len()).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&self.max_token_length.to_le_bytes());
        for (t, s) in self.tokens.iter().zip(&self.scores) {
            out.extend_from_slice(&s.to_le_bytes());
            // Lengths fit an i32: checked by `new`, or read from an i32 by `parse`.
            out.extend_from_slice(&(t.len() as i32).to_le_bytes());
            out.extend_from_slice(t);
        }
        out
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The file's `max_token_length` (the longest token, for a file llama2.c wrote).
    pub fn max_token_length(&self) -> u32 {
        self.max_token_length
    }

    /// The bytes of token `id`.
    pub fn token(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize).map(Vec::as_slice)
    }

    /// The merge score of token `id` (higher merges first).
    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// The id of the token with exactly these bytes (the lowest id if several have them).
    pub fn id_of(&self, bytes: &[u8]) -> Option<u32> {
        self.ids.get(bytes).copied()
    }

    /// Encodes text as `run.c`'s `encode` does; see [`Tokenizer::encode_bytes`].
    pub fn encode(&self, text: &str, bos: bool, eos: bool) -> Result<Vec<u32>> {
        self.encode_bytes(text.as_bytes(), bos, eos)
    }

    /// Encodes bytes as `run.c`'s `encode` does: [`BOS`] if `bos`; the `" "` token (SentencePiece's dummy
    /// prefix) if the text is not empty; each UTF-8 code point (a byte and the up to 3 continuation bytes after
    /// it, so stray bytes pass too) as its token, or each of its bytes `b` as token `b + 3` when it has none; then,
    /// over and over, the adjacent pair (the BOS included) whose concatenation is a token of the highest score
    /// (leftmost on ties, only above -1e10) becomes that token; finally [`EOS`] if `eos`.
    ///
    /// Unlike `run.c` (C strings), a NUL byte does not end the text and tokens compare as whole byte strings.
    /// Errors when the text needs a token the vocabulary lacks (the `" "` token, a byte-fallback token, BOS or EOS).
    pub fn encode_bytes(&self, text: &[u8], bos: bool, eos: bool) -> Result<Vec<u32>> {
        let vocab_size = self.vocab_size();
        let in_vocab = |token: u32| {
            if (token as usize) < vocab_size {
                Ok(token)
            } else {
                Err(Error::TokenOutOfRange { token, vocab_size })
            }
        };
        let mut tokens = Vec::with_capacity(text.len().saturating_add(3));
        if bos {
            tokens.push(in_vocab(BOS)?);
        }
        if !text.is_empty() {
            tokens.push(self.id_of(b" ").ok_or(Error::NoDummyPrefix)?);
        }
        let mut rest = text;
        while let Some((_, tail)) = rest.split_first() {
            // A code point: this byte and the continuation bytes (10xxxxxx) after it, 4 bytes at most.
            let len = 1 + tail.iter().take(3).take_while(|&&b| b & 0xC0 == 0x80).count();
            let (point, after) = rest.split_at(len.min(rest.len()));
            match self.id_of(point) {
                Some(id) => tokens.push(id),
                None => {
                    for &byte in point {
                        let token = u32::from(byte) + BYTE_FALLBACK_OFFSET;
                        if token as usize >= vocab_size {
                            return Err(Error::ByteFallback { byte, token, vocab_size });
                        }
                        tokens.push(token);
                    }
                }
            }
            rest = after;
        }
        self.merge(&mut tokens);
        if eos {
            tokens.push(in_vocab(EOS)?);
        }
        Ok(tokens)
    }

    /// `run.c`'s merge loop, remembering each adjacent pair's merge so a merge only looks up its two new pairs.
    fn merge(&self, tokens: &mut Vec<u32>) {
        let mut buf = Vec::with_capacity(2 * self.longest);
        let mut pair = |a: u32, b: u32| -> Option<(f32, u32)> {
            buf.clear();
            buf.extend_from_slice(self.token(a)?);
            buf.extend_from_slice(self.token(b)?);
            let id = self.id_of(&buf)?;
            Some((self.score(id)?, id))
        };
        let mut merges: Vec<Option<(f32, u32)>> = tokens
            .windows(2)
            .map(|w| match *w {
                [a, b] => pair(a, b),
                _ => None,
            })
            .collect();
        loop {
            let mut best: Option<(usize, u32)> = None;
            let mut best_score = MERGE_FLOOR;
            for (i, m) in merges.iter().enumerate() {
                if let Some((score, id)) = *m {
                    if score > best_score {
                        best_score = score;
                        best = Some((i, id));
                    }
                }
            }
            let Some((i, id)) = best else { return };
            // Tokens i and i + 1 become `id`; the pairs (i - 1, i) and (i, i + 1) change.
            if let Some(t) = tokens.get_mut(i) {
                *t = id;
            }
            tokens.remove(i + 1);
            merges.remove(i);
            if i > 0 {
                let m = match (tokens.get(i - 1), tokens.get(i)) {
                    (Some(&a), Some(&b)) => pair(a, b),
                    _ => None,
                };
                if let Some(slot) = merges.get_mut(i - 1) {
                    *slot = m;
                }
            }
            let m = match (tokens.get(i), tokens.get(i + 1)) {
                (Some(&a), Some(&b)) => pair(a, b),
                _ => None,
            };
            if let Some(slot) = merges.get_mut(i) {
                *slot = m;
            }
        }
    }

    /// The bytes of `token` as `run.c`'s `decode` gives them: without its leading space when `prev_token` is
    /// [`BOS`] (SentencePiece strips the dummy prefix), and a raw-byte token `<0xXX>` as that one byte.
    pub fn decode(&self, prev_token: u32, token: u32) -> Result<&[u8]> {
        let vocab_size = self.vocab_size();
        let mut piece = self.token(token).ok_or(Error::TokenOutOfRange { token, vocab_size })?;
        if prev_token == BOS {
            if let Some(rest) = piece.strip_prefix(b" ") {
                piece = rest;
            }
        }
        Ok(match raw_byte(piece) {
            Some(b) => BYTES.get(usize::from(b)..=usize::from(b)).unwrap_or_default(),
            None => piece,
        })
    }

    /// The text a token sequence stands for: each token decoded after its predecessor (after [`BOS`] for the
    /// first, as in `run.c`'s `generate`), [`BOS`] and [`EOS`] themselves left out. For text whose bytes all
    /// encode, `decode_text(&encode(text, ..)?)` gives the text back.
    pub fn decode_text(&self, tokens: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut prev = BOS;
        for &token in tokens {
            if token != BOS && token != EOS {
                out.extend_from_slice(self.decode(prev, token)?);
            }
            prev = token;
        }
        Ok(out)
    }
}

fn check_vocab_size(vocab_size: usize) -> Result<()> {
    if vocab_size == 0 || u32::try_from(vocab_size).is_err() {
        return Err(Error::Invalid(format!("vocab_size {vocab_size} is outside 1..=2^32-1")));
    }
    Ok(())
}

/// One token of the file: its score and bytes.
fn read_token(r: &mut Reader<'_>, index: usize, max_token_length: u32) -> Result<(f32, Vec<u8>)> {
    let score = f32::from_le_bytes(r.word(|| format!("token {index}'s score"))?);
    let len = i32::from_le_bytes(r.word(|| format!("token {index}'s length"))?);
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l as u64 <= u64::from(max_token_length))
        .ok_or_else(|| Error::TokenLength { file: r.file.to_string(), index, len: i64::from(len), max_token_length })?;
    let bytes = r.take(len, || format!("token {index}'s bytes"))?.to_vec();
    Ok((score, bytes))
}

/// The byte of a raw-byte token `<0xXX>` (two hex digits, either case), as `run.c` reads it with `"<0x%02hhX>"`.
fn raw_byte(piece: &[u8]) -> Option<u8> {
    let hex = piece.strip_prefix(b"<0x")?.strip_suffix(b">")?;
    if hex.len() != 2 {
        return None;
    }
    let digits = std::str::from_utf8(hex).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(digits, 16).ok()
}
