// Starts a real `lattice` (LATTICE_BIN) on free loopback ports for the live client tests and
// stops it afterwards. deploy/ci/clients.sh builds the binary and runs these tests.
import { spawn, ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

export interface Lattice {
  proc: ChildProcess;
  tcp: number;
  http: number;
  logFile: string;
  stop(): Promise<void>;
}

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

async function healthy(port: number): Promise<boolean> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/healthz`);
    return r.status === 200;
  } catch {
    return false;
  }
}

export async function startLattice(extra: string[] = []): Promise<Lattice> {
  const bin = process.env.LATTICE_BIN;
  if (!bin) throw new Error("LATTICE_BIN is not set: run these tests through deploy/ci/clients.sh");
  const [tcp, http] = [await freePort(), await freePort()];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lattice-live-"));
  const logFile = path.join(dir, "lattice.log");
  const log = fs.openSync(logFile, "w");
  const proc = spawn(
    bin,
    [
      "run",
      "--net.listen", `127.0.0.1:${tcp}`,
      "--listeners.http", `127.0.0.1:${http}`,
      "--admin.listen", "",
      "--runtime.shards", "2",
      "--storage.data_dir", path.join(dir, "data"),
      ...extra,
    ],
    { stdio: ["ignore", log, log] },
  );
  const deadline = Date.now() + 20_000;
  while (!(await healthy(http))) {
    if (proc.exitCode !== null) throw new Error(`lattice exited with ${proc.exitCode}: ${fs.readFileSync(logFile, "utf8")}`);
    if (Date.now() > deadline) throw new Error(`lattice did not start: ${fs.readFileSync(logFile, "utf8")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    proc,
    tcp,
    http,
    logFile,
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.once("exit", () => {
          fs.rmSync(dir, { recursive: true, force: true });
          resolve();
        });
        proc.kill("SIGTERM");
      }),
  };
}
