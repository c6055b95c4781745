//! Buffered semihosting output: each semihosting call traps into the emulator, so lines are assembled in a
//! small buffer and written in few calls.

use core::fmt::{self, Write};

/// Collects formatted text and writes it to the host in chunks of up to 256 bytes.
struct Buffered {
    buf: [u8; 256],
    len: usize,
}

impl Buffered {
    fn flush(&mut self) {
        // Only whole `&str`s are ever appended, so the buffer is always valid UTF-8.
        if let Some(s) = self.buf.get(..self.len).and_then(|b| core::str::from_utf8(b).ok()) {
            crate::arch::write_str(s);
        }
        self.len = 0;
    }
}

impl Write for Buffered {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > self.buf.len() {
            self.flush();
        }
        match self.buf.get_mut(self.len..self.len + s.len()) {
            Some(dst) => {
                dst.copy_from_slice(s.as_bytes());
                self.len += s.len();
            }
            None => crate::arch::write_str(s), // longer than the buffer: write it directly
        }
        Ok(())
    }
}

/// Implementation of [`println!`](crate::println); not for direct use.
#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut out = Buffered { buf: [0; 256], len: 0 };
    let _ = out.write_fmt(args);
    out.flush();
}

/// Displays bytes as lowercase hex, two digits per byte, no separators (`Hex(&[1, 255])` → `01ff`).
pub struct Hex<'a>(pub &'a [u8]);

/// Displays int8 values as the lowercase hex of their two's-complement bytes (`HexI8(&[1, -1])` → `01ff`).
pub struct HexI8<'a>(pub &'a [i8]);

/// Writes `bytes` as hex in chunks (one `write_str` per 32 bytes).
fn write_hex(f: &mut fmt::Formatter<'_>, len: usize, byte: impl Fn(usize) -> u8) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut chunk = [0u8; 64];
    let mut start = 0;
    while start < len {
        let n = (len - start).min(chunk.len() / 2);
        for (i, pair) in chunk.chunks_exact_mut(2).take(n).enumerate() {
            let b = byte(start + i);
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        let text = chunk.get(..n * 2).and_then(|c| core::str::from_utf8(c).ok()).unwrap_or("");
        f.write_str(text)?;
        start += n;
    }
    Ok(())
}

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.0.len(), |i| self.0[i])
    }
}

impl fmt::Display for HexI8<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.0.len(), |i| self.0[i] as u8)
    }
}
