#!/usr/bin/env python3
"""Instructions per request round trip of a `lattice` binary, counted by callgrind.

Runs the server (1 shard, epoll: valgrind does not emulate io_uring) under
`valgrind --tool=callgrind` twice, once with N and once with 2N Ping round trips on one
connection (Ping is answered by the echo component, so it passes the gate, the service host and a
handler), and reports (I(2N) - I(N)) / N: start-up and shutdown cancel out. Instruction counts do
not depend on the machine's load, so two binaries can be compared on this noisy machine.

    bench/callgrind_rt.py BINARY [BINARY ...] [--n 2000] [--toggle FUNCTION_PATTERN]

With --toggle, only instructions executed inside functions matching the pattern (callgrind's
--toggle-collect, e.g. '*ServiceInstance*handle*') are counted: the cost of one code path per
round trip, free of the timing-dependent work of idle threads and loop passes.
"""
import argparse
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def frame(opcode, rid, body):
    return struct.pack("<IHHI", 12 + len(body), opcode, 0, rid) + body


def pb_bytes(field, data):
    return bytes([field << 3 | 2, len(data)]) + data


def recv_frame(s, buf):
    while True:
        if len(buf) >= 12:
            n = struct.unpack_from("<I", buf)[0]
            if len(buf) >= n:
                f = bytes(buf[:n])
                del buf[:n]
                return struct.unpack_from("<H", f, 4)[0]
        d = s.recv(65536)
        if not d:
            raise RuntimeError("server closed the connection")
        buf.extend(d)


def run(binary, n, version, toggle=None):
    port = free_port()
    out = tempfile.mktemp(prefix="lattice-callgrind.")
    data = tempfile.mkdtemp(prefix="lattice-callgrind-data.")
    p = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         *([f"--toggle-collect={toggle}"] if toggle else []), binary, "run",
         "--net.listen", f"127.0.0.1:{port}", "--admin.listen", "", "--runtime.shards", "1",
         "--runtime.driver", "epoll", "--runtime.pin", "false", "--log.level", "warn",
         "--storage.data_dir", data],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                if time.time() > deadline or p.poll() is not None:
                    raise RuntimeError("server under valgrind did not start")
                time.sleep(0.2)
        buf = bytearray()
        s.sendall(frame(1, 1, pb_bytes(1, version.encode())))
        if recv_frame(s, buf) != 2:
            raise RuntimeError("no Welcome")
        ping = frame(4, 2, pb_bytes(1, b"x" * 32))
        for _ in range(n):
            s.sendall(ping)
            if recv_frame(s, buf) != 5:
                raise RuntimeError("no Pong")
        s.close()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
    text = open(out).read()
    os.unlink(out)
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--version", default="1.0.0-alpha")
    ap.add_argument("--toggle", default=None)
    a = ap.parse_args()
    for b in a.binaries:
        i1 = run(b, a.n, a.version, a.toggle)
        i2 = run(b, 2 * a.n, a.version, a.toggle)
        scope = f" inside {a.toggle}" if a.toggle else ""
        print(f"{b}: {(i2 - i1) / a.n:.0f} instructions per round trip{scope} "
              f"(I({a.n})={i1}, I({2 * a.n})={i2})")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
