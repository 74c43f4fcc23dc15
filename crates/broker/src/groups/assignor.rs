//! Partition assignors: pure functions from a group's members (their
//! subscriptions and current partitions) and the partition counts of the
//! subscribed topics to a target assignment. No I/O, no clock, no
//! randomness: the same input gives the same output on every broker, so a
//! coordinator that replays the log computes what its predecessor did.
//!
//! - `range`: per topic, the members subscribed to it (sorted by id) get
//!   contiguous ranges, the first ones one partition more (Kafka's RangeAssignor).
//! - `round-robin`: every subscribed partition, sorted by topic and
//!   partition, dealt in turn to the next member subscribed to its topic.
//! - `sticky` (the default): every member keeps the partitions it has if
//!   they are still valid, new or freed partitions go to the least loaded
//!   member, then the fewest partitions move until the partition counts of
//!   members that could trade differ by at most one.

use std::collections::{BTreeMap, BTreeSet};

use super::state::Tp;
use crate::{Error, Result};

/// Which assignor a group uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Assignor {
    Range,
    RoundRobin,
    Sticky,
}

impl Assignor {
    /// Parses a request's assignor name; "" is the default (sticky).
    pub(crate) fn parse(name: &str) -> Result<Assignor> {
        match name {
            "" | "sticky" => Ok(Assignor::Sticky),
            "range" => Ok(Assignor::Range),
            "round-robin" | "roundrobin" => Ok(Assignor::RoundRobin),
            other => Err(Error::InvalidArgument(format!(
                "assignor {other:?} is unknown; use \"range\", \"round-robin\" or \"sticky\""
            ))),
        }
    }

    /// The canonical name, as stored and described.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "round-robin",
            Assignor::Sticky => "sticky",
        }
    }
}

/// One member as an assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberSpec {
    /// Subscribed topics.
    pub(crate) topics: BTreeSet<String>,
    /// Partitions it has now (used by `sticky` only).
    pub(crate) current: BTreeSet<Tp>,
}

/// Member id → assigned partitions, every member present (possibly empty).
pub(crate) type Assignment = BTreeMap<String, BTreeSet<Tp>>;

/// Computes the target assignment. `partitions` holds the partition count
/// of every topic that exists; subscribed topics missing from it get nothing.
pub(crate) fn assign(
    kind: Assignor,
    members: &BTreeMap<String, MemberSpec>,
    partitions: &BTreeMap<String, u32>,
) -> Assignment {
    let mut out: Assignment = members.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    match kind {
        Assignor::Range => range(members, partitions, &mut out),
        Assignor::RoundRobin => round_robin(members, partitions, &mut out),
        Assignor::Sticky => sticky(members, partitions, &mut out),
    }
    out
}

fn subscribers<'a>(members: &'a BTreeMap<String, MemberSpec>, topic: &str) -> Vec<&'a String> {
    members.iter().filter(|(_, m)| m.topics.contains(topic)).map(|(id, _)| id).collect()
}

fn range(members: &BTreeMap<String, MemberSpec>, partitions: &BTreeMap<String, u32>, out: &mut Assignment) {
    for (topic, &count) in partitions {
        let subs = subscribers(members, topic);
        if subs.is_empty() {
            continue;
        }
        let (per, extra) = (count as usize / subs.len(), count as usize % subs.len());
        let mut next = 0u32;
        for (i, m) in subs.iter().enumerate() {
            let n = per + usize::from(i < extra);
            for p in next..next + n as u32 {
                out.get_mut(*m).expect("member present").insert(Tp::new(topic, p));
            }
            next += n as u32;
        }
    }
}

fn round_robin(
    members: &BTreeMap<String, MemberSpec>,
    partitions: &BTreeMap<String, u32>,
    out: &mut Assignment,
) {
    let ids: Vec<&String> = members.keys().collect();
    if ids.is_empty() {
        return;
    }
    let mut cursor = 0usize;
    for (topic, &count) in partitions {
        if subscribers(members, topic).is_empty() {
            continue;
        }
        for p in 0..count {
            // The next member in circular order subscribed to this topic.
            while !members[ids[cursor % ids.len()]].topics.contains(topic) {
                cursor += 1;
            }
            out.get_mut(ids[cursor % ids.len()]).expect("member present").insert(Tp::new(topic, p));
            cursor += 1;
        }
    }
}

fn sticky(members: &BTreeMap<String, MemberSpec>, partitions: &BTreeMap<String, u32>, out: &mut Assignment) {
    let valid = |m: &MemberSpec, tp: &Tp| {
        m.topics.contains(&tp.topic) && partitions.get(&tp.topic).is_some_and(|&n| tp.partition < n)
    };
    // 1. Keep what members have, if still valid and not claimed twice.
    let mut taken: BTreeSet<Tp> = BTreeSet::new();
    for (id, m) in members {
        for tp in &m.current {
            if valid(m, tp) && taken.insert(tp.clone()) {
                out.get_mut(id).expect("member present").insert(tp.clone());
            }
        }
    }
    // 2. Unowned partitions, the most constrained (fewest eligible
    //    members) first, each to its least loaded eligible member.
    let mut free: Vec<(usize, Tp)> = Vec::new();
    for (topic, &count) in partitions {
        let eligible = subscribers(members, topic).len();
        if eligible == 0 {
            continue;
        }
        for p in 0..count {
            let tp = Tp::new(topic, p);
            if !taken.contains(&tp) {
                free.push((eligible, tp));
            }
        }
    }
    free.sort();
    for (_, tp) in free {
        let target = members
            .iter()
            .filter(|(_, m)| m.topics.contains(&tp.topic))
            .map(|(id, _)| id)
            .min_by_key(|id| (out[*id].len(), (*id).clone()))
            .expect("at least one eligible member")
            .clone();
        out.get_mut(&target).expect("member present").insert(tp);
    }
    // 3. Move one partition at a time from the most to the least loaded
    //    member that can take it, while their loads differ by more than
    //    one. Each move lowers the sum of squared loads, so this ends.
    loop {
        let mut best: Option<(usize, String, String, Tp)> = None;
        for (from, have) in out.iter() {
            for (to, m) in members {
                if to == from || have.len() < out[to].len() + 2 {
                    continue;
                }
                let gap = have.len() - out[to].len();
                // The highest such partition moves: the lower ones, kept, stay contiguous.
                let Some(tp) = have.iter().rev().find(|tp| m.topics.contains(&tp.topic)) else { continue };
                let better = match &best {
                    None => true,
                    Some((g, ..)) => gap > *g,
                };
                if better {
                    best = Some((gap, from.clone(), to.clone(), tp.clone()));
                }
            }
        }
        let Some((_, from, to, tp)) = best else { break };
        out.get_mut(&from).expect("member present").remove(&tp);
        out.get_mut(&to).expect("member present").insert(tp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(topics: &[&str], current: &[(&str, u32)]) -> MemberSpec {
        MemberSpec {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            current: current.iter().map(|(t, p)| Tp::new(t, *p)).collect(),
        }
    }

    fn members(list: &[(&str, MemberSpec)]) -> BTreeMap<String, MemberSpec> {
        list.iter().map(|(id, m)| (id.to_string(), m.clone())).collect()
    }

    fn counts(list: &[(&str, u32)]) -> BTreeMap<String, u32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    /// "a0 a1 b2" style rendering of one member's partitions.
    fn render(set: &BTreeSet<Tp>) -> String {
        set.iter().map(|tp| format!("{}{}", tp.topic, tp.partition)).collect::<Vec<_>>().join(" ")
    }

    fn check_complete(a: &Assignment, ms: &BTreeMap<String, MemberSpec>, parts: &BTreeMap<String, u32>) {
        let mut seen = BTreeSet::new();
        for (id, set) in a {
            for tp in set {
                assert!(ms[id].topics.contains(&tp.topic), "{id} got {tp:?} it does not subscribe to");
                assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
            }
        }
        for (t, &n) in parts {
            if ms.values().any(|m| m.topics.contains(t)) {
                for p in 0..n {
                    assert!(seen.contains(&Tp::new(t, p)), "{t}/{p} unassigned");
                }
            }
        }
    }

    #[test]
    fn table_of_assignments() {
        // assignor, members (id, topics, current), partition counts, expected per member in id order
        type Case<'a> = (Assignor, Vec<(&'a str, MemberSpec)>, Vec<(&'a str, u32)>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                Assignor::Range,
                vec![("m1", spec(&["a"], &[])), ("m2", spec(&["a"], &[]))],
                vec![("a", 5)],
                vec!["a0 a1 a2", "a3 a4"],
            ),
            (
                Assignor::Range,
                vec![("m1", spec(&["a", "b"], &[])), ("m2", spec(&["a", "b"], &[]))],
                vec![("a", 3), ("b", 3)],
                // Range is per topic: the first member gets the extra of both.
                vec!["a0 a1 b0 b1", "a2 b2"],
            ),
            (
                Assignor::RoundRobin,
                vec![("m1", spec(&["a", "b"], &[])), ("m2", spec(&["a", "b"], &[]))],
                vec![("a", 3), ("b", 3)],
                vec!["a0 a2 b1", "a1 b0 b2"],
            ),
            (
                Assignor::RoundRobin,
                vec![("m1", spec(&["a"], &[])), ("m2", spec(&["b"], &[]))],
                vec![("a", 2), ("b", 1), ("c", 4)],
                vec!["a0 a1", "b0"],
            ),
            (
                Assignor::Sticky,
                vec![("m1", spec(&["a"], &[])), ("m2", spec(&["a"], &[])), ("m3", spec(&["a"], &[]))],
                vec![("a", 6)],
                vec!["a0 a3", "a1 a4", "a2 a5"],
            ),
            (
                // Different subscriptions: m1 can only take a; balance still reached.
                Assignor::Sticky,
                vec![("m1", spec(&["a"], &[])), ("m2", spec(&["a", "b"], &[]))],
                vec![("a", 2), ("b", 2)],
                vec!["a0 a1", "b0 b1"],
            ),
            (
                // A partition of a topic that no longer exists, or beyond the
                // count, or unsubscribed, is dropped; the rest stays put.
                Assignor::Sticky,
                vec![
                    ("m1", spec(&["a"], &[("a", 0), ("a", 9), ("gone", 0)])),
                    ("m2", spec(&["a"], &[("a", 1)])),
                ],
                vec![("a", 2)],
                vec!["a0", "a1"],
            ),
        ];
        for (i, (kind, ms, parts, want)) in cases.into_iter().enumerate() {
            let (ms, parts) = (members(&ms), counts(&parts));
            let got = assign(kind, &ms, &parts);
            check_complete(&got, &ms, &parts);
            let got: Vec<String> = got.values().map(render).collect();
            assert_eq!(got, want, "case {i} ({kind:?})");
        }
    }

    #[test]
    fn every_assignor_balances_homogeneous_groups_and_is_deterministic() {
        for kind in [Assignor::Range, Assignor::RoundRobin, Assignor::Sticky] {
            for n_members in 1..=7usize {
                for n_parts in [1u32, 5, 6, 12, 13] {
                    let ms: BTreeMap<String, MemberSpec> =
                        (0..n_members).map(|i| (format!("m{i}"), spec(&["t"], &[]))).collect();
                    let parts = counts(&[("t", n_parts)]);
                    let a = assign(kind, &ms, &parts);
                    check_complete(&a, &ms, &parts);
                    let loads: Vec<usize> = a.values().map(BTreeSet::len).collect();
                    let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
                    assert!(max - min <= 1, "{kind:?} {n_members} members {n_parts} parts: {loads:?}");
                    assert_eq!(a, assign(kind, &ms, &parts), "{kind:?} is deterministic");
                }
            }
        }
    }

    /// Partitions whose owner differs between two assignments.
    fn moved(before: &Assignment, after: &Assignment) -> usize {
        let owner = |a: &Assignment| -> BTreeMap<Tp, String> {
            a.iter().flat_map(|(m, s)| s.iter().map(move |tp| (tp.clone(), m.clone()))).collect()
        };
        let (b, a) = (owner(before), owner(after));
        a.iter().filter(|(tp, m)| b.get(*tp).is_some_and(|old| old != *m)).count()
    }

    #[test]
    fn sticky_moves_only_the_minimum_on_join_and_leave() {
        let parts = counts(&[("t", 12)]);
        let mut ms: BTreeMap<String, MemberSpec> =
            (0..3).map(|i| (format!("m{i}"), spec(&["t"], &[]))).collect();
        let mut current = assign(Assignor::Sticky, &ms, &parts);
        // Joins: 3 → 4 members moves 3 partitions (12/4 = 3 to the newcomer), 4 → 6 moves 4.
        for (join, want_moves) in [("m3", 3), ("m4", 2), ("m5", 2)] {
            for (id, m) in ms.iter_mut() {
                m.current = current[id].clone();
            }
            ms.insert(join.to_string(), spec(&["t"], &[]));
            let next = assign(Assignor::Sticky, &ms, &parts);
            assert_eq!(moved(&current, &next), want_moves, "join {join}");
            assert_eq!(next[join].len(), 12 / ms.len(), "the newcomer gets its share");
            current = next;
        }
        // A leave: only the leaver's partitions move (nobody else's changes).
        ms.remove("m1");
        for (id, m) in ms.iter_mut() {
            m.current = current[id].clone();
        }
        let next = assign(Assignor::Sticky, &ms, &parts);
        assert_eq!(moved(&current, &next), current["m1"].len(), "only m1's partitions move");
        for (id, set) in &next {
            assert!(current[id].is_subset(set), "{id} kept everything");
        }
        let loads: Vec<usize> = next.values().map(BTreeSet::len).collect();
        assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1, "{loads:?}");
    }

    #[test]
    fn assignor_names_parse() {
        assert_eq!(Assignor::parse("").unwrap(), Assignor::Sticky);
        for a in [Assignor::Range, Assignor::RoundRobin, Assignor::Sticky] {
            assert_eq!(Assignor::parse(a.name()).unwrap(), a);
        }
        let e = Assignor::parse("cooperative").unwrap_err();
        assert!(e.to_string().contains("cooperative"), "{e}");
    }
}
