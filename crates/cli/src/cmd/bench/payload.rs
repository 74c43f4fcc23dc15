//! Record values of the benchmarks: a stamp that `e2e` reads back, then
//! filler that compresses like text rather than like zeros.
//!
//! Layout of every value (all integers little-endian):
//!
//! | bytes  | field                                                        |
//! |--------|--------------------------------------------------------------|
//! | 0..8   | due time, µs since the Unix epoch (the intended send time)   |
//! | 8..16  | run-wide record index                                        |
//! | 16..   | filler: a slice of a pseudo-random text, starting at an      |
//! |        | offset derived from the index, so no two records are alike   |
//!
//! The filler is words drawn from a small vocabulary, which zlib shrinks
//! about 3.5 (level 1) to 5 (level 6) times, measured on a segment file:
//! neither the best case (zeros) nor the worst (random bytes). Building a value is one copy out of a text
//! made once, so the load generator spends its CPU on sending.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the stamp at the start of every value.
pub(crate) const STAMP_BYTES: usize = 16;
/// Bytes of the text the filler is cut from.
const TEXT_BYTES: usize = 256 * 1024;
/// Words the text is made of.
const WORDS: &[&str] = &[
    "fjord",
    "log",
    "segment",
    "offset",
    "partition",
    "leader",
    "replica",
    "batch",
    "record",
    "commit",
    "index",
    "fetch",
    "produce",
    "topic",
    "watermark",
    "append",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "at",
    "00",
    "17",
    "42",
    "2024",
    "error",
    "ok",
    "user",
    "event",
    "order",
    "payment",
    "id",
    "=",
    ":",
    ",",
    "{",
    "}",
];

/// Makes values of one size.
#[derive(Debug, Clone)]
pub(crate) struct Payloads {
    size: usize,
    text: Bytes,
}

impl Payloads {
    /// Values of `size` bytes.
    ///
    /// # Panics
    /// If `size` is below [`STAMP_BYTES`] (the flags parser rejects that).
    pub(crate) fn new(size: usize) -> Self {
        assert!(size >= STAMP_BYTES, "record size {size} is below the {STAMP_BYTES}-byte stamp");
        Payloads { size, text: text(TEXT_BYTES) }
    }

    /// The value of record `index`, due at `due_us` (µs since the epoch).
    pub(crate) fn value(&self, index: u64, due_us: u64) -> Bytes {
        let mut out = BytesMut::with_capacity(self.size);
        out.put_u64_le(due_us);
        out.put_u64_le(index);
        let mut at = (mix(index) % self.text.len() as u64) as usize;
        while out.len() < self.size {
            let n = (self.size - out.len()).min(self.text.len() - at);
            out.put_slice(&self.text[at..at + n]);
            at = 0;
        }
        debug_assert_eq!(out.len(), self.size);
        out.freeze()
    }
}

/// The due time and index stamped into a value; `None` if it is too short
/// to be one of ours.
pub(crate) fn read_stamp(value: &[u8]) -> Option<(u64, u64)> {
    let due = u64::from_le_bytes(value.get(0..8)?.try_into().ok()?);
    let index = u64::from_le_bytes(value.get(8..16)?.try_into().ok()?);
    Some((due, index))
}

/// `len` bytes of words separated by spaces, the same on every run.
fn text(len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len + 16);
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    while out.len() < len {
        state = mix(state);
        out.extend_from_slice(WORDS[(state % WORDS.len() as u64) as usize].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    Bytes::from(out)
}

/// splitmix64's finalizer: spreads consecutive inputs over all of u64.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_size_and_carry_their_stamp() {
        for size in [STAMP_BYTES, 17, 1024, TEXT_BYTES + 1000] {
            let p = Payloads::new(size);
            let v = p.value(7, 1_700_000_000_123_456);
            assert_eq!(v.len(), size);
            assert_eq!(read_stamp(&v), Some((1_700_000_000_123_456, 7)));
        }
        assert_eq!(read_stamp(b"short"), None);
    }

    #[test]
    fn values_differ_between_records_but_not_between_runs() {
        let p = Payloads::new(1024);
        let (a, b) = (p.value(1, 0), p.value(2, 0));
        assert_ne!(a[STAMP_BYTES..], b[STAMP_BYTES..]);
        assert_eq!(Payloads::new(1024).value(1, 0), a);
    }

    #[test]
    fn filler_is_text_with_repeats() {
        let v = Payloads::new(4096).value(3, 0);
        let filler = &v[STAMP_BYTES..];
        assert!(filler.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
        // Few distinct words: a dictionary coder finds long repeats. Count
        // distinct 4-byte windows as a cheap stand-in for compressibility.
        let distinct: std::collections::HashSet<&[u8]> = filler.windows(4).collect();
        assert!(distinct.len() < filler.len() / 4, "{} distinct windows", distinct.len());
    }
}
