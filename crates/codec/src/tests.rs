//! Round trips, rejection of every malformed field, and a fuzz-style
//! property: no byte string makes the decoder panic.

use bytes::Bytes;
use proptest::prelude::*;

use crate::format::*;
use crate::*;

fn sample() -> Bytes {
    let mut b = BatchBuilder::new(BATCH_LEN_MAX).producer(7, 2, 100);
    b.push(Some(b"k1"), Some(b"v1"), &[("h", Some(b"x")), ("n", None)], 1000).unwrap();
    b.push(None, None, &[], 990).unwrap();
    b.push(None, Some(b""), &[], 1010).unwrap();
    b.finish()
}

fn recrc(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[CRC_START..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn round_trip_keeps_every_field() {
    let batch = sample();
    let h = validate_batch(&batch, BATCH_LEN_MAX).unwrap();
    assert_eq!((h.record_count, h.first_timestamp, h.max_timestamp), (3, 1000, 1010));
    assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (7, 2, 100));
    let mut stamped = batch.to_vec();
    stamp_batch(&mut stamped, 40, 3, 9);
    let h2 = validate_batch(&stamped, BATCH_LEN_MAX).expect("stamping keeps the CRC valid");
    assert_eq!((h2.base_offset, h2.raft_term, h2.raft_index), (40, 3, 9));
    let recs: Vec<Record> = records(&Bytes::from(stamped)).unwrap().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].offset, 40);
    assert_eq!(recs[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(recs[0].headers[0], Header { key: "h".into(), value: Some(Bytes::from_static(b"x")) });
    assert_eq!(recs[0].headers[1].value, None);
    assert_eq!((recs[1].offset, recs[1].timestamp, recs[1].value.clone()), (41, 990, None));
    assert_eq!(recs[2].value.as_deref(), Some(&b""[..]));
}

#[test]
fn stamping_verifies_the_crc_it_arrived_with_and_never_reblesses() {
    let batch = sample();
    let prefix = verified_stamped_prefix(&batch, 40, 3, 9).unwrap();
    let mut stamped = prefix.to_vec();
    stamped.extend_from_slice(&batch[STAMP_END..]);
    validate_batch(&stamped, BATCH_LEN_MAX).expect("the new CRC covers the stamps");
    // A follower restamping the leader's bytes with the same fields writes
    // the same bytes.
    assert_eq!(verified_stamped_prefix(&stamped, 40, 3, 9).unwrap(), prefix);
    // One flipped bit anywhere the CRC covers is refused, not re-blessed.
    for at in CRC_START..batch.len() {
        let mut bad = stamped.clone();
        bad[at] ^= 0x10;
        match verified_stamped_prefix(&bad, 40, 3, 9) {
            Err(Error::CrcMismatch { .. } | Error::Truncated { .. }) => {}
            other => panic!("a flip at byte {at} was accepted: {other:?}"),
        }
    }
    assert!(matches!(verified_stamped_prefix(&stamped[..50], 1, 1, 1), Err(Error::Truncated { .. })));
}

#[test]
fn restamping_moves_a_batch_to_a_new_epoch_and_keeps_it_valid() {
    let mut batch = sample().to_vec();
    restamp_producer(&mut batch, 7, 3, 0);
    let h = validate_batch(&batch, BATCH_LEN_MAX).expect("restamping keeps the CRC valid");
    assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (7, 3, 0));
    assert_eq!(h.record_count, 3);
    let before: Vec<Record> = records(&sample()).unwrap().map(Result::unwrap).collect();
    let after: Vec<Record> = records(&Bytes::from(batch)).unwrap().map(Result::unwrap).collect();
    assert_eq!(before, after, "records are untouched");
}

#[test]
fn builder_refuses_to_exceed_its_limit_and_stays_usable() {
    let mut b = BatchBuilder::new(BATCH_HEADER_LEN + 2 * (RECORD_LEN_MIN + 10));
    b.push(None, Some(&[1; 10]), &[], 0).unwrap();
    b.push(None, Some(&[2; 10]), &[], 0).unwrap();
    let err = b.push(None, Some(&[3; 10]), &[], 0).unwrap_err();
    assert!(matches!(err, Error::TooLarge { what: "batch", .. }), "{err}");
    assert_eq!(b.record_count(), 2);
    assert_eq!(validate_batch(&b.finish(), BATCH_LEN_MAX).unwrap().record_count, 2);
}

#[test]
fn control_batches_hold_one_typed_record() {
    let c = BatchBuilder::control(CONTROL_CONF_CHANGE, b"conf", 5);
    let h = validate_batch(&c, BATCH_LEN_MAX).unwrap();
    assert!(h.is_control());
    let rec = records(&c).unwrap().next().unwrap().unwrap();
    assert_eq!(rec.key.as_deref(), Some(&CONTROL_CONF_CHANGE.to_le_bytes()[..]));
    assert_eq!(rec.value.as_deref(), Some(&b"conf"[..]));
}

#[test]
fn each_corrupt_field_is_rejected_with_its_error() {
    let good = sample().to_vec();
    type Case = (&'static str, Box<dyn Fn(&mut Vec<u8>)>, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        ("flipped payload bit", Box::new(|b| b[BATCH_HEADER_LEN + 5] ^= 1), |e| {
            matches!(e, Error::CrcMismatch { .. })
        }),
        ("bad magic", Box::new(|b| b[MAGIC_AT] = 9), |e| matches!(e, Error::BadMagic { found: 9, .. })),
        ("length too big", Box::new(|b| b[BATCH_LEN_AT + 3] = 0x7f), |e| {
            matches!(e, Error::BadLength { .. })
        }),
        (
            "length too small",
            Box::new(|b| b[BATCH_LEN_AT..BATCH_LEN_AT + 4].copy_from_slice(&8u32.to_le_bytes())),
            |e| matches!(e, Error::BadLength { .. }),
        ),
        (
            "unknown attribute",
            Box::new(|b| {
                b[ATTRIBUTES_AT + 1] = 0x80;
                recrc(b)
            }),
            |e| matches!(e, Error::BadHeader(_)),
        ),
        (
            "compression",
            Box::new(|b| {
                b[ATTRIBUTES_AT] = 2;
                recrc(b)
            }),
            |e| matches!(e, Error::BadHeader(_)),
        ),
        (
            "zero records",
            Box::new(|b| {
                b[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].fill(0);
                recrc(b)
            }),
            |e| matches!(e, Error::BadHeader(_)),
        ),
        (
            "count above records",
            Box::new(|b| {
                b[RECORD_COUNT_AT] = 4;
                recrc(b)
            }),
            |e| matches!(e, Error::BadHeader(_) | Error::BadRecord { index: 3, .. }),
        ),
        (
            "count below records",
            Box::new(|b| {
                b[RECORD_COUNT_AT] = 2;
                recrc(b)
            }),
            |e| matches!(e, Error::BadHeader("bytes follow the last record")),
        ),
        (
            "wrong max timestamp",
            Box::new(|b| {
                b[MAX_TIMESTAMP_AT] ^= 1;
                recrc(b)
            }),
            |e| matches!(e, Error::BadHeader(_)),
        ),
        (
            "record length past batch",
            Box::new(|b| {
                b[BATCH_HEADER_LEN + 2] = 0xff;
                recrc(b)
            }),
            |e| matches!(e, Error::BadRecord { index: 0, .. }),
        ),
        ("short buffer", Box::new(|b| b.truncate(b.len() - 1)), |e| matches!(e, Error::BadLength { .. })),
    ];
    for (name, corrupt, expected) in cases {
        let mut b = good.clone();
        corrupt(&mut b);
        let err = validate_batch(&b, BATCH_LEN_MAX).expect_err(name);
        assert!(expected(&err), "{name}: unexpected error {err}");
    }
    let err = validate_batch(&good, good.len() - 1).unwrap_err();
    assert!(matches!(err, Error::TooLarge { what: "batch", .. }), "{err}");
}

#[test]
fn split_batches_walks_a_buffer_and_stops_at_a_torn_tail() {
    let one = sample();
    let mut buf = Vec::new();
    buf.extend_from_slice(&one);
    buf.extend_from_slice(&one);
    buf.extend_from_slice(&one[..one.len() - 3]);
    let parts: Vec<_> = split_batches(Bytes::from(buf)).collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0].as_ref().unwrap().1, one);
    assert_eq!(parts[1].as_ref().unwrap().1, one);
    assert!(matches!(parts[2], Err(Error::Truncated { .. })));
}

#[test]
fn compressed_batches_round_trip_and_are_smaller_on_text() {
    let text = "GET /api/v1/orders?id=12345 HTTP/1.1 200 0.003s user-agent=fjord-test ".repeat(8);
    let build = |c: Compression| {
        let mut b = BatchBuilder::new(BATCH_LEN_MAX).compression(c);
        for i in 0..100 {
            b.push(Some(format!("k{i}").as_bytes()), Some(text.as_bytes()), &[("h", Some(b"v"))], 1000 + i)
                .unwrap();
        }
        b.finish()
    };
    let plain = build(Compression::None);
    let a: Vec<Record> = records(&plain).unwrap().map(Result::unwrap).collect();
    for codec in [Compression::Lz4, Compression::Zstd] {
        let packed = build(codec);
        assert!(packed.len() * 4 < plain.len(), "{codec}: {} vs {}", packed.len(), plain.len());
        let h = validate_batch(&packed, BATCH_LEN_MAX).unwrap();
        assert_eq!(Compression::from_attributes(h.attributes).unwrap(), codec);
        let b: Vec<Record> = records(&packed).unwrap().map(Result::unwrap).collect();
        assert_eq!(a, b, "{codec}: consumers read identical records");
    }
}

#[test]
fn corrupt_or_oversized_compressed_batches_are_rejected() {
    for codec in [Compression::Lz4, Compression::Zstd] {
        corrupt_or_oversized_batches_are_rejected(codec);
    }
}

fn corrupt_or_oversized_batches_are_rejected(codec: Compression) {
    let mut b = BatchBuilder::new(BATCH_LEN_MAX).compression(codec);
    for i in 0..50 {
        b.push(None, Some("abcabcabc".repeat(20).as_bytes()), &[], i).unwrap();
    }
    let good = b.finish().to_vec();
    // A block that does not decode (its CRC made to match).
    let mut bad = good.clone();
    let n = bad.len();
    bad[COMPRESSED_DATA_AT..n].iter_mut().for_each(|x| *x = 0xff);
    recrc(&mut bad);
    assert!(matches!(validate_batch(&bad, BATCH_LEN_MAX), Err(Error::BadHeader(_))));
    // A declared size above the limit is refused before anything is allocated.
    let mut bomb = good.clone();
    bomb[COMPRESSED_LEN_AT..COMPRESSED_LEN_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    recrc(&mut bomb);
    assert!(matches!(
        validate_batch(&bomb, BATCH_LEN_MAX),
        Err(Error::TooLarge { what: "decompressed records", .. })
    ));
    // A declared size that the block does not decode to.
    let mut short = good;
    let declared = u32::from_le_bytes(short[COMPRESSED_LEN_AT..COMPRESSED_LEN_AT + 4].try_into().unwrap());
    short[COMPRESSED_LEN_AT..COMPRESSED_LEN_AT + 4].copy_from_slice(&(declared + 1).to_le_bytes());
    recrc(&mut short);
    assert!(validate_batch(&short, BATCH_LEN_MAX).is_err());
}

/// key, value, headers, timestamp
type ArbRecord = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>, i64);

fn arb_record() -> impl Strategy<Value = ArbRecord> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::collection::vec(
            ("[a-z]{0,5}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))),
            0..3,
        ),
        -1000i64..1000,
    )
}

proptest! {
    #[test]
    fn built_batches_validate_and_read_back(recs in proptest::collection::vec(arb_record(), 1..20), codec in 0..3u8) {
        let compression = [Compression::None, Compression::Lz4, Compression::Zstd][codec as usize];
        let mut b = BatchBuilder::new(BATCH_LEN_MAX).compression(compression);
        for (k, v, h, ts) in &recs {
            let hs: Vec<(&str, Option<&[u8]>)> = h.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            b.push(k.as_deref(), v.as_deref(), &hs, *ts).unwrap();
        }
        let batch = b.finish();
        validate_batch(&batch, BATCH_LEN_MAX).unwrap();
        let back: Vec<Record> = records(&batch).unwrap().map(Result::unwrap).collect();
        prop_assert_eq!(back.len(), recs.len());
        for (i, (r, (k, v, h, ts))) in back.iter().zip(&recs).enumerate() {
            prop_assert_eq!(r.offset, i as u64);
            prop_assert_eq!(r.timestamp, *ts);
            prop_assert_eq!(r.key.as_deref(), k.as_deref());
            prop_assert_eq!(r.value.as_deref(), v.as_deref());
            let hs: Vec<(String, Option<Vec<u8>>)> = r.headers.iter().map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec()))).collect();
            prop_assert_eq!(&hs, h);
        }
    }

    /// The decoder is fed arbitrary bytes and arbitrary mutations of a valid
    /// batch; it may reject them but must never panic or loop.
    #[test]
    fn decoder_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..400),
                            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                            fix_crc in any::<bool>()) {
        let _ = validate_batch(&raw, BATCH_LEN_MAX);
        let _ = split_batches(Bytes::from(raw.clone())).count();
        if let Ok(it) = records(&Bytes::from(raw)) { let _ = it.count(); }
        let mut b = sample().to_vec();
        for (at, x) in flips { let n = b.len(); b[at % n] ^= x; }
        if fix_crc { recrc(&mut b); }
        let _ = validate_batch(&b, BATCH_LEN_MAX);
        if let Ok(it) = records(&Bytes::from(b)) { let _ = it.count(); }
    }
}

#[test]
fn recompressed_batches_keep_their_header_and_records() {
    let mut b = BatchBuilder::new(BATCH_LEN_MAX).producer(9, 1, 40);
    for i in 0..30 {
        b.push(Some(b"k"), Some("the same words again ".repeat(10).as_bytes()), &[("h", None)], 50 + i)
            .unwrap();
    }
    let plain = b.finish();
    let want: Vec<Record> = records(&plain).unwrap().map(Result::unwrap).collect();
    let before = validate_batch(&plain, BATCH_LEN_MAX).unwrap();
    let mut current = plain.clone();
    for to in [Compression::Zstd, Compression::Lz4, Compression::None, Compression::Zstd] {
        let h = validate_batch(&current, BATCH_LEN_MAX).unwrap();
        current = crate::recompress(&current, &h, to, BATCH_LEN_MAX).unwrap();
        let h = validate_batch(&current, BATCH_LEN_MAX).unwrap();
        assert_eq!(Compression::from_attributes(h.attributes).unwrap(), to);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence, h.record_count, h.max_timestamp),
            (
                before.producer_id,
                before.producer_epoch,
                before.base_sequence,
                before.record_count,
                before.max_timestamp
            )
        );
        let got: Vec<Record> = records(&current).unwrap().map(Result::unwrap).collect();
        assert_eq!(got, want, "{to}");
    }
    assert!(current.len() * 4 < plain.len());
    // A batch already in the codec is returned untouched.
    let h = validate_batch(&current, BATCH_LEN_MAX).unwrap();
    let same = crate::recompress(&current, &h, Compression::Zstd, BATCH_LEN_MAX).unwrap();
    assert_eq!(same, current);
    // Records that fit the limit only compressed cannot be stored plain under it.
    let limit = current.len() + 16;
    assert!(matches!(
        crate::recompress(&current, &h, Compression::None, limit),
        Err(Error::TooLarge { what: "recompressed batch", .. })
    ));
}

proptest! {
    /// Compacting keeps exactly the records asked for, at their offsets
    /// and with every field, in a batch that validates and can be
    /// compacted again; a batch may lose every record.
    #[test]
    fn compacted_batches_keep_exactly_the_chosen_records(
        recs in proptest::collection::vec(arb_record(), 1..20),
        codec in 0..3u8,
        keep1 in proptest::collection::vec(any::<bool>(), 20),
        keep2 in proptest::collection::vec(any::<bool>(), 20),
    ) {
        let compression = [Compression::None, Compression::Lz4, Compression::Zstd][codec as usize];
        let mut b = BatchBuilder::new(BATCH_LEN_MAX).compression(compression).producer(3, 1, 50);
        for (k, v, h, ts) in &recs {
            let hs: Vec<(&str, Option<&[u8]>)> = h.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            b.push(k.as_deref(), v.as_deref(), &hs, *ts).unwrap();
        }
        let mut batch = b.finish().to_vec();
        stamp_batch(&mut batch, 100, 2, 7);
        let original = records(&Bytes::from(batch.clone())).unwrap().map(Result::unwrap).collect::<Vec<_>>();
        let orig_h = BatchHeader::parse(&batch).unwrap();
        let mut current = Bytes::from(batch);
        let mut expected = original.clone();
        for keep in [&keep1, &keep2] {
            let before: Vec<u64> = expected.iter().map(|r| r.offset).collect();
            let out = compact_batch(&current, |k| keep[(k.offset - 100) as usize]).unwrap();
            expected.retain(|r| keep[(r.offset - 100) as usize]);
            let after: Vec<u64> = expected.iter().map(|r| r.offset).collect();
            match out {
                None => prop_assert_eq!(&before, &after, "None only when every record is kept"),
                Some(c) => current = c,
            }
            let h = validate_batch(&current, BATCH_LEN_MAX).unwrap();
            // Everything that places the batch in the log is kept.
            prop_assert_eq!(
                (h.base_offset, h.raft_term, h.raft_index, h.record_count, h.next_offset()),
                (orig_h.base_offset, orig_h.raft_term, orig_h.raft_index, orig_h.record_count, orig_h.next_offset())
            );
            prop_assert_eq!((h.first_timestamp, h.max_timestamp), (orig_h.first_timestamp, orig_h.max_timestamp));
            prop_assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (3, 1, 50));
            let back: Vec<Record> = records(&current).unwrap().map(Result::unwrap).collect();
            prop_assert_eq!(&back, &expected);
        }
    }
}

#[test]
fn control_batches_are_never_compacted_and_producers_cannot_forge_a_compacted_one() {
    let control = BatchBuilder::control(CONTROL_NOOP, b"", 7);
    assert_eq!(compact_batch(&control, |_| false).unwrap(), None);
    // A compacted control batch is refused by the header check.
    let mut forged = control.to_vec();
    let attrs = u16::from_le_bytes([forged[ATTRIBUTES_AT], forged[ATTRIBUTES_AT + 1]]) | ATTR_COMPACTED;
    forged[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_le_bytes());
    recrc(&mut forged);
    assert!(matches!(BatchHeader::parse(&forged), Err(Error::BadHeader(_))));
    // An emptied batch is just a header and still covers its offsets.
    let mut b = BatchBuilder::new(BATCH_LEN_MAX);
    b.push(Some(b"a"), Some(b"1"), &[], 5).unwrap();
    b.push(Some(b"a"), Some(b"2"), &[], 6).unwrap();
    let empty = compact_batch(&b.finish(), |_| false).unwrap().unwrap();
    assert_eq!(empty.len(), BATCH_HEADER_LEN);
    let h = validate_batch(&empty, BATCH_LEN_MAX).unwrap();
    assert!(h.is_compacted() && h.record_count == 2 && h.next_offset() == 2);
    assert_eq!(records(&empty).unwrap().count(), 0);
    // A compacted batch whose offsets are out of order is refused.
    let mut b = BatchBuilder::new(BATCH_LEN_MAX);
    for i in 0..3u8 {
        b.push(Some(&[i]), Some(b"v"), &[], 5).unwrap();
    }
    let kept = compact_batch(&b.finish(), |k| k.offset != 1).unwrap().unwrap().to_vec();
    let mut swapped = kept[..BATCH_HEADER_LEN].to_vec();
    let region = &kept[BATCH_HEADER_LEN..];
    let half = region.len() / 2;
    swapped.extend_from_slice(&region[half..]);
    swapped.extend_from_slice(&region[..half]);
    recrc(&mut swapped);
    assert!(
        matches!(validate_batch(&swapped, BATCH_LEN_MAX), Err(Error::BadRecord { .. })),
        "records out of order"
    );
}
