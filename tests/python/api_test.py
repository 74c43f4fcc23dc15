#!/usr/bin/env python3
"""Drives a running Fjord broker through its public gRPC API from Python.

Usage: api_test.py HOST:PORT

Uses nothing but stubs generated from proto/fjord/v1/fjord.proto (with
grpc_tools.protoc, into a temporary directory) and grpcio. Record batches
are built and parsed byte by byte from storage-format.md §2-§3, so this
checks that the document, not the Rust codec, is enough to write a client.

Exits 0 when every check passes; any failure raises and exits non-zero with
a message naming what differed.
"""

import atexit
import shutil
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

from grpc_status import rpc_status
import grpc
from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
RPC_TIMEOUT_S = 10

# storage-format.md §2: the 72-byte batch header, all little-endian.
# crc, batch_len, base_offset, raft_term, raft_index, magic, reserved,
# attributes, record_count, first_timestamp, max_timestamp, producer_id,
# producer_epoch, reserved, base_sequence.
HEADER = struct.Struct("<IIQQQBBHIqqqhHi")
HEADER_LEN = 72
assert HEADER.size == HEADER_LEN
MAGIC = 1
ATTR_CONTROL = 1 << 3
RECORD_LEN_MIN = 28  # §3


def generate_stubs():
    """Compiles fjord.proto into a temp dir and imports the modules."""
    out = tempfile.mkdtemp(prefix="fjord-py-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "fjord/v1/fjord.proto",
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed with {rc} on {PROTO_ROOT}/fjord/v1/fjord.proto")
    sys.path.insert(0, out)
    from fjord.v1 import fjord_pb2, fjord_pb2_grpc  # noqa: E402  (generated just above)

    return fjord_pb2, fjord_pb2_grpc


pb, pb_grpc = generate_stubs()


class Record:
    """A user record as sent and as read back."""

    def __init__(self, key, value, timestamp, headers=(), offset=None):
        self.key = key
        self.value = value
        self.timestamp = timestamp
        self.headers = list(headers)  # [(str, bytes | None)]
        self.offset = offset

    def fields(self):
        return (self.key, self.value, self.timestamp, self.headers)

    def __repr__(self):
        return (
            f"Record(offset={self.offset}, key={self.key!r}, value={self.value!r}, "
            f"ts={self.timestamp}, headers={self.headers!r})"
        )


# ---------------------------------------------------------------------------
# Building batches (storage-format.md §2, §3)
# ---------------------------------------------------------------------------


def opt_bytes(b):
    """§1 optional bytes: i32 length (-1 = absent), then the bytes."""
    if b is None:
        return struct.pack("<i", -1)
    return struct.pack("<i", len(b)) + b


def encode_record(i, rec, first_ts):
    body = struct.pack("<Iq", i, rec.timestamp - first_ts)
    body += opt_bytes(rec.key) + opt_bytes(rec.value)
    body += struct.pack("<I", len(rec.headers))
    for hk, hv in rec.headers:
        k = hk.encode("utf-8")
        body += struct.pack("<H", len(k)) + k + opt_bytes(hv)
    return struct.pack("<I", len(body)) + body


def build_batch(records, producer=(-1, -1, -1)):
    """A producer's batch: stamped fields 0, CRC over [4, len); `producer`
    is (producer id, epoch, base sequence), all -1 when not idempotent (§2.4)."""
    assert records, "a batch holds at least one record"
    first_ts = records[0].timestamp
    max_ts = max(r.timestamp for r in records)
    body = b"".join(encode_record(i, r, first_ts) for i, r in enumerate(records))
    batch_len = HEADER_LEN + len(body)
    pid, epoch, seq = producer
    header = HEADER.pack(0, batch_len, 0, 0, 0, MAGIC, 0, 0, len(records), first_ts, max_ts, pid, epoch, 0, seq)
    raw = bytearray(header + body)
    struct.pack_into("<I", raw, 0, zlib.crc32(raw[4:]) & 0xFFFFFFFF)
    return bytes(raw)


# ---------------------------------------------------------------------------
# Parsing batches
# ---------------------------------------------------------------------------


class Reader:
    """Bounded cursor: every length is checked against what is left."""

    def __init__(self, buf, what):
        self.buf, self.pos, self.what = buf, 0, what

    def take(self, n):
        if n < 0 or self.pos + n > len(self.buf):
            raise AssertionError(f"{self.what}: needs {n} bytes at {self.pos}, only {len(self.buf) - self.pos} left")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt):
        s = struct.Struct(fmt)
        return s.unpack(self.take(s.size))

    def opt_bytes(self):
        (n,) = self.unpack("<i")
        if n == -1:
            return None
        assert n >= 0, f"{self.what}: negative length {n}"
        return bytes(self.take(n))

    def done(self):
        return self.pos == len(self.buf)


def parse_batches(buf, from_offset):
    """Parses a FetchResponse.batches blob into user records at or after from_offset.

    Returns (records, batch_headers). Verifies each CRC, the header rules
    of §2 and that the records fill the batch exactly.
    """
    records, headers = [], []
    pos = 0
    while pos < len(buf):
        assert len(buf) - pos >= HEADER_LEN, f"torn batch header at byte {pos} of {len(buf)}"
        h = HEADER.unpack_from(buf, pos)
        (crc, batch_len, base_offset, term, index, magic, res1, attrs, count, first_ts, max_ts) = h[:11]
        res2 = h[13]
        assert HEADER_LEN + RECORD_LEN_MIN <= batch_len <= len(buf) - pos, (
            f"batch at byte {pos}: batch_len {batch_len} outside [100, {len(buf) - pos}]"
        )
        raw = buf[pos : pos + batch_len]
        actual = zlib.crc32(raw[4:]) & 0xFFFFFFFF
        assert crc == actual, f"batch at offset {base_offset}: crc {crc:#010x} != computed {actual:#010x}"
        assert magic == MAGIC and res1 == 0 and res2 == 0, f"batch {base_offset}: magic {magic}, reserved {res1}/{res2}"
        assert attrs & ~ATTR_CONTROL == 0, f"batch {base_offset}: unexpected attributes {attrs:#x}"
        assert max_ts >= first_ts, f"batch {base_offset}: max_timestamp {max_ts} < first_timestamp {first_ts}"
        headers.append(dict(base_offset=base_offset, count=count, attrs=attrs, raw=bytes(raw)))
        r = Reader(raw[HEADER_LEN:], f"records of batch {base_offset}")
        batch_records = []
        for i in range(count):
            (length,) = r.unpack("<I")
            rr = Reader(r.take(length), f"record {i} of batch {base_offset}")
            delta, ts_delta = rr.unpack("<Iq")
            assert delta == i, f"batch {base_offset}: record {i} has offset_delta {delta}"
            key = rr.opt_bytes()
            value = rr.opt_bytes()
            (hcount,) = rr.unpack("<I")
            hdrs = []
            for _ in range(hcount):
                (klen,) = rr.unpack("<H")
                hk = bytes(rr.take(klen)).decode("utf-8")
                hdrs.append((hk, rr.opt_bytes()))
            assert rr.done(), f"batch {base_offset}: record {i} has {len(rr.buf) - rr.pos} trailing bytes"
            batch_records.append(Record(key, value, first_ts + ts_delta, hdrs, base_offset + i))
        assert r.done(), f"batch {base_offset}: records do not fill the batch ({len(r.buf) - r.pos} bytes left)"
        assert batch_records[0].timestamp == first_ts, f"batch {base_offset}: record 0 timestamp delta is not 0"
        assert max(x.timestamp for x in batch_records) == max_ts, f"batch {base_offset}: max_timestamp wrong"
        pos += batch_len
        if attrs & ATTR_CONTROL:
            continue  # control batches carry no user records
        records.extend(x for x in batch_records if x.offset >= from_offset)
    return records, headers


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def error_detail(err):
    """The ErrorDetail of a failed call, read the standard way: the
    grpc-status-details-bin trailer is a google.rpc.Status (decoded by
    grpcio-status, which also checks it agrees with the call's status) whose
    details hold the ErrorDetail as a google.protobuf.Any."""
    status = rpc_status.from_call(err)
    if status is None:
        raise AssertionError(f"status {err.code()} ({err.details()!r}) has no grpc-status-details-bin trailer")
    for any_detail in status.details:
        detail = pb.ErrorDetail()
        if any_detail.Unpack(detail):
            return detail
    raise AssertionError(f"google.rpc.Status of {err.code()} holds no fjord.v1.ErrorDetail: {status}")


ERRORS_CHECKED = []


def expect_error(call, status, code, what):
    """Runs call, which must fail with `status` and an ErrorDetail of `code`."""
    ERRORS_CHECKED.append(what)
    try:
        call()
    except grpc.RpcError as err:
        assert err.code() == status, f"{what}: status {err.code()} ({err.details()!r}), expected {status}"
        detail = error_detail(err)
        assert detail.code == code, (
            f"{what}: ErrorDetail.code {pb.ErrorCode.Name(detail.code)}, expected {pb.ErrorCode.Name(code)}"
        )
        assert detail.message, f"{what}: ErrorDetail.message is empty"
        return detail
    raise AssertionError(f"{what}: succeeded, expected {status}")


def check_records(what, got, want):
    assert len(got) == len(want), f"{what}: read {len(got)} records, sent {len(want)}:\n got {got}\nwant {want}"
    for g, w in zip(got, want):
        assert g.offset == w.offset, f"{what}: record at offset {g.offset}, expected offset {w.offset}"
        assert g.fields() == w.fields(), f"{what}: at offset {g.offset}:\n got {g}\nwant {w}"


def fetch_all(consumer, topic, partition, offset):
    """Fetches from offset up to the high watermark; returns (records, batch headers, hw)."""
    records, headers = [], []
    while True:
        resp = consumer.Fetch(
            pb.FetchRequest(topic=topic, partition=partition, offset=offset, max_bytes=0, min_bytes=0, max_wait_ms=0),
            timeout=RPC_TIMEOUT_S,
        )
        assert resp.topic == topic and resp.partition == partition, f"fetch answered for {resp.topic}/{resp.partition}"
        recs, hdrs = parse_batches(resp.batches, offset)
        records += recs
        headers += hdrs
        if resp.next_offset >= resp.high_watermark:
            return records, headers, resp.high_watermark
        assert resp.next_offset > offset, f"fetch at {offset} made no progress (next_offset {resp.next_offset})"
        offset = resp.next_offset


def list_offset(consumer, topic, partition, spec, ts=0):
    return consumer.ListOffsets(
        pb.ListOffsetsRequest(topic=topic, partition=partition, spec=spec, timestamp_ms=ts), timeout=RPC_TIMEOUT_S
    )


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: api_test.py HOST:PORT")
    addr = sys.argv[1]
    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT_S)
    admin = pb_grpc.AdminStub(channel)
    producer = pb_grpc.ProducerStub(channel)
    consumer = pb_grpc.ConsumerStub(channel)
    topic = "py-api"

    created = admin.CreateTopic(pb.CreateTopicRequest(name=topic, partitions=3), timeout=RPC_TIMEOUT_S)
    assert created.topic.name == topic, f"created {created.topic.name!r}"
    assert [p.partition for p in created.topic.partitions] == [0, 1, 2], f"partitions {created.topic.partitions}"
    expect_error(
        lambda: admin.CreateTopic(pb.CreateTopicRequest(name=topic, partitions=3), timeout=RPC_TIMEOUT_S),
        grpc.StatusCode.ALREADY_EXISTS,
        pb.ERROR_CODE_TOPIC_ALREADY_EXISTS,
        "creating the topic twice",
    )

    # Where each partition's next record goes: the broker may have written
    # control batches (a leader no-op) that take offsets of their own.
    start = [list_offset(consumer, topic, p, pb.OFFSET_SPEC_LATEST).offset for p in range(3)]
    sent = {0: [], 1: [], 2: []}
    bases = {0: [], 1: [], 2: []}  # (base offset, record count) of each batch sent
    raw_sent = {0: [], 1: [], 2: []}  # its bytes
    ts0 = int(time.time() * 1000) - 60_000
    text = "é ✓".encode("utf-8")

    def send(partition, base_offset, records):
        for i, r in enumerate(records):
            r.offset = base_offset + i
        sent[partition].extend(records)
        bases[partition].append((base_offset, len(records)))
        raw_sent[partition].append(build_batch(records))  # deterministic: the bytes that were sent

    # 1. Produce (unary): two partitions in one request.
    a = [
        Record(b"k0", b"v0", ts0, [("h", b"x")]),
        Record(None, b"", ts0 + 5, [("trace-id", b"abc"), ("empty", b""), ("none", None)]),
        Record(b"k2", None, ts0 + 3),  # tombstone, timestamp below the max
        Record(b"", text * 100, ts0 + 10, [("utf8-\u00e9", text)]),
    ]
    b = [Record(bytes([i]) * 3, f"p1-{i}".encode(), ts0 + i) for i in range(5)]
    resp = producer.Produce(
        pb.ProduceRequest(
            correlation_id=42,
            topic=topic,
            acks=pb.ACKS_ALL,
            batches=[
                pb.PartitionBatch(partition=0, batch=build_batch(a)),
                pb.PartitionBatch(partition=1, batch=build_batch(b)),
            ],
        ),
        timeout=RPC_TIMEOUT_S,
    )
    assert resp.correlation_id == 42, f"correlation_id {resp.correlation_id}"
    assert not resp.HasField("error"), f"unary produce carries an in-band error {resp.error}"
    results = {r.partition: r for r in resp.results}
    assert sorted(results) == [0, 1], f"results for partitions {sorted(results)}"
    for p, recs in ((0, a), (1, b)):
        r = results[p]
        assert not r.HasField("error"), f"partition {p}: {r.error}"
        assert r.base_offset == start[p], f"partition {p}: base_offset {r.base_offset}, expected {start[p]}"
        assert r.record_count == len(recs), f"partition {p}: record_count {r.record_count}"
        send(p, r.base_offset, recs)

    # 2. Produce (unary) again to partition 0: offsets continue.
    c = [Record(b"c%d" % i, b"second-%d" % i, ts0 + 100 + i, [("n", str(i).encode())]) for i in range(3)]
    resp = producer.Produce(
        pb.ProduceRequest(topic=topic, batches=[pb.PartitionBatch(partition=0, batch=build_batch(c))]),
        timeout=RPC_TIMEOUT_S,
    )
    (r,) = resp.results
    expected = start[0] + len(a)
    assert r.partition == 0 and r.base_offset == expected, f"second produce at {r.base_offset}, expected {expected}"
    send(0, r.base_offset, c)

    # 3. ProduceStream: two requests on one stream, matched by correlation_id.
    d = [Record(b"d", b"stream-1", ts0 + 200)]
    e = [Record(b"e%d" % i, b"stream-2-%d" % i, ts0 + 300 + i) for i in range(2)]
    f = [Record(b"f", b"stream-2-p2", ts0 + 400)]
    requests = [
        pb.ProduceRequest(
            correlation_id=7, topic=topic, batches=[pb.PartitionBatch(partition=0, batch=build_batch(d))]
        ),
        pb.ProduceRequest(
            correlation_id=8,
            topic=topic,
            batches=[
                pb.PartitionBatch(partition=0, batch=build_batch(e)),
                pb.PartitionBatch(partition=2, batch=build_batch(f)),
            ],
        ),
    ]
    responses = {x.correlation_id: x for x in producer.ProduceStream(iter(requests), timeout=RPC_TIMEOUT_S)}
    assert sorted(responses) == [7, 8], f"stream answered correlation ids {sorted(responses)}"
    for x in responses.values():
        assert not x.HasField("error"), f"stream request {x.correlation_id} failed: {x.error}"
        for pr in x.results:
            assert not pr.HasField("error"), f"stream request {x.correlation_id} partition {pr.partition}: {pr.error}"
    (r7,) = responses[7].results
    r8 = {pr.partition: pr for pr in responses[8].results}
    expected = start[0] + len(a) + len(c)
    assert r7.partition == 0, f"stream request 7 answered partition {r7.partition}"
    assert r7.base_offset == expected, f"stream request 7 at {r7.base_offset}, expected {expected}"
    send(0, r7.base_offset, d)
    expected += len(d)
    assert sorted(r8) == [0, 2], f"stream request 8 answered partitions {sorted(r8)}"
    assert r8[0].base_offset == expected, f"stream request 8 at {r8[0].base_offset}, expected {expected}"
    assert r8[2].base_offset == start[2], f"stream request 8 partition 2 at {r8[2].base_offset}, expected {start[2]}"
    assert (r8[0].record_count, r8[2].record_count) == (2, 1), "stream request 8 record counts"
    send(0, r8[0].base_offset, e)
    send(2, r8[2].base_offset, f)

    # 4. Fetch everything back, byte-parsed, and compare in order.
    ends = {}
    for p in range(3):
        got, headers, hw = fetch_all(consumer, topic, p, start[p])
        check_records(f"partition {p}", got, sent[p])
        ends[p] = start[p] + len(sent[p])
        assert hw == ends[p], f"partition {p}: high watermark {hw}, expected {ends[p]}"
        user = [h for h in headers if not h["attrs"] & ATTR_CONTROL]
        for prev, nxt in zip(headers, headers[1:]):
            assert nxt["base_offset"] == prev["base_offset"] + prev["count"], f"partition {p}: gap in {headers}"
        # Each produced batch comes back whole, stamped with its base offset.
        got_bases = [(h["base_offset"], h["count"]) for h in user]
        assert got_bases == bases[p], f"partition {p}: batches (base, count) {got_bases}, sent {bases[p]}"
        # §2: the broker stamps base_offset, raft_term and raft_index and
        # recomputes the CRC; batch_len and everything from byte 32 on
        # (producer id -1, epoch -1, sequence -1 included) come back as sent.
        for h, want in zip(user, raw_sent[p]):
            got = h["raw"]
            assert got[4:8] == want[4:8] and got[32:] == want[32:], (
                f"partition {p}: batch {h['base_offset']} differs from the bytes sent beyond the stamped fields"
            )
    fetched_p0 = len(sent[0])

    # A fetch from inside a batch: the batch is returned whole, the
    # records below the offset are skipped by the client.
    mid = start[0] + 2
    resp = consumer.Fetch(pb.FetchRequest(topic=topic, partition=0, offset=mid), timeout=RPC_TIMEOUT_S)
    first_base = HEADER.unpack_from(resp.batches, 0)[2]
    assert first_base == start[0], f"fetch at {mid}: first batch starts at {first_base}, expected {start[0]}"
    got, _ = parse_batches(resp.batches, mid)
    check_records(f"fetch at {mid}", got, sent[0][2 : 2 + len(got)])
    assert got, f"fetch at {mid} returned no records"
    # Fetch at the high watermark with no wait: empty, not an error.
    resp = consumer.Fetch(pb.FetchRequest(topic=topic, partition=0, offset=ends[0]), timeout=RPC_TIMEOUT_S)
    assert resp.batches == b"" and resp.next_offset == ends[0], f"fetch at the end: {len(resp.batches)} bytes"

    # 5. ListOffsets and DescribeTopic.
    for p in range(3):
        earliest = list_offset(consumer, topic, p, pb.OFFSET_SPEC_EARLIEST)
        latest = list_offset(consumer, topic, p, pb.OFFSET_SPEC_LATEST)
        assert earliest.offset == 0, f"partition {p}: EARLIEST {earliest.offset}"
        assert latest.offset == ends[p], f"partition {p}: LATEST {latest.offset}, expected {ends[p]}"
        assert latest.high_watermark == ends[p], f"partition {p}: high_watermark {latest.high_watermark}"
    at = list_offset(consumer, topic, 0, pb.OFFSET_SPEC_TIMESTAMP, ts0 + 101)
    assert at.offset == c[1].offset, f"TIMESTAMP {ts0 + 101}: offset {at.offset}, expected {c[1].offset}"
    desc = admin.DescribeTopic(pb.DescribeTopicRequest(name=topic), timeout=RPC_TIMEOUT_S).topic
    assert desc.name == topic and len(desc.partitions) == 3, f"described {desc.name!r} with {len(desc.partitions)}"
    for pd in desc.partitions:
        assert pd.high_watermark == ends[pd.partition], f"described partition {pd.partition}: hw {pd.high_watermark}"
        assert pd.log_end_offset == ends[pd.partition], f"described partition {pd.partition}: leo {pd.log_end_offset}"
    names = [t.name for t in admin.ListTopics(pb.ListTopicsRequest(), timeout=RPC_TIMEOUT_S).topics]
    assert topic in names, f"ListTopics: {names}"

    # 6. Errors, typed by the ErrorDetail in the status details.
    expect_error(
        lambda: consumer.Fetch(pb.FetchRequest(topic="no-such-topic", partition=0, offset=0), timeout=RPC_TIMEOUT_S),
        grpc.StatusCode.NOT_FOUND,
        pb.ERROR_CODE_UNKNOWN_TOPIC,
        "fetch from an unknown topic",
    )
    expect_error(
        lambda: producer.Produce(
            pb.ProduceRequest(topic="no-such-topic", batches=[pb.PartitionBatch(partition=0, batch=build_batch(d))]),
            timeout=RPC_TIMEOUT_S,
        ),
        grpc.StatusCode.NOT_FOUND,
        pb.ERROR_CODE_UNKNOWN_TOPIC,
        "produce to an unknown topic",
    )
    expect_error(
        lambda: consumer.Fetch(pb.FetchRequest(topic=topic, partition=3, offset=0), timeout=RPC_TIMEOUT_S),
        grpc.StatusCode.NOT_FOUND,
        pb.ERROR_CODE_UNKNOWN_PARTITION,
        "fetch from partition 3 of 3",
    )
    past = ends[0] + 5
    detail = expect_error(
        lambda: consumer.Fetch(pb.FetchRequest(topic=topic, partition=0, offset=past), timeout=RPC_TIMEOUT_S),
        grpc.StatusCode.OUT_OF_RANGE,
        pb.ERROR_CODE_OFFSET_OUT_OF_RANGE,
        f"fetch at {past}, past the end",
    )
    assert detail.log_end_offset == ends[0], f"out of range: log_end_offset {detail.log_end_offset}, want {ends[0]}"
    assert detail.log_start_offset == 0, f"out of range: log_start_offset {detail.log_start_offset}"

    good = build_batch([Record(b"bad", b"flipped", ts0 + 500, [("h", b"v")])])
    for pos in (HEADER_LEN + 30, 0, len(good) - 1):  # a value byte, the crc itself, the last byte
        corrupt = bytearray(good)
        corrupt[pos] ^= 0x01
        expect_error(
            lambda: producer.Produce(
                pb.ProduceRequest(topic=topic, batches=[pb.PartitionBatch(partition=0, batch=bytes(corrupt))]),
                timeout=RPC_TIMEOUT_S,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.ERROR_CODE_CORRUPT_BATCH,
            f"produce of a batch with byte {pos} flipped",
        )
    # A request with one good and one corrupt batch writes neither.
    corrupt = bytearray(good)
    corrupt[HEADER_LEN + 30] ^= 0x80
    expect_error(
        lambda: producer.Produce(
            pb.ProduceRequest(
                topic=topic,
                batches=[
                    pb.PartitionBatch(partition=1, batch=good),
                    pb.PartitionBatch(partition=2, batch=bytes(corrupt)),
                ],
            ),
            timeout=RPC_TIMEOUT_S,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        pb.ERROR_CODE_CORRUPT_BATCH,
        "produce of a good and a corrupt batch",
    )
    # On a stream the failure is in-band and the stream goes on.
    stream = list(
        producer.ProduceStream(
            iter(
                [
                    pb.ProduceRequest(
                        correlation_id=1, topic=topic, batches=[pb.PartitionBatch(partition=0, batch=bytes(corrupt))]
                    ),
                    pb.ProduceRequest(
                        correlation_id=2, topic=topic, batches=[pb.PartitionBatch(partition=2, batch=good)]
                    ),
                ]
            ),
            timeout=RPC_TIMEOUT_S,
        )
    )
    by_id = {x.correlation_id: x for x in stream}
    assert sorted(by_id) == [1, 2], f"stream with a corrupt batch answered {sorted(by_id)}"
    assert by_id[1].error.code == pb.ERROR_CODE_CORRUPT_BATCH, f"in-band error {by_id[1].error}"
    assert not by_id[1].results, f"failed stream request has results {by_id[1].results}"
    (ok,) = by_id[2].results
    assert not ok.HasField("error") and ok.base_offset == ends[2], f"stream request after the failure: {ok}"
    send(2, ok.base_offset, [Record(b"bad", b"flipped", ts0 + 500, [("h", b"v")])])
    ends[2] += 1

    # 7. An idempotent producer (§2.4): a retry is answered with the first
    # copy's offsets and not stored again; a sequence gap is refused.
    init = producer.InitProducer(pb.InitProducerRequest(), timeout=RPC_TIMEOUT_S)
    assert init.producer_id >= 0 and init.producer_epoch == 0, f"InitProducer answered {init}"
    idem = [Record(b"idem", b"once", ts0 + 600)]
    idem_batch = build_batch(idem, (init.producer_id, 0, 0))

    def produce_one(batch):
        req = pb.ProduceRequest(topic=topic, batches=[pb.PartitionBatch(partition=1, batch=batch)])
        (res,) = producer.Produce(req, timeout=RPC_TIMEOUT_S).results
        return res

    first = produce_one(idem_batch)
    assert not first.HasField("error") and not first.duplicate, f"idempotent produce: {first}"
    retry = produce_one(idem_batch)
    assert retry.duplicate and retry.base_offset == first.base_offset, f"retry of an idempotent batch: {retry}"
    gap = produce_one(build_batch([Record(b"idem", b"gap", ts0 + 601)], (init.producer_id, 0, 5)))
    assert gap.error.code == pb.ERROR_CODE_OUT_OF_ORDER_SEQUENCE, f"sequence gap answered {gap}"
    send(1, first.base_offset, idem)
    ends[1] = first.base_offset + 1

    # Nothing corrupt, and nothing twice, reached the logs.
    for p in range(3):
        got, _, hw = fetch_all(consumer, topic, p, start[p])
        check_records(f"partition {p} after the error cases", got, sent[p])
        assert hw == ends[p], f"partition {p} after the error cases: hw {hw}, expected {ends[p]}"

    total = sum(len(v) for v in sent.values())
    print(
        f"python api test ok: {total} records in 3 partitions "
        f"(partition 0: {fetched_p0} records at offsets {start[0]}..{ends[0]}), "
        f"produce/produce-stream/fetch/list-offsets/describe, an idempotent retry "
        f"and {len(ERRORS_CHECKED) + 1} typed errors checked"
    )


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    except grpc.RpcError as e:
        print(f"FAILED: unexpected gRPC error {e.code()}: {e.details()}", file=sys.stderr)
        sys.exit(1)
