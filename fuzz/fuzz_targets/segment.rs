//! Arbitrary bytes as a partition directory's first segment, opened,
//! read end to end and scrubbed: recovery must truncate or refuse, never
//! panic. The first two bytes split the input between the log and its
//! offset index, so damaged indexes are reached too.
#![no_main]

use fjord_codec::format::{LOG_SUFFIX, OFFSET_INDEX_SUFFIX, SEGMENT_NAME_DIGITS};
use fjord_storage::{Log, LogConfig, SEGMENT_BYTES_MIN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (split, rest) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) as usize, rest),
        _ => return,
    };
    let (index, log) = rest.split_at(split.min(rest.len()) / 16 * 16);
    let dir = tempfile::tempdir_in("/dev/shm").expect("a scratch directory");
    let stem = format!("{:0w$}", 0, w = SEGMENT_NAME_DIGITS);
    std::fs::write(dir.path().join(format!("{stem}.{LOG_SUFFIX}")), log).unwrap();
    std::fs::write(dir.path().join(format!("{stem}.{OFFSET_INDEX_SUFFIX}")), index).unwrap();
    let Ok(l) = Log::open(dir.path(), LogConfig { segment_bytes: SEGMENT_BYTES_MIN, ..LogConfig::default() }) else { return };
    let mut at = 0;
    while let Ok(r) = l.read(at, 1 << 20, u64::MAX) {
        if r.next_offset <= at {
            break;
        }
        at = r.next_offset;
    }
    let _ = l.scrub(&mut |_| {});
});
