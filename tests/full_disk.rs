//! A nearly full disk refuses writes instead of killing partitions: on a
//! real 64 MiB filesystem, `fjord publish` fills one topic until the
//! broker refuses with a message saying the disk is nearly full; the
//! broker, its other topic and its metadata keep serving; deleting the
//! topic frees the space, and writes resume without a restart, with every
//! acknowledged record of the other topic read back.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fjord, fjord_ok, Broker};

/// Size of the test filesystem.
const VOLUME: &str = "64m";
/// Records of `keep` written before and after the disk fills.
const KEEP_RECORDS: usize = 1000;

/// A tmpfs mounted for the test; unmounted (lazily, so a straggler cannot
/// keep it) when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(at: &Path) -> Result<Mount, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={VOLUME}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Mount(at.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn lines(prefix: &str, n: usize, size: usize) -> String {
    (0..n).map(|i| format!("{prefix}-{i:06}-{}\n", "x".repeat(size))).collect()
}

#[test]
fn a_full_disk_refuses_produce_and_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mount = match Mount::new(&dir.path().join("volume")) {
        Ok(m) => m,
        Err(why) => {
            println!("skipped: a full-disk test needs a small filesystem and {why}");
            return;
        }
    };
    // The broker is dropped (killed) before the mount, fields in reverse order.
    let mut broker = Broker::start(&mount.0.join("data"), &["--maintenance-interval", "1s"]);
    let addr = broker.addr.clone();
    fjord_ok(&addr, &["topic", "create", "keep", "--partitions", "1"], b"");
    fjord_ok(&addr, &["topic", "create", "fill", "--partitions", "2", "--segment-bytes", "4194304"], b"");
    fjord_ok(&addr, &["publish", "keep"], lines("keep", KEEP_RECORDS / 2, 100).as_bytes());

    // Fill: 1 MiB per publish until the broker refuses.
    let chunk = lines("fill", 1024, 1000);
    let mut refusal = None;
    for _ in 0..80 {
        let out = fjord(&addr, &["publish", "fill"], chunk.as_bytes());
        if !out.status.success() {
            refusal = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
    }
    let refusal = refusal.expect("64 MiB filled up without a refusal");
    let last = refusal.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("disk nearly full") && last.contains("min_free_bytes"),
        "the refusal says why in its error line: {refusal}"
    );
    let log = broker.log();
    assert!(log.contains("disk nearly full"), "one log line on the change:\n{log}");
    assert!(!log.contains("poison"), "no partition was poisoned:\n{log}");

    // Reads and metadata keep working, and the refusal is not a partition failure.
    let kept = fjord_ok(&addr, &["tail", "keep", "--from-beginning"], b"");
    assert_eq!(kept.lines().count(), KEEP_RECORDS / 2);
    let d = fjord_ok(&addr, &["topic", "describe", "fill"], b"");
    assert!(d.contains("fill"), "{d}");

    // Free space: delete the topic. Writes resume without a restart.
    fjord_ok(&addr, &["topic", "delete", "fill"], b"");
    let mut resumed = false;
    for _ in 0..50 {
        if fjord(&addr, &["publish", "keep"], lines("after", KEEP_RECORDS / 2, 100).as_bytes())
            .status
            .success()
        {
            resumed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(resumed, "publish resumed after the delete:\n{}", broker.log());
    assert!(broker.log().contains("disk space recovered"), "{}", broker.log());
    let kept = fjord_ok(&addr, &["tail", "keep", "--from-beginning"], b"");
    let expected: String = lines("keep", KEEP_RECORDS / 2, 100) + &lines("after", KEEP_RECORDS / 2, 100);
    assert_eq!(kept, expected, "every acknowledged record of keep, in order");
    assert!(broker.is_running());
    broker.kill();
    drop(mount);
}
