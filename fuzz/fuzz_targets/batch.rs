//! Arbitrary bytes as a produced batch, a stored batch and a buffer of
//! batches: every decoder must answer `Err`, never panic.
#![no_main]

use bytes::Bytes;
use fjord_codec::{records, split_batches, validate_batch, verified_stamped_prefix, BatchHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // What a leader does to a producer's batch.
    let _ = validate_batch(data, 1 << 20);
    let _ = BatchHeader::parse(data);
    // What a follower does before storing the leader's.
    let _ = verified_stamped_prefix(data, 1, 1, 1);
    // What a consumer does with a fetched one, CRC unchecked on purpose so
    // the record walk sees corrupt lengths too.
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(iter) = records(&bytes) {
        for r in iter {
            if r.is_err() {
                break;
            }
        }
    }
    // A fetch response: many batches back to back.
    for b in split_batches(bytes) {
        if b.is_err() {
            break;
        }
    }
});
