//! Arbitrary bytes as a partition's `raft-state` file (both versions).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fjord_storage::RaftState::decode(data);
});
