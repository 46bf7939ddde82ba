"""Server instructions per echo round trip, TLS against TCP, counted by callgrind.

Wall-clock CPU figures move by 10-20 % on this shared machine; instruction counts do not. The
server runs under `valgrind --tool=callgrind` (1 shard, epoll: valgrind does not model io_uring)
and `lattice-load` sends Pings at a fixed open-loop rate over TCP or TLS, once for a short and
once for a long duration; the difference in instructions divided by the difference in round
trips is the cost of one round trip, with start-up, handshakes and shutdown cancelled out.
Counts are user-space instructions only (the kernel's share, ~85 % of the CPU time here, is not
in them): they measure what TLS adds in the process, not the whole cost. They still move between
runs (by a third here): how many requests one read or one loop pass serves depends on timing, and
the server is ~50 times slower under valgrind. Hence several alternating repetitions and medians.

    python3 bench/callgrind_rt.py [--reps 3] [--rate 2000] [--durations 3,9] [--connections 10]

Uses CARGO_TARGET_DIR (default `target`)/release/{lattice,lattice-load}.
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile

from compare import BIN, free_port, wait_port


def run(transport, duration, a, cert, key, tmp):
    port, admin, tls_port = free_port(), free_port(), free_port()
    out = os.path.join(tmp, f"cg-{transport}-{duration}.out")
    log = open(os.path.join(tmp, f"cg-{transport}-{duration}.log"), "w")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           f"{BIN}/lattice", "run", "--net.listen", f"127.0.0.1:{port}",
           "--admin.listen", f"127.0.0.1:{admin}", "--runtime.shards", "1", "--runtime.pin", "false",
           "--runtime.driver", "epoll", "--log.level", "warn",
           "--storage.data_dir", os.path.join(tmp, f"data-{transport}-{duration}"),
           "--tls.listen", f"127.0.0.1:{tls_port}", "--tls.cert", cert, "--tls.key", key,
           "--tls.handshake_timeout_ms", "120000"]
    p = subprocess.Popen(cmd, stdout=log, stderr=log)
    wait_port(admin, p, timeout=120)
    target = tls_port if transport == "tls" else port
    rep = os.path.join(tmp, f"cg-load-{transport}-{duration}.json")
    load = ["taskset", "-c", "1", f"{BIN}/lattice-load", "--addr", f"127.0.0.1:{target}",
            "--connections", str(a.connections), "--rate", str(a.rate), "--payload", "100",
            "--duration", str(duration), "--warmup", "1", "--quiet", "--report", rep,
            "--max-errors", "0"]
    if transport == "tls":
        load += ["--transport", "tls", "--tls-ca", cert]
    if subprocess.run(load, stdout=subprocess.DEVNULL).returncode != 0:
        p.kill()
        sys.exit(f"lattice-load failed ({transport}, {duration} s)")
    responses = json.load(open(rep))["responses"]
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=300)
    text = open(out).read()
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    if not m:
        sys.exit(f"no instruction total in {out}")
    return int(m.group(1)), responses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--durations", default="3,9")
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    short, long_ = (float(x) for x in a.durations.split(","))
    tmp = tempfile.mkdtemp(prefix="callgrind-rt-")
    subprocess.run([f"{BIN}/lattice", "tool", "gen-cert", "--out", tmp], check=True,
                   stdout=subprocess.DEVNULL)
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    rows = {"tcp": [], "tls": []}
    for rep in range(a.reps):
        for transport in ["tcp", "tls"]:
            i1, r1 = run(transport, short, a, cert, key, tmp)
            i2, r2 = run(transport, long_, a, cert, key, tmp)
            rows[transport].append((i2 - i1) / max(r2 - r1, 1))
            print(f"  rep {rep + 1} {transport}: {i1} Ir / {r1} rt ({short:g} s), {i2} Ir / {r2} rt "
                  f"({long_:g} s): {rows[transport][-1]:.0f} Ir per rt", flush=True)
    tls, tcp = statistics.median(rows["tls"]), statistics.median(rows["tcp"])
    ratios = [s / t for s, t in zip(rows["tls"], rows["tcp"])]
    print(f"\n| server user-space instructions per round trip ({a.connections} conns, "
          f"{a.rate:g} rt/s, callgrind, median of {a.reps}) | TLS 1.3 | TCP | ratio |\n"
          f"|---|---:|---:|---:|")
    print(f"| Ir per round trip | {tls:.0f} | {tcp:.0f} | {tls / tcp:.2f} |")
    print(f"\nratio per repetition: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
