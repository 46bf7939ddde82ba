// Starts a real `lattice` (LATTICE_BIN) on free loopback ports for the live client tests and
// stops it afterwards. tests/clients.sh builds the binary and runs these tests.
import { spawn, spawnSync, ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import * as assert from "node:assert/strict";
import { chromium, Browser } from "playwright-core";

export interface Lattice {
  proc: ChildProcess;
  tcp: number;
  http: number;
  /** HTTPS + WSS (`tls.http_listen`), when started with `{ tls: true }`. */
  https?: number;
  /** The development certificate (PEM) the TLS listeners serve, when started with `{ tls: true }`. */
  certFile?: string;
  /** The admin listener (`admin.listen`), when started with `{ adminToken }`; off otherwise. */
  admin?: number;
  logFile: string;
  stop(): Promise<void>;
}

/** Debian's Chromium (or `CHROMIUM`), the binary the browser tests drive. */
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/**
 * Fails, saying what to install, when Chromium is missing. A test calls it first, before it starts
 * a server: a test that throws between starting a server and its `finally` leaves the server
 * running and the test runner waiting for it.
 */
export function requireChromium(): void {
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium (tests/clients.sh does)`);
}

/**
 * Headless Chromium through playwright-core, with a fresh temporary profile of its own
 * (playwright passes --user-data-dir).
 */
export async function launchChromium(): Promise<Browser> {
  requireChromium();
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
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

export async function startLattice(extra: string[] = [], opts: { tls?: boolean; adminToken?: string } = {}): Promise<Lattice> {
  const bin = process.env.LATTICE_BIN;
  if (!bin) throw new Error("LATTICE_BIN is not set: run these tests through tests/clients.sh");
  const [tcp, http] = [await freePort(), await freePort()];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lattice-live-"));
  let https: number | undefined;
  let certFile: string | undefined;
  const tlsArgs: string[] = [];
  if (opts.tls) {
    // A development certificate for localhost/127.0.0.1 from `lattice tool gen-cert`.
    const gen = spawnSync(bin, ["tool", "gen-cert", "--out", path.join(dir, "cert")], { encoding: "utf8" });
    if (gen.status !== 0) throw new Error(`lattice tool gen-cert failed: ${gen.stderr}`);
    certFile = path.join(dir, "cert", "cert.pem");
    https = await freePort();
    tlsArgs.push(
      "--tls.cert", certFile,
      "--tls.key", path.join(dir, "cert", "key.pem"),
      "--tls.http_listen", `127.0.0.1:${https}`,
      "--tls.listen", `127.0.0.1:${await freePort()}`,
    );
  }
  // The admin listener only when a test asks for it, with the token it gives.
  let admin: number | undefined;
  const adminArgs = ["--admin.listen", ""];
  if (opts.adminToken !== undefined) {
    admin = await freePort();
    adminArgs.splice(0, 2, "--admin.listen", `127.0.0.1:${admin}`, "--admin.token", opts.adminToken);
  }
  const logFile = path.join(dir, "lattice.log");
  const log = fs.openSync(logFile, "w");
  const proc = spawn(
    bin,
    [
      "run",
      "--net.listen", `127.0.0.1:${tcp}`,
      "--listeners.http", `127.0.0.1:${http}`,
      ...adminArgs,
      "--runtime.shards", "2",
      "--storage.data_dir", path.join(dir, "data"),
      ...tlsArgs,
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
    https,
    certFile,
    admin,
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
