//! The membership protocol with an injected clock: joins, incremental
//! handoff, leaves, session expiry, fencing and commit checks.

use std::cell::Cell;

use super::*;

const TIMEOUT_MS: u32 = 3_000;

struct World {
    group: Group,
    partitions: Cell<u32>,
    next_id: Cell<u32>,
    now: Instant,
}

impl World {
    fn new(partitions: u32) -> World {
        World {
            group: Group::default(),
            partitions: Cell::new(partitions),
            next_id: Cell::new(0),
            now: Instant::now(),
        }
    }

    fn beat(&mut self, id: &str, epoch: i64, owned: &[u32]) -> Result<Reply> {
        let hb = Heartbeat {
            member_id: id.into(),
            member_epoch: epoch,
            topics: vec!["t".into()],
            owned: owned.iter().map(|p| Tp::new("t", *p)).collect(),
            session_timeout_ms: TIMEOUT_MS,
            ..Heartbeat::default()
        };
        let n = self.partitions.get();
        let next = &self.next_id;
        let new_id = || {
            next.set(next.get() + 1);
            format!("m{}", next.get())
        };
        self.group.heartbeat("g", hb, &|t| (t == "t").then_some(n), &new_id, self.now)
    }

    /// A heartbeat that must succeed; returns (epoch, assigned partitions).
    fn ok(&mut self, id: &str, epoch: i64, owned: &[u32]) -> (i64, Vec<u32>) {
        let r = self.beat(id, epoch, owned).unwrap();
        assert_eq!(r.member_id, if id.is_empty() { r.member_id.clone() } else { id.to_string() });
        (r.member_epoch, r.assigned.iter().map(|tp| tp.partition).collect())
    }

    fn join(&mut self) -> (String, i64, Vec<u32>) {
        let r = self.beat("", 0, &[]).unwrap();
        (r.member_id, r.member_epoch, r.assigned.iter().map(|tp| tp.partition).collect())
    }
}

#[test]
fn a_partition_moves_only_after_its_owner_releases_it() {
    let mut w = World::new(6);
    let (a, ea, got) = w.join();
    assert_eq!(got, [0, 1, 2, 3, 4, 5], "a lone member gets everything");
    assert_eq!(w.group.state(), GroupState::Stable);
    let r = w.beat("", 0, &[]).unwrap();
    let (b, eb, got) = (r.member_id, r.member_epoch, r.assigned);
    assert!(got.is_empty(), "b gets nothing while a holds all: {got:?}");
    assert_eq!(r.heartbeat_interval_ms, HEARTBEAT_INTERVAL_MS_MIN, "a waiting member asks again soon");
    assert_eq!(w.group.state(), GroupState::Assigning);
    // a's heartbeat revokes three partitions, keeps the other three.
    let (ea2, kept) = w.ok(&a, ea, &[0, 1, 2, 3, 4, 5]);
    assert_eq!(kept.len(), 3);
    assert!(ea2 > ea, "a's epoch moves with its assignment");
    // Still owned by a (it has not reported them released): b waits.
    let (_, got) = w.ok(&b, eb, &[]);
    assert!(got.is_empty(), "{got:?}");
    // a reports it released them; b's next heartbeat gets them.
    let (ea3, kept2) = w.ok(&a, ea2, &kept.clone());
    assert_eq!((ea3, &kept2), (ea2, &kept), "a, unaffected, keeps its epoch and partitions");
    let (eb2, got) = w.ok(&b, eb, &[]);
    let mut all: Vec<u32> = kept.iter().chain(got.iter()).copied().collect();
    all.sort();
    assert_eq!(all, [0, 1, 2, 3, 4, 5]);
    // b's epoch is already the group epoch it joined at: granting it
    // freed partitions does not bump the group epoch.
    assert_eq!(eb2, w.group.meta.epoch);
    assert_eq!(eb2, eb);
    assert_eq!(w.group.state(), GroupState::Stable);
}

#[test]
fn leaving_frees_partitions_at_once_and_expiry_after_the_session() {
    let mut w = World::new(4);
    let (a, ea, _) = w.join();
    let (ea, _) = w.ok(&a, ea, &[0, 1, 2, 3]);
    let (b, eb, _) = w.join();
    let (ea, kept) = w.ok(&a, ea, &[0, 1, 2, 3]);
    let (ea, _) = w.ok(&a, ea, &kept);
    let (eb, got_b) = w.ok(&b, eb, &[]);
    assert_eq!(got_b.len(), 2);
    // b leaves: a gets everything on its next heartbeat, no waiting.
    let r = w.beat(&b, LEAVE_EPOCH, &got_b).unwrap();
    assert_eq!(r.member_epoch, LEAVE_EPOCH);
    let (ea, got) = w.ok(&a, ea, &kept);
    assert_eq!(got, [0, 1, 2, 3]);
    assert_eq!(
        w.beat(&b, eb, &[]).unwrap_err().to_string(),
        format!("member {b:?} is not in group \"g\"; rejoin")
    );
    // c joins, a stops heartbeating: after the session timeout a is removed.
    let (c, ec, _) = w.join();
    w.now += Duration::from_millis(TIMEOUT_MS as u64 / 2);
    let (ec, _) = w.ok(&c, ec, &[]);
    assert!(w.group.expire(w.now, &|_| Some(4)).is_empty(), "nobody expired yet");
    w.now += Duration::from_millis(TIMEOUT_MS as u64 / 2 + 1);
    assert_eq!(w.group.expire(w.now, &|_| Some(4)), vec![a.clone()]);
    let (_, got) = w.ok(&c, ec, &[]);
    assert_eq!(got, [0, 1, 2, 3], "c takes over everything of the expired member");
    assert!(matches!(w.beat(&a, ea, &[0, 1, 2, 3]), Err(Error::UnknownMember { .. })));
}

#[test]
fn stale_epochs_fence_and_commits_need_ownership() {
    let mut w = World::new(2);
    let (a, ea, _) = w.join();
    let (b, eb, _) = w.join();
    let (ea, kept) = w.ok(&a, ea, &[0, 1]);
    assert_eq!(kept.len(), 1);
    // a may commit what it holds (also a revoked partition it still owns),
    // with its current or previous epoch; nothing else.
    let revoked = Tp::new("t", if kept[0] == 0 { 1 } else { 0 });
    w.group.check_commit("g", &a, ea, &[revoked.clone(), Tp::new("t", kept[0])]).unwrap();
    let e = w.group.check_commit("g", &a, ea + 7, &[]).unwrap_err();
    assert!(matches!(e, Error::StaleMemberEpoch(_)), "{e}");
    let e = w.group.check_commit("g", &b, eb, std::slice::from_ref(&revoked)).unwrap_err();
    assert!(e.to_string().contains("does not own t/"), "{e}");
    let e = w.group.check_commit("g", "", LEAVE_EPOCH, &[revoked]).unwrap_err();
    assert!(matches!(e, Error::GroupNotEmpty { members: 2, .. }), "{e}");
    assert!(matches!(w.group.check_commit("g", "nobody", 1, &[]), Err(Error::UnknownMember { .. })));
    // A heartbeat with a stale epoch removes the member, freeing its partitions.
    let e = w.beat(&a, ea + 100, &kept).unwrap_err();
    assert!(matches!(e, Error::StaleMemberEpoch(_)), "{e}");
    let (_, got) = w.ok(&b, eb, &[]);
    assert_eq!(got, [0, 1]);
}

#[test]
fn new_partitions_are_assigned_without_a_rejoin() {
    let mut w = World::new(2);
    let (a, ea, got) = w.join();
    assert_eq!(got, [0, 1]);
    let epoch = w.group.meta.epoch;
    w.partitions.set(3);
    let (_, got) = w.ok(&a, ea, &[0, 1]);
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(w.group.meta.epoch, epoch + 1);
}

#[test]
fn bad_heartbeats_are_refused_with_the_field_named() {
    let mut w = World::new(1);
    let mut hb =
        Heartbeat { member_epoch: 0, session_timeout_ms: 10, topics: vec!["t".into()], ..Default::default() };
    let e = w.group.heartbeat("g", hb.clone(), &|_| Some(1), &|| "x".into(), w.now).unwrap_err();
    assert!(e.to_string().contains("session_timeout_ms 10"), "{e}");
    hb.session_timeout_ms = 0;
    hb.topics.clear();
    let e = w.group.heartbeat("g", hb.clone(), &|_| Some(1), &|| "x".into(), w.now).unwrap_err();
    assert!(e.to_string().contains("topics"), "{e}");
    hb.topics = vec!["t".into()];
    hb.assignor = "nope".into();
    let e = w.group.heartbeat("g", hb, &|_| Some(1), &|| "x".into(), w.now).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    assert!(w.group.is_empty(), "refused joins leave no trace");
}

#[test]
fn a_member_that_never_releases_revoked_partitions_is_removed_after_the_rebalance_timeout() {
    let mut w = World::new(4);
    let (a, ea, _) = w.join();
    let (b, eb, got) = w.join();
    assert!(got.is_empty());
    // a keeps heartbeating (its session stays alive) but keeps reporting
    // every partition owned, as an application that stopped polling would.
    let (mut ea, _) = w.ok(&a, ea, &[0, 1, 2, 3]);
    let step = Duration::from_millis(TIMEOUT_MS as u64 / 2);
    let counts = |t: &str| (t == "t").then_some(4);
    let started = w.now;
    while w.group.meta.members.contains_key(&a) {
        w.now += step;
        let expired = w.group.expire(w.now, &counts);
        let waited = w.now.duration_since(started);
        if waited < Duration::from_millis(REBALANCE_TIMEOUT_MS) {
            assert!(expired.is_empty(), "{expired:?} removed after only {waited:?}");
            ea = w.ok(&a, ea, &[0, 1, 2, 3]).0;
        } else {
            assert_eq!(expired, std::slice::from_ref(&a), "a is removed once the rebalance timeout passed");
        }
        w.ok(&b, eb, &[]);
    }
    let (_, got) = w.ok(&b, eb, &[]);
    assert_eq!(got, [0, 1, 2, 3], "b gets what a would not give up");
}

#[test]
fn a_member_naming_no_assignor_takes_the_groups() {
    let mut w = World::new(2);
    let hb = |id: &str, assignor: &str| Heartbeat {
        member_id: id.into(),
        member_epoch: 0,
        topics: vec!["t".into()],
        assignor: assignor.into(),
        session_timeout_ms: TIMEOUT_MS,
        ..Heartbeat::default()
    };
    let counts = |t: &str| (t == "t").then_some(2);
    w.group.heartbeat("g", hb("a", "range"), &counts, &|| "x".into(), w.now).unwrap();
    assert_eq!(w.group.meta.assignor, "range");
    w.group.heartbeat("g", hb("b", ""), &counts, &|| "y".into(), w.now).unwrap();
    let e = w.group.heartbeat("g", hb("c", "round-robin"), &counts, &|| "z".into(), w.now).unwrap_err();
    assert!(e.to_string().contains("join with assignor \"range\""), "{e}");
}
