"""CPU per round trip gate -> logic across two processes (a node link over loopback) against the
in-process mesh, side by side, alternating runs (bench/README.md, "Node links").

Cases, every one at the same fixed open-loop rate, the servers pinned to core 0 and the harness
(two lattice-load processes) to core 1:
- mesh:  one process, 2 shards, echo.route = remote: every Ping and Pong crosses the mesh;
- link:  a gate process (cluster.roles = ["gate"], 1 shard) routing every Ping over a node link to
         a logic process (cluster.roles = ["logic"], 1 shard); replies come back over the link;
- local: one process, 1 shard, echo.route = local (no hop; for reference).
Server CPU per round trip = utime + stime (/proc/PID/stat) of every server process over the run,
divided by every response received.

    python3 bench/cluster.py [--reps 3] [--duration 10] [--rate 20000] [--connections 50] [--depth 4]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (helpers: free_port, wait_port, cpu_seconds, harness, stop)

BIN = compare.BIN


DATA = []  # data directories of the servers of one case, removed when they stop


def start(port, cores, args, name):
    log = open(os.path.join(tempfile.gettempdir(), f"links-bench-{name}-{port}.log"), "w")
    data = tempfile.mkdtemp(prefix=f"links-bench-data-{name}-")
    DATA.append(data)
    cmd = ["taskset", "-c", cores, f"{BIN}/lattice", "run", "--net.listen", f"127.0.0.1:{port}",
           "--listeners.http", "", "--tls.listen", "", "--tls.http_listen", "", "--admin.listen", "",
           "--log.level", "warn",
           "--storage.data_dir", data] + args
    p = subprocess.Popen(cmd, stdout=log, stderr=log)
    compare.wait_port(port, p)
    return p


def run(case, a):
    procs = []
    port = compare.free_port()
    if case == "mesh":
        procs.append(start(port, "0", ["--runtime.shards", "2", "--echo.route", "remote"], "mesh"))
    elif case == "local":
        procs.append(start(port, "0", ["--runtime.shards", "1", "--echo.route", "local"], "local"))
    else:
        lport, internal = compare.free_port(), compare.free_port()
        procs.append(start(lport, "0", [
            "--runtime.shards", "1", "--echo.route", "local",
            "--listeners.extra", f'[{{ addr = "127.0.0.1:{internal}", stack = "binary", session = "internal" }}]',
            "--cluster.node_id", "logic-a", "--cluster.roles", '["logic"]', "--center.node", "logic-a"], "logic"))
        procs.append(start(port, "0", [
            "--runtime.shards", "1", "--cluster.node_id", "gate-1", "--cluster.roles", '["gate"]',
            "--center.node", "gate-1",
            "--cluster.static_peers",
            f'[{{ node_id = "logic-a", roles = ["logic"], internal_addr = "127.0.0.1:{internal}" }}]'], "gate"))
    time.sleep(1.0)  # the link is up well before this
    common = ["--connections", str(a.connections // 2), "--depth", str(a.depth), "--payload", "100",
              "--duration", str(a.duration), "--warmup", "1", "--rate", str(a.rate / 2)]
    c0 = sum(compare.cpu_seconds(p.pid) for p in procs)
    reps = compare.harness(port, common)
    c1 = sum(compare.cpu_seconds(p.pid) for p in procs)
    responses = sum(r["responses"] for r in reps)
    for p in reversed(procs):
        compare.stop(p)
    while DATA:
        shutil.rmtree(DATA.pop(), ignore_errors=True)
    return {"cpu_us_per_rt": (c1 - c0) * 1e6 / max(responses, 1),
            "rt_per_s": sum(r["rt_per_s"] for r in reps),
            "p99_us": max(r["latency_us"]["p99"] for r in reps)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--depth", type=int, default=4)
    a = ap.parse_args()
    rows = {"local": [], "mesh": [], "link": []}
    for rep in range(a.reps):
        for case in ("link", "mesh", "local"):
            r = run(case, a)
            rows[case].append(r)
            print(f"rep {rep + 1} {case:5}: {r['cpu_us_per_rt']:.3f} us CPU/rt, "
                  f"{r['rt_per_s']:.0f} rt/s, p99 {r['p99_us']} us", flush=True)
    med = {c: {k: statistics.median(r[k] for r in v) for k in v[0]} for c, v in rows.items()}
    print(f"\nmedian of {a.reps}, open loop at {a.rate} rt/s, {a.connections} connections x depth {a.depth}")
    print("| figure | link (gate process -> logic process) | mesh (shard -> shard) | local | link / mesh |")
    print("|---|---:|---:|---:|---:|")
    print(f"| server CPU us per round trip | {med['link']['cpu_us_per_rt']:.3f} | "
          f"{med['mesh']['cpu_us_per_rt']:.3f} | {med['local']['cpu_us_per_rt']:.3f} | "
          f"**{med['link']['cpu_us_per_rt'] / med['mesh']['cpu_us_per_rt']:.2f}** |")
    print(f"| round trips/s at the fixed rate | {med['link']['rt_per_s']:.0f} | {med['mesh']['rt_per_s']:.0f} | "
          f"{med['local']['rt_per_s']:.0f} | {med['link']['rt_per_s'] / med['mesh']['rt_per_s']:.2f} |")
    print(f"| p99 us at the fixed rate | {med['link']['p99_us']:.0f} | {med['mesh']['p99_us']:.0f} | "
          f"{med['local']['p99_us']:.0f} | {med['link']['p99_us'] / med['mesh']['p99_us']:.2f} |")


if __name__ == "__main__":
    main()
