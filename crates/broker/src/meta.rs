//! Cluster metadata: the state every broker derives from the metadata Raft
//! group's log (group 0), the commands that change it, and replica
//! placement.
//!
//! Commands are JSON in the value of a single-record batch. Applying them
//! is deterministic: every broker that applies the same log reaches the
//! same state, group ids included (they are handed out at apply time).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::topics::TopicSettings;

/// Raft group id of the cluster metadata.
pub(crate) const METADATA_GROUP: u64 = 0;

/// One topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TopicMeta {
    pub(crate) name: String,
    pub(crate) replication_factor: u32,
    pub(crate) settings: TopicSettings,
    /// Raft group of partition `p` is `first_group + p` for the partitions
    /// the topic was created with, and `added_groups[p - created]` for
    /// those added later (handed out when they were added).
    pub(crate) first_group: u64,
    /// Replicas of each partition, preferred leader first.
    pub(crate) assignment: Vec<Vec<u64>>,
    /// Raft groups of the partitions added after creation, in order.
    pub(crate) added_groups: Vec<u64>,
}

impl TopicMeta {
    pub(crate) fn partitions(&self) -> u32 {
        self.assignment.len() as u32
    }

    /// The Raft group of partition `p` (< [`TopicMeta::partitions`]).
    pub(crate) fn group(&self, p: u32) -> u64 {
        let created = (self.assignment.len() - self.added_groups.len()) as u32;
        match p.checked_sub(created) {
            None => self.first_group + p as u64,
            Some(i) => self.added_groups[i as usize],
        }
    }
}

/// A change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Command {
    /// Creates a topic unless one of that name exists.
    CreateTopic { name: String, replication_factor: u32, settings: TopicSettings, assignment: Vec<Vec<u64>> },
    /// Deletes a topic if it exists.
    DeleteTopic { name: String },
    /// Replaces a topic's settings if it exists (the whole validated set,
    /// so applying it does not depend on what was there before).
    AlterTopic { name: String, settings: TopicSettings },
    /// Adds partitions placed on `assignment` to a topic that has exactly
    /// `from` partitions (so a command proposed against a count that
    /// changed meanwhile does nothing). Partitions are never removed.
    AddPartitions { name: String, from: u32, assignment: Vec<Vec<u64>> },
    /// Allocates a producer id: the metadata log offset of this command,
    /// unique and never reused, so applying it changes nothing.
    AllocateProducerId,
}

/// What applying the metadata log produces.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct MetaState {
    pub(crate) topics: BTreeMap<String, TopicMeta>,
    /// Next unused Raft group id (0 is the metadata group).
    pub(crate) next_group: u64,
}

/// What an applied command changed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    Created(TopicMeta),
    Deleted(TopicMeta),
    Altered(TopicMeta),
    /// Partitions `from..` were added to the topic.
    Grown {
        meta: TopicMeta,
        from: u32,
    },
    None,
}

impl MetaState {
    /// Applies one command.
    pub(crate) fn apply(&mut self, cmd: Command) -> Change {
        self.next_group = self.next_group.max(METADATA_GROUP + 1);
        match cmd {
            Command::CreateTopic { name, replication_factor, settings, assignment } => {
                if self.topics.contains_key(&name) {
                    return Change::None;
                }
                let meta = TopicMeta {
                    name: name.clone(),
                    replication_factor,
                    settings,
                    first_group: self.next_group,
                    assignment,
                    added_groups: Vec::new(),
                };
                self.next_group += meta.partitions() as u64;
                self.topics.insert(name, meta.clone());
                Change::Created(meta)
            }
            Command::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(meta) => Change::Deleted(meta),
                None => Change::None,
            },
            Command::AlterTopic { name, settings } => match self.topics.get_mut(&name) {
                Some(meta) => {
                    meta.settings = settings;
                    Change::Altered(meta.clone())
                }
                None => Change::None,
            },
            Command::AddPartitions { name, from, assignment } => match self.topics.get_mut(&name) {
                Some(meta) if meta.partitions() == from && !assignment.is_empty() => {
                    for replicas in assignment {
                        meta.assignment.push(replicas);
                        meta.added_groups.push(self.next_group);
                        self.next_group += 1;
                    }
                    Change::Grown { meta: meta.clone(), from }
                }
                _ => Change::None,
            },
            Command::AllocateProducerId => Change::None,
        }
    }
}

/// Places `partitions` partitions of `rf` replicas on `brokers` (sorted
/// ids): partition `p`'s replicas are consecutive brokers starting at
/// `(offset + p) mod n`, so replicas and preferred leaders (the first
/// replica) spread evenly; `offset` rotates the start from topic to topic.
pub(crate) fn assign(brokers: &[u64], partitions: u32, rf: u32, offset: u64) -> Vec<Vec<u64>> {
    let n = brokers.len();
    assert!(n > 0 && rf as usize <= n, "placement needs rf <= brokers");
    (0..partitions as usize)
        .map(|p| (0..rf as usize).map(|r| brokers[(offset as usize + p + r) % n]).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_spreads_replicas_and_leaders_evenly() {
        // brokers, partitions, replication factor, offset, expected replicas
        type Case<'a> = (&'a [u64], u32, u32, u64, &'a [&'a [u64]]);
        let cases: &[Case] = &[
            (&[1], 2, 1, 0, &[&[1], &[1]]),
            (&[1, 2, 3], 3, 3, 0, &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]]),
            (&[1, 2, 3], 4, 2, 1, &[&[2, 3], &[3, 1], &[1, 2], &[2, 3]]),
            (&[4, 7, 9], 2, 1, 5, &[&[9], &[4]]),
        ];
        for (brokers, partitions, rf, offset, want) in cases {
            let got = assign(brokers, *partitions, *rf, *offset);
            let want: Vec<Vec<u64>> = want.iter().map(|r| r.to_vec()).collect();
            assert_eq!(got, want, "{brokers:?} p={partitions} rf={rf} offset={offset}");
        }
        // 6 partitions on 3 brokers: each broker leads 2 and holds 6 replicas at rf 3.
        let a = assign(&[1, 2, 3], 6, 3, 0);
        for b in [1, 2, 3] {
            assert_eq!(a.iter().filter(|r| r[0] == b).count(), 2);
            assert_eq!(a.iter().flatten().filter(|&&x| x == b).count(), 6);
        }
    }

    #[test]
    fn applying_is_deterministic_and_hands_out_group_ids() {
        let settings = TopicSettings::from_request(None).unwrap();
        let create = |name: &str, parts: u32| Command::CreateTopic {
            name: name.into(),
            replication_factor: 1,
            settings: settings.clone(),
            assignment: assign(&[1], parts, 1, 0),
        };
        let mut a = MetaState::default();
        let mut b = MetaState::default();
        for cmd in [
            create("x", 3),
            create("y", 2),
            create("x", 5),
            Command::DeleteTopic { name: "x".into() },
            create("z", 1),
        ] {
            let json = serde_json::to_vec(&cmd).unwrap();
            a.apply(cmd);
            b.apply(serde_json::from_slice(&json).unwrap());
        }
        assert_eq!(a, b);
        assert_eq!(a.topics["y"].first_group, 4);
        assert_eq!(a.topics["z"].first_group, 6);
        assert!(!a.topics.contains_key("x"));
        assert_eq!(a.next_group, 7);
    }

    #[test]
    fn added_partitions_get_fresh_groups_and_a_stale_add_does_nothing() {
        let settings = TopicSettings::from_request(None).unwrap();
        let create = |name: &str, parts: u32| Command::CreateTopic {
            name: name.into(),
            replication_factor: 1,
            settings: settings.clone(),
            assignment: assign(&[1], parts, 1, 0),
        };
        let add = |from: u32, n: u32| Command::AddPartitions {
            name: "x".into(),
            from,
            assignment: assign(&[1], n, 1, 0),
        };
        let mut s = MetaState::default();
        s.apply(create("x", 2)); // groups 1, 2
        s.apply(create("y", 1)); // group 3
        assert!(matches!(s.apply(add(2, 2)), Change::Grown { from: 2, .. }));
        assert_eq!(s.apply(add(2, 1)), Change::None, "proposed against a stale count");
        let x = &s.topics["x"];
        let groups: Vec<u64> = (0..x.partitions()).map(|p| x.group(p)).collect();
        assert_eq!(groups, [1, 2, 4, 5]);
        assert_eq!(s.next_group, 6);
        assert_eq!(s.topics["y"].group(0), 3);
    }
}
