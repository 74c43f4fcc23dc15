#!/usr/bin/env python3
"""Fjord from Python with nothing but grpcio and proto/fjord/v1/fjord.proto.

Usage: fjord_example.py HOST:PORT TOPIC GROUP
(after `fjord topic create TOPIC --partitions 3`)

Publishes 10,000 keyed records with headers, reads them back and checks them
(the partition is Kafka's murmur2 of the key; per-key order holds), then reads
TOPIC as the one member of consumer group GROUP and commits. Exits non-zero
naming the first thing that differed.
"""

import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
RECORDS, KEYS, PER_REQUEST, PARTITIONS = 10_000, 50, 1_000, 3
T = 10  # seconds, every call


def load_stubs():
    """Generates fjord_pb2 and fjord_pb2_grpc from the .proto and imports them."""
    with tempfile.TemporaryDirectory() as out:
        args = [f"-I{PROTO_ROOT}", f"--python_out={out}", f"--grpc_python_out={out}"]
        if protoc.main(["protoc", *args, "fjord/v1/fjord.proto"]) != 0:
            sys.exit(f"protoc failed on {PROTO_ROOT}/fjord/v1/fjord.proto")
        sys.path.insert(0, out)
        from fjord.v1 import fjord_pb2, fjord_pb2_grpc
        sys.path.remove(out)
    return fjord_pb2, fjord_pb2_grpc


pb, rpc = load_stubs()


def check(ok, message):
    if not ok:
        sys.exit(f"fjord_example: {message}")


def murmur2(data):
    """Kafka's Utils.murmur2 (seed 0x9747b28c), as a signed 32-bit int."""
    m, mask, tail = 0x5BD1E995, 0xFFFFFFFF, len(data) & ~3
    h = 0x9747B28C ^ len(data)
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i:i + 4], "little") * m & mask
        h = (h * m & mask) ^ ((k ^ k >> 24) * m & mask)
    if len(data) > tail:
        h = (h ^ int.from_bytes(data[tail:], "little")) * m & mask
    h = (h ^ h >> 13) * m & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


check(murmur2(b"21") == -973932308, "murmur2 disagrees with Kafka's UtilsTest")


def partition_for(key):
    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS  # toPositive(murmur2(key)) % n


def record(i):
    """Record i as (key, value, headers); headers keep order, repeats and nulls."""
    return f"key-{i % KEYS}".encode(), f"value-{i}".encode(), [("n", b"%d" % i), ("n", None)]


def read_to_end(consumer, topic, partition, offset):
    """Reads from offset up to the high watermark: (records, next offset)."""
    records = []
    while True:
        req = pb.ReadRequest(topic=topic, partition=partition, offset=offset, max_records=5000)
        resp = consumer.Read(req, timeout=T)
        records += resp.records
        offset = resp.next_offset  # not last offset + 1: offsets may skip
        if offset >= resp.high_watermark:
            return records, offset


def publish_and_read(channel, topic):
    producer, consumer = rpc.ProducerStub(channel), rpc.ConsumerStub(channel)
    placed = {}  # (partition, offset) -> i
    for first in range(0, RECORDS, PER_REQUEST):
        batch = [record(i) for i in range(first, first + PER_REQUEST)]
        records = [pb.Record(key=k, value=v, headers=[pb.Header(key=n, value=hv) for n, hv in h])
                   for k, v, h in batch]
        resp = producer.Publish(pb.PublishRequest(topic=topic, records=records), timeout=T)
        check(len(resp.results) == len(records), f"{len(resp.results)} results, {len(records)} sent")
        for i, (r, (key, _, _)) in enumerate(zip(resp.results, batch), start=first):
            check(not r.HasField("error"), f"record {i}: {r.error.message}")
            check(r.partition == partition_for(key), f"record {i}: partition {r.partition}, "
                  f"murmur2 says {partition_for(key)}")
            placed[(r.partition, r.offset)] = i
    last = {}  # key -> (partition, i) of the last record read
    for p in range(PARTITIONS):
        for r in read_to_end(consumer, topic, p, 0)[0]:
            i = placed.pop((p, r.offset), None)
            check(i is not None, f"read partition {p} offset {r.offset}: not published, or twice")
            key, value, headers = record(i)
            got = [(h.key, h.value if h.HasField("value") else None) for h in r.headers]
            have, want = (r.partition, r.key, r.value, got), (p, key, value, headers)
            check(have == want, f"partition {p} offset {r.offset}: read {have}, record {i} was {want}")
            prev_p, prev_i = last.get(key, (p, -1))
            check(prev_p == p, f"key {key!r} is on partitions {prev_p} and {p}")
            check(prev_i < i, f"key {key!r}: record {i} is read after record {prev_i}")
            last[key] = (p, i)
    check(not placed, f"{len(placed)} published records were not read, e.g. {next(iter(placed), 0)}")


def consume_as_group_member(channel, topic, group):
    """One member through the loop documented above `service Groups`."""
    consumer = rpc.ConsumerStub(channel)
    found = rpc.GroupsStub(channel).FindCoordinator(pb.FindCoordinatorRequest(group_id=group), timeout=T)
    groups = rpc.GroupsStub(grpc.insecure_channel(found.coordinator_address))
    beat = groups.GroupHeartbeat(pb.GroupHeartbeatRequest(
        group_id=group, member_epoch=0, topics=[topic], client_id="python-example"), timeout=T)
    positions, consumed, deadline = {}, 0, time.monotonic() + 60
    while True:
        assigned = {tp.partition for tp in beat.assigned if tp.topic == topic}
        for p in set(positions) - assigned:  # revoked (its position is committed): drop it
            del positions[p]
        for p in assigned - set(positions):  # new: start at the commit, or at the earliest offset
            tp = pb.TopicPartition(topic=topic, partition=p)
            got = groups.FetchOffsets(pb.FetchOffsetsRequest(group_id=group, partitions=[tp]), timeout=T)
            earliest = pb.ListOffsetsRequest(topic=topic, partition=p, spec=pb.OFFSET_SPEC_EARLIEST)
            start = got.offsets or [consumer.ListOffsets(earliest, timeout=T)]
            positions[p] = start[0].offset
        for p in positions:
            records, positions[p] = read_to_end(consumer, topic, p, positions[p])
            consumed += len(records)  # ...process them here
        commits = [pb.OffsetCommit(topic=topic, partition=p, offset=o) for p, o in positions.items()]
        commit = pb.CommitOffsetsRequest(group_id=group, member_id=beat.member_id,
                                         member_epoch=beat.member_epoch, offsets=commits)
        groups.CommitOffsets(commit, timeout=T)
        if len(positions) == PARTITIONS:
            break  # a real consumer would go on reading and heartbeating
        check(time.monotonic() < deadline, f"after 60 s the member has partitions {sorted(positions)}")
        time.sleep(beat.heartbeat_interval_ms / 1000)
        owned = [pb.TopicPartition(topic=topic, partition=p) for p in positions]
        beat = groups.GroupHeartbeat(pb.GroupHeartbeatRequest(
            group_id=group, member_id=beat.member_id, member_epoch=beat.member_epoch, owned=owned), timeout=T)
    leave = pb.GroupHeartbeatRequest(group_id=group, member_id=beat.member_id, member_epoch=-1)
    groups.GroupHeartbeat(leave, timeout=T)
    got = groups.FetchOffsets(pb.FetchOffsetsRequest(group_id=group), timeout=T).offsets
    committed = {c.partition: c.offset for c in got if c.topic == topic}
    check(committed == positions, f"committed {committed}, the member read up to {positions}")
    check(consumed == RECORDS, f"the member read {consumed} records, {RECORDS} were published")
    return consumed  # offsets also count control batches, such as a Raft leader's no-op


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    addr, topic, group = sys.argv[1:]
    started, channel = time.monotonic(), grpc.insecure_channel(addr)
    try:
        publish_and_read(channel, topic)
        group_read = consume_as_group_member(channel, topic, group)
    except grpc.RpcError as e:
        sys.exit(f"fjord_example: {e.code().name}: {e.details()}")
    print(f"python example ok: {RECORDS} records, group {group} committed {group_read} "
          f"({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
