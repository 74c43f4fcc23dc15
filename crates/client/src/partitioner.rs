//! Choosing a partition for a record: Kafka's murmur2 for keyed records
//! (`fjord_codec::partition_for_key`, shared with the broker), so a key
//! lands on the same partition number as with Kafka's Java client, and a
//! sticky choice for keyless records.
//!
//! Sticky partitioning (KIP-480) sends keyless records to one partition
//! until its batch is handed to the sender, then moves on. Batches fill up
//! instead of every partition getting a trickle of one-record batches.

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
