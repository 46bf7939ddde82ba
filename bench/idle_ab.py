"""Bytes per idle connection of several `lattice` binaries, over TCP and WebSocket, interleaved.

    python3 bench/idle_ab.py before=DIR1/lattice after=DIR2/lattice [--connections 10000]
        [--reps 2] [--transports tcp,ws]

Each run starts one binary (1 shard, core 0), opens N connections that say Hello (WebSocket:
after the upgrade) and then stay idle (`lattice-load --scenario idle` on core 1), and reads the
server's RSS before and after: (after − before) ÷ N, the same measure as `compare.py`'s idle
figure (`compare.idle_run`). Binaries take turns, so drift on a shared machine falls on all of
them alike. `lattice-load` comes from this checkout's release dir.
"""
import argparse, os, statistics, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="name=path/to/lattice")
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--transports", default="tcp,ws", help="comma list of tcp, ws, tls, wss")
    a = ap.parse_args()
    variants = []
    for v in a.variants:
        name, sep, path = v.partition("=")
        if not sep or not os.access(path, os.X_OK):
            sys.exit(f"idle_ab.py: expected name=path/to/lattice (an executable), got {v!r}")
        variants.append((name, path))
    results = {}
    for rep in range(a.reps):
        for name, path in variants:
            for t in a.transports.split(","):
                r = compare.idle_run("lattice", a.connections, a, transport=t, binary=path)
                results.setdefault((name, t), []).append(r["bytes_per_conn"])
                print(f"rep {rep + 1}: {name} {t}: {r['bytes_per_conn']:.0f} B per idle connection", flush=True)
    print("\n| variant | transport | bytes per idle connection (each rep) | median |")
    print("|---|---|---|---:|")
    for (name, t), v in results.items():
        runs = ", ".join(f"{x:.0f}" for x in v)
        print(f"| {name} | {t} | {runs} | {statistics.median(v):.0f} |")


if __name__ == "__main__":
    main()
