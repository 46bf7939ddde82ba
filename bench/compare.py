"""Runs lattice and the baseline alternately under lattice-load and prints figures and ratios.

Server pinned to core 0 (1 shard), harness = two lattice-load processes pinned to core 1 (one
generator process saturates before the server does). Server CPU time per round trip comes from
/proc/PID/stat (utime+stime) over the whole harness run divided by every response received, at a
fixed open-loop rate, so it stays meaningful when the harness is the bottleneck.
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

def target_dir():
    """The cargo target dir (CARGO_TARGET_DIR, a cargo config, or ./target): ask cargo."""
    if os.environ.get("CARGO_TARGET_DIR"):
        return os.environ["CARGO_TARGET_DIR"]
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          capture_output=True, text=True, check=True)
    return json.loads(meta.stdout)["target_directory"]


TARGET = target_dir()
BIN = os.path.join(TARGET, "release")
HZ = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"server exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"server on {port} did not start")


def cpu_split(pid):
    """(user, system) CPU seconds of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / HZ, int(fields[12]) / HZ


def cpu_seconds(pid):
    return sum(cpu_split(pid))


def status_kib(pid, key):
    """A `KEY: N kB` line of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


_CERT = None


def dev_cert(binary=None):
    """A development certificate from `lattice tool gen-cert` (made once per run): (cert, key)."""
    global _CERT
    if _CERT is None:
        d = tempfile.mkdtemp(prefix="compare-tls-")
        subprocess.run([binary or f"{BIN}/lattice", "tool", "gen-cert", "--out", d], check=True,
                       stdout=subprocess.DEVNULL)
        _CERT = (os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"))
    return _CERT


def transport_args(transport, binary=None):
    """Where the harness connects for `transport` (tcp, ws, tls, wss) and the server options that
    open that listener on a free port: (port or None for net.listen, server args)."""
    if transport == "tcp":
        return None, []
    port = free_port()
    if transport == "ws":
        return port, ["--listeners.http", f"127.0.0.1:{port}"]
    cert, key = dev_cert(binary)
    key_ = "--tls.listen" if transport == "tls" else "--tls.http_listen"
    return port, [key_, f"127.0.0.1:{port}", "--tls.cert", cert, "--tls.key", key,
                  # 10 000 handshakes at once from one harness thread can take longer than the
                  # default 10 s on a loaded machine.
                  "--tls.handshake_timeout_ms", "120000"]


def load_transport_args(transport):
    """lattice-load options for `transport` (tcp, ws, tls, wss)."""
    if transport in ("tls", "wss"):
        return ["--transport", transport, "--tls-ca", dev_cert()[0]]
    if transport == "ws":
        return ["--transport", "ws"]
    return []


def start_server(kind, port, cores="0", shards=1, route="local", binary=None, extra=()):
    log = open(os.path.join(tempfile.gettempdir(), f"compare-{kind}-{port}.log"), "w")
    if kind == "baseline":
        cmd = ["taskset", "-c", cores, f"{BIN}/baseline-echo", "--listen", f"127.0.0.1:{port}",
               "--threads", str(shards)]
    else:
        # Listeners other than net.listen are off unless `extra` opens them (the defaults bind
        # fixed ports).
        cmd = ["taskset", "-c", cores, binary or f"{BIN}/lattice", "run", "--net.listen", f"127.0.0.1:{port}",
               "--listeners.http", "", "--tls.listen", "", "--tls.http_listen", "",
               "--admin.listen", "", "--runtime.shards", str(shards), "--echo.route", route,
               "--log.level", "warn"] + list(extra)
    p = subprocess.Popen(cmd, stdout=log, stderr=log)
    # Probe through the admin-free path: the first connection is harmless (closed at once).
    wait_port(port, p)
    time.sleep(0.3)
    return p


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def harness(port, args, procs=2, core="1"):
    """Runs `procs` lattice-load processes; returns their JSON reports."""
    outs, ps = [], []
    for i in range(procs):
        rep = os.path.join(tempfile.gettempdir(), f"compare-load-{port}-{i}.json")
        outs.append(rep)
        ps.append(subprocess.Popen(
            ["taskset", "-c", core, f"{BIN}/lattice-load", "--addr", f"127.0.0.1:{port}", "--quiet",
             "--report", rep, "--max-errors", "0"] + args,
            stdout=subprocess.DEVNULL))
    for p in ps:
        if p.wait() != 0:
            sys.exit("lattice-load reported errors")
    return [json.load(open(r)) for r in outs]


def echo_run(kind, a, shards=1, route="local", cores="0", hcore="1", binary=None, transport="tcp"):
    port = free_port()
    tport, extra = transport_args(transport, binary)
    p = start_server(kind, port, cores, shards, route, binary, extra)
    port = tport or port
    per = a.rate / 2
    common = ["--connections", str(a.connections // 2), "--depth", str(a.depth), "--payload", "100",
              "--duration", str(a.duration), "--warmup", "1"] + load_transport_args(transport)
    c0 = cpu_seconds(p.pid)
    reps = harness(port, common + ["--rate", str(per)], core=hcore)
    c1 = cpu_seconds(p.pid)
    responses = sum(r["responses"] for r in reps)
    p99 = max(r["latency_us"]["p99"] for r in reps)
    # Closed loop right after: throughput (skipped with --closed-duration 0).
    reps2 = None
    if a.closed_duration != 0:
        closed = common[:]
        if a.closed_duration is not None:
            closed[closed.index("--duration") + 1] = str(a.closed_duration)
        w0, (u2, s2) = time.monotonic(), cpu_split(p.pid)
        reps2 = harness(port, closed, core=hcore)
        w1, (u3, s3) = time.monotonic(), cpu_split(p.pid)
        c2, c3 = u2 + s2, u3 + s3
    peak = status_kib(p.pid, "VmHWM")
    stop(p)
    return {
        "cpu_us_per_rt": (c1 - c0) * 1e6 / max(responses, 1),
        "open_rt_per_s": sum(r["rt_per_s"] for r in reps),
        "open_p99_us": p99,
        "closed_rt_per_s": sum(r["rt_per_s"] for r in reps2) if reps2 else float("nan"),
        "closed_p99_us": max(r["latency_us"]["p99"] for r in reps2) if reps2 else float("nan"),
        # Whether the server or the harness was the limit in the closed loop: the server's CPU
        # seconds over the wall seconds of that run (1.0 = its core was busy the whole time;
        # the wall time includes the harness's start-up and warm-up, so this reads a little low).
        "closed_cpu_share": (c3 - c2) / (w1 - w0) if reps2 else float("nan"),
        "closed_cpu_us_per_rt": (c3 - c2) * 1e6 / max(sum(r["responses"] for r in reps2), 1)
        if reps2 else float("nan"),
        # The same split into user space and the kernel (utime, stime).
        "closed_user_us_per_rt": (u3 - u2) * 1e6 / max(sum(r["responses"] for r in reps2), 1)
        if reps2 else float("nan"),
        "closed_sys_us_per_rt": (s3 - s2) * 1e6 / max(sum(r["responses"] for r in reps2), 1)
        if reps2 else float("nan"),
        "peak_rss_kib": peak,
    }


def idle_run(kind, n, a, transport="tcp", binary=None):
    port = free_port()
    tport, extra = transport_args(transport, binary)
    p = start_server(kind, port, extra=extra, binary=binary)
    port = tport or port
    time.sleep(0.5)
    before = status_kib(p.pid, "VmRSS")
    # TLS: every connection does a full handshake first (one harness thread), so allow longer.
    hold, settle = (40, 35) if transport in ("tls", "wss") else (8, 6)
    load = subprocess.Popen(
        ["taskset", "-c", "1", f"{BIN}/lattice-load", "--addr", f"127.0.0.1:{port}", "--scenario", "idle",
         "--connections", str(n), "--sources", "8", "--duration", str(hold), "--warmup", "0", "--quiet",
         "--max-errors", "0"] + load_transport_args(transport), stdout=subprocess.DEVNULL)
    time.sleep(settle)
    after = status_kib(p.pid, "VmRSS")
    if load.wait() != 0:
        sys.exit("idle harness failed (open-files limit? ephemeral ports?)")
    stop(p)
    return {"rss_before_kib": before, "rss_after_kib": after, "bytes_per_conn": (after - before) * 1024 / n}


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rate", type=float, default=60000, help="total open-loop rate (req/s)")
    ap.add_argument("--closed-duration", type=float, default=None,
                    help="seconds of the closed-loop run after each open-loop run (default: --duration; "
                         "0 skips it)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--only", default="echo,mesh,idle",
                    help="comma list of echo, mesh, idle (against the baseline); transports on the same "
                         "server: ws (WebSocket against TCP), tls (TLS against TCP), wss (WebSocket over "
                         "TLS against TCP): CPU per round trip and idle memory; storm (N connections at "
                         "once over tcp and ws)")
    ap.add_argument("--storm", type=int, default=15000, help="connections opened at once for --only storm")
    ap.add_argument("--json", default="", help="write all raw results here")
    ap.add_argument("--variants", default="",
                    help="name=path,... : compare lattice binaries (e.g. built with different allocators)")
    ap.add_argument("--variant-shards", type=int, default=1, help="shards for --variants runs")
    ap.add_argument("--variant-route", default="local", help="echo.route for --variants runs")
    ap.add_argument("--variant-idle", type=int, default=0,
                    help="also measure idle memory per connection of each variant with this many connections")
    a = ap.parse_args()
    only = set(a.only.split(","))
    results = {}
    print(f"# lattice vs baseline — {a.connections} conns x {a.depth} in flight, 100 B, "
          f"{a.duration:g}s per run, open-loop rate {a.rate:g}/s, {a.reps} alternating reps, "
          f"server on core 0, 2 harness processes on core 1")
    if "echo" in only:
        lat, base = [], []
        for i in range(a.reps):
            lat.append(echo_run("lattice", a))
            base.append(echo_run("baseline", a))
            print(f"  rep {i+1}: lattice {lat[-1]['cpu_us_per_rt']:.3f} µs/rt, "
                  f"baseline {base[-1]['cpu_us_per_rt']:.3f} µs/rt", flush=True)
        results["echo"] = {"lattice": lat, "baseline": base}
        print("\n| figure (median) | lattice | baseline | ratio |\n|---|---:|---:|---:|")
        for key, label in [("cpu_us_per_rt", "server CPU µs per round trip (open loop)"),
                           ("open_rt_per_s", "round trips/s at the fixed rate"),
                           ("open_p99_us", "p99 µs at the fixed rate"),
                           ("closed_rt_per_s", "round trips/s closed loop"),
                           ("closed_p99_us", "p99 µs closed loop"),
                           ("closed_cpu_share", "server CPU share of its core, closed loop"),
                           ("closed_cpu_us_per_rt", "server CPU µs per round trip, closed loop"),
                           ("closed_user_us_per_rt", "of which user space"),
                           ("closed_sys_us_per_rt", "of which the kernel")]:
            l, b = med(lat, key), med(base, key)
            print(f"| {label} | {l:.3f} | {b:.3f} | {l / b if b else float('nan'):.2f} |")
    if "mesh" in only:
        loc, rem = [], []
        for i in range(a.reps):
            loc.append(echo_run("lattice", a, shards=2, route="local", cores="0,1"))
            rem.append(echo_run("lattice", a, shards=2, route="remote", cores="0,1"))
        results["mesh"] = {"local": loc, "remote": rem}
        print("\n| 2 shards (median) | route=remote (mesh) | route=local | ratio |\n|---|---:|---:|---:|")
        for key, label in [("cpu_us_per_rt", "server CPU µs per round trip"),
                           ("closed_rt_per_s", "round trips/s closed loop")]:
            r_, l_ = med(rem, key), med(loc, key)
            print(f"| {label} | {r_:.3f} | {l_:.3f} | {r_ / l_ if l_ else float('nan'):.2f} |")
    if "idle" in only:
        li = idle_run("lattice", a.idle, a)
        bi = idle_run("baseline", a.idle, a)
        results["idle"] = {"lattice": li, "baseline": bi}
        print(f"\n| {a.idle} idle connections | lattice | baseline |\n|---|---:|---:|")
        print(f"| RSS before (KiB) | {li['rss_before_kib']} | {bi['rss_before_kib']} |")
        print(f"| RSS after (KiB) | {li['rss_after_kib']} | {bi['rss_after_kib']} |")
        print(f"| bytes per connection | {li['bytes_per_conn']:.0f} | {bi['bytes_per_conn']:.0f} |")
    if "tls" in only:
        tcp, tls = [], []
        for i in range(a.reps):
            tcp.append(echo_run("lattice", a, transport="tcp"))
            tls.append(echo_run("lattice", a, transport="tls"))
            print(f"  rep {i+1}: tcp {tcp[-1]['cpu_us_per_rt']:.3f} µs/rt, "
                  f"tls {tls[-1]['cpu_us_per_rt']:.3f} µs/rt", flush=True)
        ti = idle_run("lattice", a.idle, a, transport="tcp")
        si = idle_run("lattice", a.idle, a, transport="tls")
        results["tls"] = {"tcp": tcp, "tls": tls, "idle_tcp": ti, "idle_tls": si}
        print(f"\n| lattice, same build (median of {a.reps}) | TLS 1.3 | TCP | ratio |\n|---|---:|---:|---:|")
        for key, label in [("cpu_us_per_rt", "server CPU µs per round trip (open loop)"),
                           ("open_rt_per_s", "round trips/s at the fixed rate"),
                           ("open_p99_us", "p99 µs at the fixed rate"),
                           ("closed_rt_per_s", "round trips/s closed loop"),
                           ("closed_p99_us", "p99 µs closed loop")]:
            s_, t_ = med(tls, key), med(tcp, key)
            print(f"| {label} | {s_:.3f} | {t_:.3f} | {s_ / t_ if t_ else float('nan'):.2f} |")
        print(f"\n| {a.idle} idle connections | TLS 1.3 | TCP |\n|---|---:|---:|")
        print(f"| RSS before (KiB) | {si['rss_before_kib']} | {ti['rss_before_kib']} |")
        print(f"| RSS after (KiB) | {si['rss_after_kib']} | {ti['rss_after_kib']} |")
        print(f"| bytes per connection | {si['bytes_per_conn']:.0f} | {ti['bytes_per_conn']:.0f} |")
    if a.variants:
        variants = [v.split("=", 1) for v in a.variants.split(",")]
        rows = {name: [] for name, _ in variants}
        for i in range(a.reps):
            for name, path in variants:
                rows[name].append(echo_run("lattice", a, shards=a.variant_shards, route=a.variant_route,
                                           cores="0" if a.variant_shards == 1 else "0,1", binary=path))
            print(f"  rep {i+1}: " + ", ".join(f"{n} {rows[n][-1]['cpu_us_per_rt']:.3f} µs/rt" for n, _ in variants),
                  flush=True)
        results["variants"] = rows
        first = variants[0][0]
        print(f"\n| variant (median of {a.reps}) | server CPU µs/rt | ratio to {first} | "
              f"paired ratio, median [IQR] | closed-loop rt/s | peak RSS KiB |")
        print("|---|---:|---:|---:|---:|---:|")
        base = med(rows[first], "cpu_us_per_rt")
        for name, _ in variants:
            c = med(rows[name], "cpu_us_per_rt")
            # each repetition's ratio to the first variant's run of the same repetition: runs
            # next to each other share the machine's load, so these spread less than the medians
            pr = sorted(r["cpu_us_per_rt"] / b["cpu_us_per_rt"] for r, b in zip(rows[name], rows[first]))
            q = statistics.quantiles(pr, n=4) if len(pr) > 1 else [pr[0]] * 3
            print(f"| {name} | {c:.3f} | {c / base:.2f} | {q[1]:.3f} [{q[0]:.3f}–{q[2]:.3f}] | "
                  f"{med(rows[name], 'closed_rt_per_s'):.0f} | {med(rows[name], 'peak_rss_kib'):.0f} |")
    if a.variants and a.variant_idle:
        variants = [v.split("=", 1) for v in a.variants.split(",")]
        idle = {name: [] for name, _ in variants}
        for _ in range(a.reps):
            for name, path in variants:
                idle[name].append(idle_run("lattice", a.variant_idle, a, binary=path))
        results["variant_idle"] = idle
        print(f"\n| variant (median of {a.reps}) | RSS before KiB | RSS after KiB | "
              f"bytes per idle connection ({a.variant_idle}) |")
        print("|---|---:|---:|---:|")
        for name, _ in variants:
            print(f"| {name} | {med(idle[name], 'rss_before_kib'):.0f} | {med(idle[name], 'rss_after_kib'):.0f} | "
                  f"{med(idle[name], 'bytes_per_conn'):.0f} |")
    for other, title in (("ws", "WebSocket"), ("wss", "WebSocket over TLS")):
        if other not in only:
            continue
        tcp, ws = [], []
        for i in range(a.reps):
            tcp.append(echo_run("lattice", a, transport="tcp"))
            ws.append(echo_run("lattice", a, transport=other))
            print(f"  rep {i+1}: tcp {tcp[-1]['cpu_us_per_rt']:.3f} µs/rt, {other} {ws[-1]['cpu_us_per_rt']:.3f} µs/rt",
                  flush=True)
        ti = idle_run("lattice", a.idle, a, transport="tcp")
        wi = idle_run("lattice", a.idle, a, transport=other)
        results[other] = {"tcp": tcp, other: ws, "idle_tcp": ti, f"idle_{other}": wi}
        print(f"\n| lattice, 1 shard (median of {a.reps}) | {title} | TCP | ratio |\n|---|---:|---:|---:|")
        for key, label in [("cpu_us_per_rt", "server CPU µs per round trip (open loop)"),
                           ("open_p99_us", "p99 µs at the fixed rate"),
                           ("closed_rt_per_s", "round trips/s closed loop"),
                           ("closed_p99_us", "p99 µs closed loop")]:
            w_, t_ = med(ws, key), med(tcp, key)
            print(f"| {label} | {w_:.3f} | {t_:.3f} | {w_ / t_ if t_ else float('nan'):.2f} |")
        print(f"| bytes per idle connection ({a.idle} idle) | {wi['bytes_per_conn']:.0f} | "
              f"{ti['bytes_per_conn']:.0f} | {wi['bytes_per_conn'] / ti['bytes_per_conn']:.2f} |")
    if "storm" in only:
        rows = {}
        for transport in ("tcp", "ws"):
            port = free_port()
            tport, extra = transport_args(transport)
            p = start_server("lattice", port, cores="0", shards=1, extra=extra)
            rep = os.path.join(tempfile.gettempdir(), f"compare-storm-{transport}.json")
            target = tport or port
            rc = subprocess.call(
                ["taskset", "-c", "1", f"{BIN}/lattice-load", "--addr", f"127.0.0.1:{target}", "--scenario",
                 "storm", "--connections", str(a.storm), "--sources", "8", "--duration", "5", "--warmup", "0",
                 "--quiet", "--max-errors", "0", "--report", rep] + load_transport_args(transport),
                stdout=subprocess.DEVNULL)
            stop(p)
            rows[transport] = json.load(open(rep))
            rows[transport]["exit"] = rc
        results["storm"] = rows
        print(f"\n| {a.storm} connections at once (1 shard) | tcp | ws |\n|---|---:|---:|")
        for key, label in [("connected", "connected"), ("failures", "failures"),
                           ("listen_overflows", "listen overflows (machine-wide, during the storm)")]:
            print(f"| {label} | {rows['tcp'][key]} | {rows['ws'][key]} |")
        for q in ("p50", "p90", "p99", "max"):
            print(f"| connect to Welcome {q} (ms) | {rows['tcp']['connect_us'][q] / 1000:.1f} | "
                  f"{rows['ws']['connect_us'][q] / 1000:.1f} |")
    if a.json:
        json.dump(results, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
