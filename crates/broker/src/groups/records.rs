//! The records of `__consumer_offsets` (storage-format.md §11): group
//! metadata snapshots, offset commits and group tombstones, as JSON values
//! keyed by group id, and the replay that rebuilds groups from them.
//!
//! The partition has no compaction yet: a new coordinator rebuilds its
//! groups by reading the whole partition (last record wins per group and
//! per partition), so load time and size grow with the number of commits.
//! Each group record is already a full snapshot of that group's
//! metadata, which is what compaction will keep.

use std::collections::BTreeMap;

use bytes::Bytes;
use fjord_codec::BatchBuilder;
use serde::{Deserialize, Serialize};

use super::state::{Committed, Group, GroupMeta, Tp};
use crate::broker::now_ms;
use crate::{Error, Result};

/// Version of the record layout, in every record's `v`.
pub(crate) const RECORD_VERSION: u32 = 1;

/// One committed offset inside an `offsets` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OffsetEntry {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) metadata: String,
}

/// A record of the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum GroupRecord {
    /// The group's whole metadata, written whenever it changes.
    Group { v: u32, group: String, state: GroupMeta },
    /// Offsets committed by one request.
    Offsets { v: u32, group: String, timestamp_ms: i64, offsets: Vec<OffsetEntry> },
    /// The group was deleted, offsets and all.
    GroupDeleted { v: u32, group: String },
}

impl GroupRecord {
    pub(crate) fn group(&self) -> &str {
        match self {
            GroupRecord::Group { group, .. }
            | GroupRecord::Offsets { group, .. }
            | GroupRecord::GroupDeleted { group, .. } => group,
        }
    }

    /// Applies the record to the groups of a partition.
    pub(crate) fn apply(self, groups: &mut BTreeMap<String, Group>) {
        match self {
            GroupRecord::Group { group, state, .. } => {
                groups.entry(group).or_default().meta = state;
            }
            GroupRecord::Offsets { group, timestamp_ms, offsets, .. } => {
                let g = groups.entry(group).or_default();
                for o in offsets {
                    let c = Committed { offset: o.offset, metadata: o.metadata, timestamp_ms };
                    g.offsets.insert(Tp { topic: o.topic, partition: o.partition }, c);
                }
            }
            GroupRecord::GroupDeleted { group, .. } => {
                groups.remove(&group);
            }
        }
    }
}

/// One batch holding `records`, each keyed by its group id.
pub(crate) fn encode(records: &[GroupRecord]) -> Result<Bytes> {
    assert!(!records.is_empty(), "a batch needs at least one record");
    let mut b = BatchBuilder::new(fjord_codec::format::BATCH_LEN_MAX);
    let ts = now_ms();
    for r in records {
        let json =
            serde_json::to_vec(r).map_err(|e| Error::Replication(format!("encoding a group record: {e}")))?;
        b.push(Some(r.group().as_bytes()), Some(&json), &[], ts)
            .map_err(|e| Error::InvalidArgument(format!("group state does not fit in a batch: {e}")))?;
    }
    Ok(b.finish())
}

/// Applies every record of `batches` (bytes read from the partition);
/// control batches are skipped. A record whose JSON this version cannot
/// read is skipped with a warning (a newer broker's record type); a batch
/// whose CRC fails is an error: the log itself is damaged.
pub(crate) fn replay(batches: Bytes, groups: &mut BTreeMap<String, Group>) -> Result<()> {
    for part in fjord_codec::split_batches(batches) {
        let (h, batch) = part.map_err(|e| Error::Replication(format!("offsets partition: {e}")))?;
        fjord_codec::verify_crc(&batch, &h)
            .map_err(|e| Error::Replication(format!("offsets partition: {e}")))?;
        if h.is_control() {
            continue;
        }
        let records = fjord_codec::records(&batch)
            .map_err(|e| Error::Replication(format!("offsets partition: {e}")))?;
        for r in records {
            let r = r.map_err(|e| Error::Replication(format!("offsets partition: {e}")))?;
            match r.value.as_deref().map(serde_json::from_slice::<GroupRecord>) {
                Some(Ok(rec)) => rec.apply(groups),
                Some(Err(e)) => {
                    tracing::warn!(offset = r.offset, error = %e, "skipping an unreadable group record")
                }
                None => tracing::warn!(offset = r.offset, "skipping a group record without a value"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::state::Member;

    #[test]
    fn replay_keeps_the_last_record_of_each_group_and_partition() {
        let meta = |epoch| GroupMeta {
            epoch,
            assignor: "sticky".into(),
            members: BTreeMap::from([(
                "m1".to_string(),
                Member {
                    epoch,
                    previous_epoch: epoch,
                    client_id: "c".into(),
                    client_host: "h".into(),
                    topics: ["t".to_string()].into(),
                    session_timeout_ms: 3000,
                    assigned: [Tp::new("t", 0)].into(),
                    owned: [Tp::new("t", 0)].into(),
                },
            )]),
            ..GroupMeta::default()
        };
        let off = |group: &str, p, o| GroupRecord::Offsets {
            v: RECORD_VERSION,
            group: group.into(),
            timestamp_ms: 5,
            offsets: vec![OffsetEntry { topic: "t".into(), partition: p, offset: o, metadata: "m".into() }],
        };
        let records = vec![
            GroupRecord::Group { v: RECORD_VERSION, group: "a".into(), state: meta(1) },
            off("a", 0, 10),
            off("a", 1, 3),
            GroupRecord::Group { v: RECORD_VERSION, group: "a".into(), state: meta(2) },
            off("a", 0, 12),
            off("b", 0, 7),
            GroupRecord::GroupDeleted { v: RECORD_VERSION, group: "b".into() },
            off("c", 0, 1),
        ];
        let mut bytes = Vec::new();
        for r in &records {
            let mut batch = encode(std::slice::from_ref(r)).unwrap().to_vec();
            // Stored batches carry their base offset; replay does not need it.
            bytes.append(&mut batch);
        }
        let mut groups = BTreeMap::new();
        replay(Bytes::from(bytes), &mut groups).unwrap();
        assert_eq!(groups.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(groups["a"].meta, meta(2));
        let offsets: Vec<(u32, u64)> =
            groups["a"].offsets.iter().map(|(tp, c)| (tp.partition, c.offset)).collect();
        assert_eq!(offsets, [(0, 12), (1, 3)]);
        assert_eq!(groups["c"].offsets[&Tp::new("t", 0)].offset, 1);
        // The JSON is the documented layout.
        let json = serde_json::to_value(&records[1]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"offsets","v":1,"group":"a","timestamp_ms":5,
                "offsets":[{"topic":"t","partition":0,"offset":10,"metadata":"m"}]})
        );
    }

    #[test]
    fn a_damaged_batch_fails_the_replay() {
        let mut batch = encode(&[GroupRecord::GroupDeleted { v: 1, group: "g".into() }]).unwrap().to_vec();
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        assert!(replay(Bytes::from(batch), &mut BTreeMap::new()).is_err());
    }

    proptest::proptest! {
        /// Whatever the offsets log holds, replay answers Ok or Err, never panics.
        #[test]
        fn any_bytes_replay_or_fail_cleanly(b in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = replay(Bytes::from(b), &mut BTreeMap::new());
        }

        /// A valid batch around arbitrary record values: bad JSON is an error.
        #[test]
        fn any_record_value_replays_or_fails_cleanly(v in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let mut b = fjord_codec::BatchBuilder::new(1 << 20);
            b.push(Some(b"k"), Some(&v), &[], 0).unwrap();
            let _ = replay(b.finish(), &mut BTreeMap::new());
        }
    }
}
