#!/usr/bin/env python3
"""RabbitMQ streams client for scripts/bench-peers.sh, with the `rstream` client.

    rabbitmq_stream_bench.py HOST PORT RECORDS RECORD_SIZE WINDOW

The workload of `fjord bench produce` and `fjord bench consume` against one
RabbitMQ stream over the stream protocol: RECORDS records of RECORD_SIZE
bytes written with publisher confirms, at most WINDOW records published
and not yet confirmed at any time (each refill of the window goes out as
one publish frame), then a read of all of them from the first offset. It
prints one JSON object per phase, in the shape `fjord bench --json` and
benches/peers print, so the script parses all alike, plus two fields of
its own: `client_cpu_s`, the CPU time this client process spent in the
phase (the client is pure Python, so it may be the bound), and on the
write phase `publish_frames`, how many publish frames carried the records.
Write latency is per record, from the publish frame that carried it being
handed to the client to its confirm arriving.

It never starts or stops a server: the script does. It connects as the
default guest user, which RabbitMQ accepts from loopback only.
"""
import asyncio
import json
import sys
import time

from rstream import ConfirmationStatus, Consumer, ConsumerOffsetSpecification, OffsetType, Producer, RawMessage

STREAM = "bench"
USER = "guest"
# Chunks the server may deliver before the consumer grants more credit.
READ_CREDIT = 10


def percentile(sorted_values, q):
    """The value at quantile q of an ascending list (nearest rank)."""
    if not sorted_values:
        return 0
    rank = max(1, -(-len(sorted_values) * q // 1))
    return sorted_values[int(rank) - 1]


def phase(kind, records, nbytes, elapsed, cpu, latencies_us=None):
    s = max(elapsed, 1e-9)
    latency = None
    if latencies_us is not None:
        latencies_us.sort()
        latency = {
            "of": "send to confirm, per record",
            "count": len(latencies_us),
            "p50_us": percentile(latencies_us, 0.50),
            "p99_us": percentile(latencies_us, 0.99),
            "max_us": latencies_us[-1] if latencies_us else 0,
        }
    return {
        "kind": kind,
        "records": records,
        "bytes": nbytes,
        "elapsed_s": s,
        "records_per_sec": records / s,
        "mb_per_sec": nbytes / 1e6 / s,
        "latency": latency,
        "client_cpu_s": cpu,
    }


async def write(host, port, records, record_size, window):
    payload = bytes([0x5A]) * record_size
    # sent_at[i]: when the frame carrying publishing id i + 1 was handed over.
    sent_at = [0.0] * records
    latencies_us = []
    state = {"in_flight": 0, "confirmed": 0, "failed": 0, "frames": 0}
    room = asyncio.Event()

    def on_confirm(status: ConfirmationStatus):
        if not status.is_confirmed:
            state["failed"] += 1
        else:
            latencies_us.append(max(1, int((time.perf_counter() - sent_at[status.message_id - 1]) * 1e6)))
            state["confirmed"] += 1
        state["in_flight"] -= 1
        room.set()

    async with Producer(host, port, username=USER, password=USER) as producer:
        await producer.delete_stream(STREAM, missing_ok=True)
        await producer.create_stream(STREAM)
        start, cpu = time.perf_counter(), time.process_time()
        sent = 0
        while sent < records:
            while state["in_flight"] >= window:
                room.clear()
                await room.wait()
            if state["failed"]:
                break
            n = min(window - state["in_flight"], records - sent)
            batch = [RawMessage(payload, publishing_id=sent + i + 1) for i in range(n)]
            now = time.perf_counter()
            for i in range(sent, sent + n):
                sent_at[i] = now
            state["in_flight"] += n
            await producer.send_batch(STREAM, batch, on_publish_confirm=on_confirm)
            state["frames"] += 1
            sent += n
        while state["in_flight"] > 0:
            room.clear()
            await room.wait()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if state["failed"]:
        sys.exit(f"{state['failed']} publishes were not confirmed")
    done = state["confirmed"]
    result = phase("produce", done, done * record_size, elapsed, cpu, latencies_us)
    result["publish_frames"] = state["frames"]
    return result


async def read(host, port, records):
    state = {"records": 0, "bytes": 0}
    done = asyncio.Event()

    def on_message(msg, _context):
        state["records"] += 1
        state["bytes"] += len(msg)
        if state["records"] >= records:
            done.set()

    async with Consumer(host, port, username=USER, password=USER) as consumer:
        start, cpu = time.perf_counter(), time.process_time()
        await consumer.subscribe(
            STREAM,
            on_message,
            offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None),
            initial_credit=READ_CREDIT,
        )
        await done.wait()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return phase("consume", state["records"], state["bytes"], elapsed, cpu)


async def main(argv):
    if len(argv) != 5:
        sys.exit(__doc__)
    host, port, records, record_size, window = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    if records <= 0 or record_size <= 0 or window <= 0:
        sys.exit("RECORDS, RECORD_SIZE and WINDOW must be > 0")
    w = await write(host, port, records, record_size, window)
    print(json.dumps(w), flush=True)
    r = await read(host, port, records)
    if r["records"] != records:
        sys.exit(f"read {r['records']} records, expected {records}")
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
