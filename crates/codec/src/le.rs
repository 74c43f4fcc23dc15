//! Little-endian integers read out of bytes: the one reader behind every
//! layout Fjord decodes from disk or the wire (batches and records here,
//! the storage crate's index entries, Raft state and recovery point, the
//! replication crate's control records and snapshot data).
//!
//! Nothing here can index out of a slice:
//! - [`Fixed`] reads a layout of known length (a batch header, an index
//!   entry, a hard-state record) at positions checked when the crate is
//!   compiled; the caller proves the length once, by getting the array.
//! - [`Reader`] walks a layout whose lengths come from the bytes
//!   themselves (records, headers); every read is bounds-checked and
//!   returns `None` past the end, so a length taken from the input can
//!   only end the parse, never panic it.
//! - [`u16`], [`u32`], [`u64`] read at a position known only at run time.

macro_rules! fixed_reads {
    ($($name:ident: $ty:ty,)*) => {
        $(
            #[doc = concat!("The `", stringify!($ty), "` at byte `AT`; a position past the layout does not compile.")]
            #[inline]
            pub fn $name<const AT: usize>(&self) -> $ty {
                const { assert!(AT + size_of::<$ty>() <= N, "read past the end of a fixed layout") };
                let mut b = [0u8; size_of::<$ty>()];
                b.copy_from_slice(&self.0[AT..AT + size_of::<$ty>()]);
                <$ty>::from_le_bytes(b)
            }
        )*
    };
}

/// A layout of exactly `N` bytes, read at compile-time-checked positions.
#[derive(Debug, Clone, Copy)]
pub struct Fixed<'a, const N: usize>(pub &'a [u8; N]);

impl<'a, const N: usize> Fixed<'a, N> {
    /// The first `N` bytes of `b`, or `None` if it is shorter.
    #[inline]
    pub fn prefix(b: &'a [u8]) -> Option<Self> {
        b.first_chunk::<N>().map(Fixed)
    }

    fixed_reads! {
        u16: u16,
        i16: i16,
        u32: u32,
        i32: i32,
        u64: u64,
        i64: i64,
    }
}

macro_rules! cursor_reads {
    ($($name:ident: $ty:ty,)*) => {
        $(
            #[doc = concat!("The next `", stringify!($ty), "`, or `None` (the cursor unmoved) if it runs past the end.")]
            #[inline]
            pub fn $name(&mut self) -> Option<$ty> {
                self.take_array().map(<$ty>::from_le_bytes)
            }
        )*
    };
}

/// A forward cursor over bytes whose lengths come from the bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at `pos` of `buf`; reads never go past `buf.len()`.
    pub fn new(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    /// Position of the next read, from the start of the buffer.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left after the cursor.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes, or `None` (the cursor unmoved) if fewer are left.
    #[inline]
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    #[inline]
    fn take_array<const K: usize>(&mut self) -> Option<[u8; K]> {
        self.take(K).and_then(|b| b.first_chunk::<K>().copied())
    }

    cursor_reads! {
        u16: u16,
        u32: u32,
        i32: i32,
        u64: u64,
        i64: i64,
    }
}

/// The `u16` at `at`, or `None` if `b` ends first.
#[inline]
pub fn u16(b: &[u8], at: usize) -> Option<u16> {
    Reader::new(b, at).u16()
}

/// The `u32` at `at`, or `None` if `b` ends first.
#[inline]
pub fn u32(b: &[u8], at: usize) -> Option<u32> {
    Reader::new(b, at).u32()
}

/// The `u64` at `at`, or `None` if `b` ends first.
#[inline]
pub fn u64(b: &[u8], at: usize) -> Option<u64> {
    Reader::new(b, at).u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_little_endian_and_stop_at_the_end() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let f = Fixed::<9>(&b);
        assert_eq!(f.u16::<0>(), 0x0201);
        assert_eq!(f.u32::<1>(), 0x0504_0302);
        assert_eq!(f.u64::<1>(), 0x0908_0706_0504_0302);
        assert!(Fixed::<10>::prefix(&b).is_none());
        assert_eq!(Fixed::<2>::prefix(&b).map(|f| f.i16::<0>()), Some(0x0201));

        let mut r = Reader::new(&b, 6);
        assert_eq!(r.u32(), None, "a failed read leaves the cursor");
        assert_eq!(r.pos(), 6);
        assert_eq!(r.u16(), Some(0x0807));
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.take(2), None);
        assert_eq!(r.take(1), Some(&[9u8][..]));
        assert_eq!(r.take(0), Some(&[][..]));
        assert_eq!(Reader::new(&b, 100).take(0), None, "a start past the end reads nothing");
        assert_eq!(Reader::new(&b, usize::MAX).take(1), None, "no overflow");
        assert_eq!(u64(&b, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(u64(&b, 2), None);
        assert_eq!(u32(&b, usize::MAX - 1), None);
    }
}
