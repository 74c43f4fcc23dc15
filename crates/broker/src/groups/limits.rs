//! Limits of consumer groups, with their units and why.

/// Partitions of `__consumer_offsets`. Groups spread over them by hash, so
/// this bounds how many brokers share the coordinator load; it is fixed
/// once the topic exists (changing it would move every group).
pub(crate) const OFFSETS_TOPIC_PARTITIONS: u32 = 8;
/// Longest group id, as a topic name: ids appear in logs and tables.
pub(crate) const GROUP_ID_LEN_MAX: usize = 249;
/// Most members of one group. A group's metadata record lists every member
/// with its partitions: 1000 members of a few partitions each stay far
/// below a megabyte of JSON.
pub(crate) const GROUP_MEMBERS_MAX: usize = 1000;
/// Longest member id and client id, bytes: they are stored in every
/// metadata record of the group.
pub(crate) const MEMBER_ID_LEN_MAX: usize = 128;
/// Groups one offsets partition holds (so a coordinator's memory and the
/// replay after a failover are bounded): 80,000 in the cluster.
pub(crate) const GROUPS_PER_PARTITION_MAX: usize = 10_000;
/// How long a member may keep partitions it was asked to give up, ms,
/// before the coordinator removes it and hands them on (KIP-848's
/// rebalance timeout; Kafka's `max.poll.interval.ms` defaults to the same).
pub(crate) const REBALANCE_TIMEOUT_MS: u64 = 300_000;
/// Most topics one member may subscribe to.
pub(crate) const SUBSCRIBED_TOPICS_MAX: usize = 256;
/// Most partitions in one heartbeat's owned list, one commit, or one fetch
/// of offsets (the client consumer's own bound, `ASSIGNED_PARTITIONS_MAX`).
pub(crate) const REQUEST_PARTITIONS_MAX: usize = 4096;
/// Largest metadata string of one committed offset, bytes (Kafka's default
/// `offset.metadata.max.bytes`).
pub(crate) const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Session timeout when the member gives none, ms (KIP-848's default).
pub(crate) const SESSION_TIMEOUT_MS_DEFAULT: u32 = 45_000;
/// Shortest session timeout a member may ask for, ms: below a second a
/// garbage-collection pause or a slow fsync would expire healthy members.
pub(crate) const SESSION_TIMEOUT_MS_MIN: u32 = 1_000;
/// Longest session timeout, ms: a dead member holds its partitions this long.
pub(crate) const SESSION_TIMEOUT_MS_MAX: u32 = 300_000;
/// Bounds of the heartbeat interval the coordinator hands out, ms (a third
/// of the session timeout within them).
pub(crate) const HEARTBEAT_INTERVAL_MS_MIN: u32 = 200;
/// Upper bound of the heartbeat interval, ms (KIP-848's default interval).
pub(crate) const HEARTBEAT_INTERVAL_MS_MAX: u32 = 5_000;
/// Bytes of the offsets partition read per step while loading it.
pub(crate) const LOAD_READ_BYTES: usize = 1024 * 1024;
/// How long a write of group state may wait for its commit, ms.
pub(crate) const WRITE_TIMEOUT_MS: u64 = 10_000;
/// How often the coordinator expires sessions and checks its leadership, ms.
pub(crate) const UPKEEP_INTERVAL_MS: u64 = 200;
/// Most `ListOffsets` calls one request makes to other brokers at a time
/// (a commit of offsets above this broker's replica's high watermark asks
/// their leaders): a commit of [`REQUEST_PARTITIONS_MAX`] partitions then
/// takes at most 128 rounds of them instead of opening 4096 calls at once.
pub(crate) const REMOTE_CALLS_IN_FLIGHT_MAX: usize = 32;
/// How long the coordinator waits for another broker's ListOffsets, ms.
pub(crate) const REMOTE_CALL_TIMEOUT_MS: u64 = 3_000;

const _: () = assert!(HEARTBEAT_INTERVAL_MS_MIN * 3 <= SESSION_TIMEOUT_MS_MIN);
const _: () = assert!((UPKEEP_INTERVAL_MS as u32) < SESSION_TIMEOUT_MS_MIN);
const _: () = assert!(SESSION_TIMEOUT_MS_MIN <= SESSION_TIMEOUT_MS_DEFAULT);
const _: () = assert!(SESSION_TIMEOUT_MS_DEFAULT <= SESSION_TIMEOUT_MS_MAX);
