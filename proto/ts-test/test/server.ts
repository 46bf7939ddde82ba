// A real `lattice` process for the live tests, and a transport that carries frames over TCP (the
// server's binary listener), so the generated client runs against the server in Node.
import * as child from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { TransportFactory } from "../../ts/index";

/** A free loopback port (bound then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface Lattice {
  port: number;
  admin: number;
  log: string;
  stop(): Promise<void>;
}

/** Starts the binary named by LATTICE_BIN with 2 shards on loopback; waits until it accepts. */
export async function startLattice(extra: string[] = []): Promise<Lattice> {
  const bin = process.env.LATTICE_BIN;
  if (!bin || !fs.existsSync(bin)) {
    throw new Error(
      "LATTICE_BIN must name a built `lattice` binary (deploy/ci/ts.sh builds it: cargo build -p lattice-server; " +
        "then LATTICE_BIN=target/debug/lattice npm test)",
    );
  }
  const port = await freePort();
  const admin = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lattice-ts-live-"));
  const log = path.join(dir, "lattice.log");
  const out = fs.openSync(log, "w");
  const proc = child.spawn(
    bin,
    [
      "run",
      "--net.listen", `127.0.0.1:${port}`,
      "--admin.listen", `127.0.0.1:${admin}`,
      "--runtime.shards", "2",
      "--storage.data_dir", dir,
      "--shutdown.drain_timeout_ms", "2000",
      ...extra,
    ],
    { stdio: ["ignore", "ignore", out], env: { ...process.env, NO_COLOR: "1" } },
  );
  let exited: number | null = null;
  proc.on("exit", (code) => (exited = code ?? -1));
  for (let i = 0; ; i++) {
    if (exited !== null) throw new Error(`lattice exited early (${exited}):\n${fs.readFileSync(log, "utf8")}`);
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(admin, "127.0.0.1", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (up) break;
    if (i > 400) throw new Error(`lattice did not start:\n${fs.readFileSync(log, "utf8")}`);
    await sleep(50);
  }
  return {
    port,
    admin,
    log,
    stop: async () => {
      if (exited === null) {
        proc.kill("SIGTERM");
        for (let i = 0; i < 200 && exited === null; i++) await sleep(25);
        if (exited === null) proc.kill("SIGKILL");
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A transport over a TCP connection to `port`: the byte stream is cut into frames by their
 * length field. `sockets` collects every socket opened, so a test can cut one.
 */
export function tcpTransport(port: number, sockets: net.Socket[] = []): TransportFactory {
  return (_url, events) => {
    const sock = net.connect(port, "127.0.0.1");
    sock.setNoDelay(true);
    sockets.push(sock);
    let buf: Buffer = Buffer.alloc(0);
    sock.on("connect", () => events.open());
    sock.on("data", (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      while (buf.length >= 4) {
        const len = buf.readUInt32LE(0);
        if (len < 12) {
          events.protocolError(`bad frame length ${len}`);
          sock.destroy();
          return;
        }
        if (buf.length < len) break;
        events.message(new Uint8Array(buf.subarray(0, len)));
        buf = buf.subarray(len);
      }
    });
    sock.on("close", () => events.close("tcp closed"));
    sock.on("error", (e) => events.error(e));
    return {
      send: (frame) => {
        if (!sock.destroyed) sock.write(frame);
      },
      close: () => sock.destroy(),
    };
  };
}
