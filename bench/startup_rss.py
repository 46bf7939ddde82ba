#!/usr/bin/env python3
"""Start-up resident memory of `lattice run`: VmRSS one second after the admin listener answers.

    bench/startup_rss.py BINARY [BINARY ...] [--runs 3] [-- extra lattice overrides]

Each binary runs with its defaults (one shard per core, embedded SQLite store in a fresh data
directory, no scripts, no alerts) on free loopback ports; the median of --runs starts is printed,
in MiB, with the individual readings.
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def one(binary, extra):
    port, admin = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="lattice-rss.")
    p = subprocess.Popen(
        [binary, "run", "--net.listen", f"127.0.0.1:{port}", "--admin.listen",
         f"127.0.0.1:{admin}", "--storage.data_dir", data, "--log.level", "warn", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", admin), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or p.poll() is not None:
                    raise RuntimeError(f"{binary} did not start")
                time.sleep(0.05)
        time.sleep(1.0)
        return rss_kib(p.pid) / 1024.0
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--runs", type=int, default=3)
    a, extra = ap.parse_known_args()
    extra = [x for x in extra if x != "--"]
    for b in a.binaries:
        xs = [one(b, extra) for _ in range(a.runs)]
        print(f"{b}: median {statistics.median(xs):.1f} MiB VmRSS at start "
              f"(runs: {', '.join(f'{x:.1f}' for x in xs)})")


if __name__ == "__main__":
    main()
