#!/usr/bin/env python3
"""Same-run reference figures for the benchmark scripts.

    reference.py disk FILE MIB   1 MiB sequential writes of random bytes to FILE:
                                 buffered with one fdatasync at the end, and with
                                 an fdatasync after each write
    reference.py tcp MIB         loopback TCP, one connection, 1 MiB sends
"""
import sys


def disk(argv):
    import os, sys, time
    path, mib = argv[0], int(argv[1])
    block = os.urandom(1 << 20)
    for label, each in (("buffered, one fdatasync at the end", False), ("fdatasync after every 1 MiB write", True)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        start = time.perf_counter()
        for _ in range(mib):
            os.write(fd, block)
            if each:
                os.fdatasync(fd)
        os.fdatasync(fd)
        took = time.perf_counter() - start
        os.close(fd)
        os.unlink(path)
        print(f"disk {label}: {mib * 1.048576 / took:.0f} MB/s ({mib} MiB in {took:.2f} s)")


def tcp(argv):
    import socket, sys, threading, time
    mib = int(argv[0])
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received = [0]
    def receive():
        conn, _ = server.accept()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while True:
            n = conn.recv_into(view)
            if n == 0:
                break
            received[0] += n
        conn.close()
    reader = threading.Thread(target=receive)
    reader.start()
    block = memoryview(bytes(1 << 20))
    sender = socket.create_connection(("127.0.0.1", port))
    start = time.perf_counter()
    for _ in range(mib):
        sender.sendall(block)
    sender.shutdown(socket.SHUT_WR)
    reader.join()
    took = time.perf_counter() - start
    sender.close()
    assert received[0] == mib << 20, received[0]
    print(f"loopback tcp: {received[0] / 1e6 / took:.0f} MB/s ({mib} MiB in {took:.2f} s)")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("disk", "tcp"):
        sys.exit(__doc__)
    {"disk": disk, "tcp": tcp}[sys.argv[1]](sys.argv[2:])
