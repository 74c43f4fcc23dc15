//! The records of `__consumer_offsets` (storage-format.md §11): group
//! metadata snapshots and offset commits as JSON values, their keys, the
//! tombstones a group deletion writes, and the replay that rebuilds
//! groups from them.
//!
//! The topic is compacted (issue #15): each record's key names the one
//! thing its value replaces, so that keeping the last record of each key
//! keeps the state. A group's metadata is keyed by [`Key::Meta`], each
//! committed partition by [`Key::Offset`], and deleting a group writes a
//! tombstone (null value) for each of those keys. Records written before
//! this layout are keyed by the group id alone ([`Key::Legacy`]) and one
//! may carry many partitions' offsets, so compaction keeps them as they
//! are ([`COMPACTED_KEY_PREFIX`]); a group that still has such records
//! (listed in the replay's [`Legacy`] set, empty groups included: their
//! old metadata is there all the same) is deleted with a legacy
//! `group_deleted` record as well, so that nothing of it comes back once
//! its tombstones are gone.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use fjord_codec::BatchBuilder;
use serde::{Deserialize, Serialize};

use super::state::{Committed, Group, GroupMeta, Tp};
use crate::broker::now_ms;
use crate::{Error, Result};

/// Version of the value layout, in every record's `v`.
pub(crate) const RECORD_VERSION: u32 = 1;

/// First byte of every key that compaction may replace: group ids
/// cannot start with it (they have no control characters), so a legacy
/// key never does.
pub(crate) const COMPACTED_KEY_PREFIX: &[u8] = &[0x00];
/// Second byte of a [`Key::Meta`] key.
const KEY_KIND_META: u8 = 0x01;
/// Second byte of a [`Key::Offset`] key.
const KEY_KIND_OFFSET: u8 = 0x02;

/// The groups of a partition that records from before compaction
/// (keyed by group id) still hold some of, since their last legacy
/// `group_deleted`.
pub(crate) type Legacy = BTreeSet<String>;

/// One committed offset inside an `offsets` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OffsetEntry {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) metadata: String,
}

/// A record value of the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum GroupRecord {
    /// The group's whole metadata, written whenever it changes.
    Group { v: u32, group: String, state: GroupMeta },
    /// Committed offsets: one partition's under [`Key::Offset`]; a legacy
    /// record may hold all those of one request.
    Offsets { v: u32, group: String, timestamp_ms: i64, offsets: Vec<OffsetEntry> },
    /// The group was deleted, offsets and all (written under [`Key::Legacy`]).
    GroupDeleted { v: u32, group: String },
}

impl GroupRecord {
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

/// What a record of the offsets topic replaces: its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// A group's metadata: `00 01 <group id>`.
    Meta(String),
    /// A group's committed offset of one partition: `00 02 <u16 LE
    /// length><group id><u16 LE length><topic><u32 LE partition>`.
    Offset(String, Tp),
    /// Any record written before the topic was compacted: the group id.
    Legacy(String),
}

impl Key {
    fn group(&self) -> &str {
        match self {
            Key::Meta(g) | Key::Offset(g, _) | Key::Legacy(g) => g,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Key::Meta(group) => {
                out.extend_from_slice(COMPACTED_KEY_PREFIX);
                out.push(KEY_KIND_META);
                out.extend_from_slice(group.as_bytes());
            }
            Key::Offset(group, tp) => {
                out.extend_from_slice(COMPACTED_KEY_PREFIX);
                out.push(KEY_KIND_OFFSET);
                for s in [group, &tp.topic] {
                    // Group ids and topic names are far below 64 KiB (249 bytes).
                    let len = u16::try_from(s.len()).expect("group ids and topic names fit a u16 length");
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                out.extend_from_slice(&tp.partition.to_le_bytes());
            }
            Key::Legacy(group) => out.extend_from_slice(group.as_bytes()),
        }
        out
    }

    /// The key of a stored record; `None` for bytes no broker writes.
    pub(crate) fn decode(b: &[u8]) -> Option<Key> {
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
        let Some(rest) = b.strip_prefix(COMPACTED_KEY_PREFIX) else { return text(b).map(Key::Legacy) };
        let (&kind, rest) = rest.split_first()?;
        match kind {
            KEY_KIND_META => text(rest).map(Key::Meta),
            KEY_KIND_OFFSET => {
                let mut r = fjord_codec::le::Reader::new(rest, 0);
                let string = |r: &mut fjord_codec::le::Reader<'_>| {
                    let len = r.u16()? as usize;
                    text(r.take(len)?)
                };
                let group = string(&mut r)?;
                let topic = string(&mut r)?;
                let partition = r.u32()?;
                (r.remaining() == 0).then_some(Key::Offset(group, Tp { topic, partition }))
            }
            _ => None,
        }
    }
}

/// One record to append: a key and its value, or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: Key,
    pub(crate) value: Option<GroupRecord>,
}

impl Entry {
    /// The group's metadata as it now is.
    pub(crate) fn meta(group: &str, state: GroupMeta) -> Entry {
        Entry {
            key: Key::Meta(group.to_owned()),
            value: Some(GroupRecord::Group { v: RECORD_VERSION, group: group.to_owned(), state }),
        }
    }

    /// One record per committed partition.
    pub(crate) fn offsets(group: &str, timestamp_ms: i64, offsets: Vec<OffsetEntry>) -> Vec<Entry> {
        offsets
            .into_iter()
            .map(|o| Entry {
                key: Key::Offset(group.to_owned(), Tp { topic: o.topic.clone(), partition: o.partition }),
                value: Some(GroupRecord::Offsets {
                    v: RECORD_VERSION,
                    group: group.to_owned(),
                    timestamp_ms,
                    offsets: vec![o],
                }),
            })
            .collect()
    }

    /// What deleting `g` writes: a tombstone for its metadata and for each
    /// of its offsets, and a legacy `group_deleted` if records from before
    /// compaction still hold some of it (`legacy`).
    pub(crate) fn deletion(group: &str, g: &Group, legacy: &Legacy) -> Vec<Entry> {
        let mut out = vec![Entry { key: Key::Meta(group.to_owned()), value: None }];
        out.extend(
            g.offsets.keys().map(|tp| Entry { key: Key::Offset(group.to_owned(), tp.clone()), value: None }),
        );
        if legacy.contains(group) {
            out.push(Entry {
                key: Key::Legacy(group.to_owned()),
                value: Some(GroupRecord::GroupDeleted { v: RECORD_VERSION, group: group.to_owned() }),
            });
        }
        out
    }

    pub(crate) fn group(&self) -> &str {
        self.key.group()
    }

    /// Applies the record to the groups of a partition.
    pub(crate) fn apply(self, groups: &mut BTreeMap<String, Group>, legacy: &mut Legacy) {
        match (self.key, self.value) {
            (Key::Legacy(group), Some(rec)) => {
                if matches!(rec, GroupRecord::GroupDeleted { .. }) {
                    legacy.remove(&group);
                } else {
                    legacy.insert(group);
                }
                rec.apply(groups);
            }
            (_, Some(rec)) => rec.apply(groups),
            (Key::Meta(group), None) => {
                if let Some(g) = groups.get_mut(&group) {
                    g.meta = GroupMeta::default();
                }
            }
            (Key::Offset(group, tp), None) => {
                if let Some(g) = groups.get_mut(&group) {
                    g.offsets.remove(&tp);
                }
            }
            (Key::Legacy(group), None) => {
                tracing::warn!(group = %group, "skipping a group record without a value")
            }
        }
    }
}

/// One batch holding `entries`.
pub(crate) fn encode(entries: &[Entry]) -> Result<Bytes> {
    assert!(!entries.is_empty(), "a batch needs at least one record");
    let mut b = BatchBuilder::new(fjord_codec::format::BATCH_LEN_MAX);
    let ts = now_ms();
    for e in entries {
        let json = match &e.value {
            Some(r) => Some(
                serde_json::to_vec(r)
                    .map_err(|e| Error::Replication(format!("encoding a group record: {e}")))?,
            ),
            None => None,
        };
        b.push(Some(&e.key.encode()), json.as_deref(), &[], ts)
            .map_err(|e| Error::InvalidArgument(format!("group state does not fit in a batch: {e}")))?;
    }
    Ok(b.finish())
}

/// Applies every record of `batches` (bytes read from the partition);
/// control batches are skipped. A record whose key or JSON this version
/// cannot read is skipped with a warning (a newer broker's record type); a
/// batch whose CRC fails is an error: the log itself is damaged.
pub(crate) fn replay(
    batches: Bytes,
    groups: &mut BTreeMap<String, Group>,
    legacy: &mut Legacy,
) -> Result<()> {
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
            let Some(key) = r.key.as_deref().and_then(Key::decode) else {
                tracing::warn!(offset = r.offset, "skipping a group record with an unreadable key");
                continue;
            };
            let value = match r.value.as_deref().map(serde_json::from_slice::<GroupRecord>) {
                Some(Ok(rec)) => Some(rec),
                Some(Err(e)) => {
                    tracing::warn!(offset = r.offset, error = %e, "skipping an unreadable group record");
                    continue;
                }
                None => None,
            };
            Entry { key, value }.apply(groups, legacy);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::groups::state::Member;

    fn meta(epoch: i64, members: usize) -> GroupMeta {
        GroupMeta {
            epoch,
            assignor: "sticky".into(),
            members: (0..members)
                .map(|i| {
                    let m = Member {
                        epoch,
                        previous_epoch: epoch,
                        client_id: "c".into(),
                        client_host: "h".into(),
                        topics: ["t".to_string()].into(),
                        session_timeout_ms: 3000,
                        assigned: [Tp::new("t", 0)].into(),
                        owned: [Tp::new("t", 0)].into(),
                    };
                    (format!("m{i}"), m)
                })
                .collect(),
            ..GroupMeta::default()
        }
    }

    fn offset(p: u32, o: u64) -> OffsetEntry {
        OffsetEntry { topic: "t".into(), partition: p, offset: o, metadata: "m".into() }
    }

    /// A record as written before the topic was compacted: keyed by group id.
    fn legacy(rec: GroupRecord) -> Entry {
        let group = match &rec {
            GroupRecord::Group { group, .. }
            | GroupRecord::Offsets { group, .. }
            | GroupRecord::GroupDeleted { group, .. } => group.clone(),
        };
        Entry { key: Key::Legacy(group), value: Some(rec) }
    }

    /// Each entry as its own stored batch, concatenated.
    fn log_of(entries: &[Entry]) -> Bytes {
        let mut bytes = Vec::new();
        for e in entries {
            bytes.extend_from_slice(&encode(std::slice::from_ref(e)).unwrap());
        }
        Bytes::from(bytes)
    }

    /// What a coordinator loads from `log`: the groups that are not empty,
    /// as (metadata, offsets).
    type Loaded = BTreeMap<String, (GroupMeta, BTreeMap<Tp, Committed>)>;
    fn load(log: Bytes) -> Loaded {
        let (groups, _) = reload(log);
        groups.into_iter().map(|(id, g)| (id, (g.meta, g.offsets))).collect()
    }

    /// A coordinator's state after loading `log`: its non-empty groups and
    /// the legacy set.
    fn reload(log: Bytes) -> (BTreeMap<String, Group>, Legacy) {
        let (mut groups, mut legacy) = (BTreeMap::new(), Legacy::new());
        replay(log, &mut groups, &mut legacy).unwrap();
        groups.retain(|_, g| !g.is_empty());
        (groups, legacy)
    }

    #[test]
    fn replay_keeps_the_last_record_of_each_group_and_partition() {
        let mut entries = vec![Entry::meta("a", meta(1, 1))];
        entries.extend(Entry::offsets("a", 5, vec![offset(0, 10), offset(1, 3)]));
        entries.push(Entry::meta("a", meta(2, 1)));
        entries.extend(Entry::offsets("a", 5, vec![offset(0, 12)]));
        entries.extend(Entry::offsets("b", 5, vec![offset(0, 7)]));
        let mut b = Group::default();
        b.offsets.insert(Tp::new("t", 0), Committed { offset: 7, metadata: String::new(), timestamp_ms: 5 });
        entries.extend(Entry::deletion("b", &b, &Legacy::new()));
        entries.extend(Entry::offsets("c", 5, vec![offset(0, 1)]));
        let groups = load(log_of(&entries));
        assert_eq!(groups.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(groups["a"].0, meta(2, 1));
        let offsets: Vec<(u32, u64)> = groups["a"].1.iter().map(|(tp, c)| (tp.partition, c.offset)).collect();
        assert_eq!(offsets, [(0, 12), (1, 3)]);
        assert_eq!(groups["c"].1[&Tp::new("t", 0)].offset, 1);
        // The bytes are the documented layout (storage-format.md §11).
        assert_eq!(Key::Meta("a".into()).encode(), b"\x00\x01a");
        assert_eq!(
            Key::Offset("ab".into(), Tp::new("t", 7)).encode(),
            b"\x00\x02\x02\x00ab\x01\x00t\x07\x00\x00\x00"
        );
        let json = serde_json::to_value(entries[1].value.as_ref().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"offsets","v":1,"group":"a","timestamp_ms":5,
                "offsets":[{"topic":"t","partition":0,"offset":10,"metadata":"m"}]})
        );
        // A deletion is tombstones: null values.
        assert!(Entry::deletion("b", &b, &Legacy::new()).iter().all(|e| e.value.is_none()));
    }

    #[test]
    fn records_from_before_compaction_still_load_and_a_deletion_covers_them() {
        let mut entries = vec![
            legacy(GroupRecord::Group { v: 1, group: "g".into(), state: meta(3, 1) }),
            legacy(GroupRecord::Offsets {
                v: 1,
                group: "g".into(),
                timestamp_ms: 1,
                offsets: vec![offset(0, 4), offset(1, 9)],
            }),
        ];
        let (loaded, legacy_groups) = reload(log_of(&entries));
        assert_eq!(loaded["g"].meta, meta(3, 1));
        assert_eq!(loaded["g"].offsets.len(), 2);
        assert!(legacy_groups.contains("g"), "records keyed by group id mark the group as legacy");
        // A new commit overrides one legacy partition.
        entries.extend(Entry::offsets("g", 2, vec![offset(0, 6)]));
        let loaded = load(log_of(&entries));
        assert_eq!(loaded["g"].1[&Tp::new("t", 0)].offset, 6);
        assert_eq!(loaded["g"].1[&Tp::new("t", 1)].offset, 9);
        // Deleting it writes a legacy group_deleted too: once the
        // tombstones are compacted away, the legacy records stay dead.
        let (groups, legacy_groups) = reload(log_of(&entries));
        let deletion = Entry::deletion("g", &groups["g"], &legacy_groups);
        assert!(matches!(deletion.last(), Some(Entry { key: Key::Legacy(_), value: Some(_) })));
        let without_tombstones: Vec<Entry> = entries
            .iter()
            .filter(|e| matches!(e.key, Key::Legacy(_)))
            .cloned()
            .chain(deletion.iter().filter(|e| e.value.is_some()).cloned())
            .collect();
        assert!(load(log_of(&without_tombstones)).is_empty());
        entries.extend(deletion);
        assert!(load(log_of(&entries)).is_empty());
    }

    #[test]
    fn a_damaged_batch_fails_the_replay() {
        let mut batch = encode(&[Entry::meta("g", meta(1, 0))]).unwrap().to_vec();
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        assert!(replay(Bytes::from(batch), &mut BTreeMap::new(), &mut Legacy::new()).is_err());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Meta(u8, i64, usize),
        Commit(u8, Vec<(u32, u64)>),
        Delete(u8),
        /// A new coordinator: its groups are what it loads.
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..4, 0i64..20, 0usize..2).prop_map(|(g, e, m)| Op::Meta(g, e, m)),
            5 => (0u8..4, proptest::collection::vec((0u32..4, 0u64..1000), 1..4)).prop_map(|(g, o)| Op::Commit(g, o)),
            2 => (0u8..4).prop_map(Op::Delete),
            1 => Just(Op::Restart),
        ]
    }

    /// `log` after compaction passes as storage makes them (fjord-storage
    /// `Log::compact` with [`COMPACTED_KEY_PREFIX`]): each pass maps keys
    /// up to a cut and, below it, removes a record when a later one of its
    /// key is mapped, and drops a tombstone that is last of its key when
    /// `expired` says so; legacy keys are kept as written.
    fn compact(mut log: Vec<(u64, Entry)>, passes: &[(usize, bool)]) -> Vec<(u64, Entry)> {
        for &(cut, expired) in passes {
            let cut = cut.min(log.len());
            let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
            for (o, e) in &log[..cut] {
                last.insert(e.key.encode(), *o);
            }
            let keep = |(i, (o, e)): &(usize, &(u64, Entry))| {
                let k = e.key.encode();
                if *i >= cut || !k.starts_with(COMPACTED_KEY_PREFIX) {
                    return true;
                }
                match last.get(&k) {
                    Some(l) if l > o => false,
                    _ => !(e.value.is_none() && expired),
                }
            };
            log = log.iter().enumerate().filter(keep).map(|(_, r)| r.clone()).collect();
        }
        log
    }

    proptest! {
        /// A coordinator's groups loaded from a compacted offsets log, with
        /// legacy records from before compaction, equal those loaded
        /// from the log as written.
        #[test]
        fn a_compacted_offsets_log_loads_the_same_groups(
            legacy_ops in proptest::collection::vec(op(), 0..12),
            ops in proptest::collection::vec(op(), 1..60),
            passes in proptest::collection::vec((0usize..120, proptest::bool::ANY), 1..4),
        ) {
            let name = |g: u8| format!("g{g}");
            let mut written: Vec<Entry> = Vec::new();
            // Before the upgrade: one record per request, keyed by group id.
            for op in legacy_ops {
                let rec = match op {
                    Op::Meta(g, e, m) => GroupRecord::Group { v: 1, group: name(g), state: meta(e, m) },
                    Op::Commit(g, o) => GroupRecord::Offsets {
                        v: 1,
                        group: name(g),
                        timestamp_ms: 1,
                        offsets: o.into_iter().map(|(p, o)| offset(p, o)).collect(),
                    },
                    Op::Delete(g) => GroupRecord::GroupDeleted { v: 1, group: name(g) },
                    Op::Restart => continue,
                };
                written.push(legacy(rec));
            }
            // After: a coordinator that loaded what is there, writing as
            // the coordinator does and keeping only non-empty groups.
            let (mut groups, mut legacy_groups) = reload(log_of(&written));
            for op in ops {
                let entries = match op {
                    Op::Meta(g, e, m) => vec![Entry::meta(&name(g), meta(e, m))],
                    Op::Commit(g, o) => {
                        Entry::offsets(&name(g), 2, o.into_iter().map(|(p, o)| offset(p, o)).collect())
                    }
                    Op::Delete(g) => match groups.get(&name(g)) {
                        Some(group) => Entry::deletion(&name(g), group, &legacy_groups),
                        None => continue,
                    },
                    Op::Restart => {
                        (groups, legacy_groups) = reload(log_of(&written));
                        continue;
                    }
                };
                for e in &entries {
                    e.clone().apply(&mut groups, &mut legacy_groups);
                }
                groups.retain(|_, g| !g.is_empty());
                written.extend(entries);
            }
            let full = load(log_of(&written));
            let numbered: Vec<(u64, Entry)> = written.into_iter().enumerate().map(|(i, e)| (i as u64, e)).collect();
            let compacted: Vec<Entry> = compact(numbered, &passes).into_iter().map(|(_, e)| e).collect();
            let loaded = load(log_of(&compacted));
            prop_assert_eq!(loaded, full);
        }

        /// Keys read back as written.
        #[test]
        fn keys_round_trip(group in "[a-z.]{1,20}", topic in "[a-z]{1,20}", partition in proptest::num::u32::ANY) {
            for k in [Key::Meta(group.clone()), Key::Offset(group.clone(), Tp::new(&topic, partition)), Key::Legacy(group.clone())] {
                prop_assert_eq!(Key::decode(&k.encode()), Some(k));
            }
        }

        /// Whatever the offsets log holds, replay answers Ok or Err, never panics.
        #[test]
        fn any_bytes_replay_or_fail_cleanly(b in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = replay(Bytes::from(b), &mut BTreeMap::new(), &mut Legacy::new());
        }

        /// A valid batch around arbitrary keys and values replays or fails cleanly.
        #[test]
        fn any_record_replays_or_fails_cleanly(
            k in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            v in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..256)),
        ) {
            let mut b = fjord_codec::BatchBuilder::new(1 << 20);
            b.push(Some(&k), v.as_deref(), &[], 0).unwrap();
            let _ = replay(b.finish(), &mut BTreeMap::new(), &mut Legacy::new());
        }
    }
}
