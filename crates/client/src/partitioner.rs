//! Choosing a partition for a record: Kafka's murmur2 for keyed records, so
//! a key lands on the same partition number as with Kafka's Java client,
//! and a sticky choice for keyless records.
//!
//! Sticky partitioning (KIP-480) sends keyless records to one partition
//! until its batch is handed to the sender, then moves on. Batches fill up
//! instead of every partition getting a trickle of one-record batches.

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`,
/// returned as the signed value Java computes.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key`:
/// `toPositive(murmur2(key)) % partitions`.
///
/// # Panics
/// If `partitions` is 0.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions
}

/// Sticky choice for keyless records of one topic.
#[derive(Debug, Clone)]
pub(crate) struct Sticky {
    current: Option<u32>,
    rng: u64,
}

impl Sticky {
    /// A sticky chooser seeded with `seed` (any value; 0 is replaced).
    pub(crate) fn new(seed: u64) -> Self {
        Sticky { current: None, rng: seed | 1 }
    }

    /// The partition keyless records go to now.
    pub(crate) fn partition(&mut self, partitions: u32) -> u32 {
        match self.current {
            Some(p) if p < partitions => p,
            _ => {
                let p = (self.next_random() % partitions as u64) as u32;
                self.current = Some(p);
                p
            }
        }
    }

    /// Called when the batch of `partition` was closed: keyless records move
    /// to another partition (a different one when there is more than one).
    pub(crate) fn batch_closed(&mut self, partition: u32, partitions: u32) {
        if self.current != Some(partition) {
            return;
        }
        let next = if partitions <= 1 {
            0
        } else {
            let step = 1 + (self.next_random() % (partitions as u64 - 1)) as u32;
            (partition + step) % partitions
        };
        self.current = Some(next);
    }

    /// xorshift64: enough to spread keyless load; not for anything secret.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's `UtilsTest.testMurmur2`
    /// (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
    #[test]
    fn murmur2_matches_kafka() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            (b"abc", 479470107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), *want, "key {:?}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn keyed_partition_is_to_positive_mod_n() {
        // murmur2("21") = -973932308; & 0x7fffffff = 1173551340.
        assert_eq!(partition_for_key(b"21", 1), 0);
        assert_eq!(partition_for_key(b"21", 10), 1173551340 % 10);
        assert_eq!(partition_for_key(b"abc", 7), 479470107 % 7);
        for n in 1..50 {
            assert!(partition_for_key(b"foobar", n) < n);
        }
    }

    #[test]
    fn sticky_stays_until_batch_closed_then_moves() {
        let mut s = Sticky::new(42);
        let p = s.partition(4);
        assert!(p < 4);
        assert_eq!(s.partition(4), p);
        s.batch_closed((p + 1) % 4, 4); // another partition's batch: no move
        assert_eq!(s.partition(4), p);
        for _ in 0..100 {
            let before = s.partition(4);
            s.batch_closed(before, 4);
            let after = s.partition(4);
            assert_ne!(before, after);
            assert!(after < 4);
        }
        let mut one = Sticky::new(7);
        assert_eq!(one.partition(1), 0);
        one.batch_closed(0, 1);
        assert_eq!(one.partition(1), 0);
        // Partition count shrank below the sticky choice: re-pick in range.
        let mut s = Sticky::new(3);
        let _ = s.partition(100);
        assert!(s.partition(2) < 2);
    }
}
