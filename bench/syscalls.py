"""System calls and server CPU per echo round trip, lattice binaries against the tokio baseline,
counted in one session with the kernel's syscall tracepoints (`perf stat`), which cost far less
than `strace -c` and so change the server's batching less.

    python3 bench/syscalls.py [--bin DIR] [--variants name=DIR/lattice[@driver],...] [--reps 3]
                              [--connections 50] [--depth 16] [--rate 100000] [--duration 5]
                              [--driver uring|epoll] [--shards 1] [--route local]

Same setting as `compare.py`: server pinned to core 0 (1 shard unless --shards), two `lattice-load`
processes on core 1, 100-byte payloads, open loop at --rate (0: closed loop). Runs alternate
between the variants and the baseline; medians are printed with the ratio to the baseline.
Needs `perf` (Debian: linux-perf) and root (tracepoints).
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

CALLS = ["recvfrom", "sendto", "read", "write", "writev", "epoll_wait", "epoll_pwait",
         "io_uring_enter", "futex", "sched_yield"]


def run(kind, binary, a):
    port = compare.free_port()
    driver = a.driver
    if binary and "@" in binary:
        binary, driver = binary.rsplit("@", 1)
    extra = ["--runtime.driver", driver]
    p = compare.start_server(kind, port, cores="0" if a.shards == 1 else "0,1", shards=a.shards,
                             route=a.route, binary=binary, extra=extra if kind != "baseline" else ())
    out = tempfile.mktemp(prefix="perf-syscalls-", suffix=".txt")
    events = ["-e", "raw_syscalls:sys_enter"]
    for c in CALLS:
        events += ["-e", f"syscalls:sys_enter_{c}"]
    stat = subprocess.Popen(["perf", "stat", "-x", ",", "-o", out, "-p", str(p.pid)] + events,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    common = ["--connections", str(a.connections // 2), "--depth", str(a.depth), "--payload", "100",
              "--duration", str(a.duration), "--warmup", "0"]
    if a.rate:
        common += ["--rate", str(a.rate / 2)]
    c0 = compare.cpu_seconds(p.pid)
    reps = compare.harness(port, common)
    c1 = compare.cpu_seconds(p.pid)
    stat.send_signal(2)
    stat.wait()
    compare.stop(p)
    rts = sum(r["responses"] for r in reps)
    counts = {}
    for line in open(out):
        parts = line.strip().split(",")
        if len(parts) > 2 and parts[2].startswith(("raw_syscalls", "syscalls")):
            name = "raw_syscalls" if parts[2].startswith("raw_") else parts[2].split(":")[1][len("sys_enter_"):]
            try:
                counts[name] = int(parts[0])
            except ValueError:
                counts[name] = 0
    os.unlink(out)
    row = {k: v / max(rts, 1) for k, v in counts.items()}
    row["cpu_us"] = (c1 - c0) * 1e6 / max(rts, 1)
    row["rt_per_s"] = sum(r["rt_per_s"] for r in reps)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="", help="dir with lattice, baseline-echo, lattice-load")
    ap.add_argument("--variants", default="",
                    help="name=path/to/lattice[@driver],... (default: DIR/lattice with --driver)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--rate", type=float, default=100000)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--driver", default="uring")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--route", default="local")
    a = ap.parse_args()
    if not shutil.which("perf"):
        sys.exit("syscalls.py: install perf (apt-get install linux-perf)")
    if a.bin:
        compare.BIN = a.bin
    variants = [v.split("=", 1) for v in a.variants.split(",") if v] or [["lattice", f"{compare.BIN}/lattice"]]
    rows = {name: [] for name, _ in variants}
    rows["baseline"] = []
    for i in range(a.reps):
        for name, path in variants:
            rows[name].append(run("lattice", path, a))
        rows["baseline"].append(run("baseline", None, a))
        print(f"  rep {i + 1}: " + ", ".join(
            f"{n} {r[-1]['raw_syscalls']:.3f} syscalls/rt {r[-1]['cpu_us']:.3f} µs/rt" for n, r in rows.items()),
            flush=True)
    keys = ["raw_syscalls"] + CALLS + ["cpu_us", "rt_per_s"]
    names = list(rows)
    print(f"\n# {a.connections} conns x {a.depth}, rate {a.rate:g}/s, {a.duration:g} s, driver {a.driver}, "
          f"{a.shards} shard(s) route {a.route}, median of {a.reps}; per round trip unless noted")
    print("| figure | " + " | ".join(names) + " | " + " | ".join(f"{n} ÷ baseline" for n in names[:-1]) + " |")
    print("|---|" + "---:|" * (2 * len(names) - 1))
    for k in keys:
        med = {n: statistics.median(r.get(k, 0.0) for r in rows[n]) for n in names}
        if all(v == 0 for v in med.values()):
            continue
        b = med["baseline"]
        ratios = [f"{med[n] / b:.2f}" if b else "—" for n in names[:-1]]
        label = "syscalls (all)" if k == "raw_syscalls" else ("server CPU µs" if k == "cpu_us" else
                                                              ("round trips/s" if k == "rt_per_s" else k))
        print(f"| {label} | " + " | ".join(f"{med[n]:.3f}" for n in names) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
