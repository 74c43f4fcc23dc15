//! A paused broker costs writers no more than a dead one: with a
//! partition's leader stopped (SIGSTOP) for longer than a failover takes,
//! `fjord publish` calls made during the pause finish within the failover
//! time, not the pause, and nothing they acknowledged is lost or doubled.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::load::{busiest_leader, connect, read_all};
use common::{fjord, Cluster};

/// How long the leader stays stopped: longer than the 5 s request timeout
/// the writers use, so a call that waits for it is seen.
const PAUSE: Duration = Duration::from_secs(8);
/// The longest a call may take: the failover (an election timeout and a
/// metadata refresh, about 2.5 s) plus a publish, well under the pause.
const STALL_MAX: Duration = Duration::from_secs(6);
const WRITERS: usize = 3;
const RECORDS_PER_CALL: usize = 10;

/// SIGCONTs a stopped process when dropped, on every exit path, so a
/// failing assertion never leaves a broker stopped.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        signal("-STOP", pid);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(sig: &str, pid: u32) {
    let status = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// One `fjord publish` call: when it started, how long it took, whether it
/// succeeded, the values it sent and its stderr.
struct Call {
    started: Instant,
    took: Duration,
    ok: bool,
    values: Vec<String>,
    stderr: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_stalls_writers_no_longer_than_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3);
    let client = connect(&cluster.bootstrap()).await;
    client.create_topic("paused", 1, 3, Default::default()).await.unwrap();
    let victim = busiest_leader(&client, "paused").await;
    // The paused broker first in the bootstrap list, as the worst case for
    // a client that starts during the pause.
    let mut addrs = cluster.addrs.clone();
    addrs.rotate_left(victim as usize - 1);
    let bootstrap = addrs.join(",");

    let stop = Arc::new(AtomicBool::new(false));
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (stop, calls, bootstrap) = (stop.clone(), calls.clone(), bootstrap.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let values: Vec<String> =
                        (0..RECORDS_PER_CALL).map(|i| format!("w{w}-{:08}", n + i)).collect();
                    n += RECORDS_PER_CALL;
                    let input: String = values.iter().map(|v| format!("{v}\n")).collect();
                    let started = Instant::now();
                    let out = fjord(&bootstrap, &["--timeout", "5s", "publish", "paused"], input.as_bytes());
                    calls.lock().unwrap().push(Call {
                        started,
                        took: started.elapsed(),
                        ok: out.status.success(),
                        values,
                        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    });
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(2)).await;
    let paused_at = Instant::now();
    {
        let pid = cluster.brokers[victim as usize - 1].as_ref().unwrap().pid();
        let _stopped = Stopped::stop(pid);
        tokio::time::sleep(PAUSE).await;
    } // SIGCONT
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }

    let calls = std::mem::take(&mut *calls.lock().unwrap());
    let during: Vec<&Call> =
        calls.iter().filter(|c| c.started >= paused_at && c.started < paused_at + PAUSE).collect();
    let longest = calls.iter().map(|c| c.took).max().unwrap();
    eprintln!(
        "{} calls, {} started during the pause; longest {longest:?}; per call: {:?}",
        calls.len(),
        during.len(),
        calls.iter().map(|c| c.took.as_millis()).collect::<Vec<_>>()
    );
    assert!(during.len() >= WRITERS, "writers kept calling during the pause");
    for c in &calls {
        assert!(c.ok, "a call failed after {:?}: {}", c.took, c.stderr);
    }
    assert!(longest < STALL_MAX, "longest call {longest:?} for a {PAUSE:?} pause");

    // Everything acknowledged is in the log, once.
    let got = read_all(&cluster.bootstrap(), "paused").await;
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, v) in got.values().flatten() {
        *count.entry(v.as_str()).or_default() += 1;
    }
    for v in calls.iter().flat_map(|c| &c.values) {
        assert_eq!(count.get(v.as_str()).copied(), Some(1), "acknowledged {v} is stored exactly once");
    }
}
