// The generated client against a real `lattice` process over TCP (LATTICE_BIN): a chat whose
// sockets are cut mid-stream, again and again, loses nothing and duplicates nothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import { LatticeClient, Opcode, ResumeInfo } from "../../ts/index";
import { Lattice, startLattice, tcpTransport } from "./server";

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(what: string, cond: () => boolean, ms = 15000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

async function client(l: Lattice, sockets: net.Socket[]): Promise<LatticeClient> {
  const c = new LatticeClient({
    url: `tcp://127.0.0.1:${l.port}`,
    transport: tcpTransport(l.port, sockets),
    resume: { baseDelayMs: 10, maxDelayMs: 100 },
  });
  await c.connect();
  assert.ok(c.resumable, "the server granted resume");
  return c;
}

test("a chat survives sockets cut mid-stream: nothing lost, nothing twice, in order", async () => {
  const l = await startLattice();
  try {
    const aSockets: net.Socket[] = [];
    const bSockets: net.Socket[] = [];
    const a = await client(l, aSockets);
    const b = await client(l, bSockets);
    await a.call(Opcode.JoinRoom, { room: "lobby" }, Opcode.Joined);
    await b.call(Opcode.JoinRoom, { room: "lobby" }, Opcode.Joined);
    const aGot: string[] = [];
    const bGot: string[] = [];
    a.on(Opcode.Said, (m) => aGot.push(m.text));
    b.on(Opcode.Said, (m) => bGot.push(m.text));
    const resumes: ResumeInfo[] = [];
    a.onResumed((i) => resumes.push(i));
    const lines = 300;
    const sent: Promise<unknown>[] = [];
    for (let i = 0; i < lines; i++) {
      // B talks; A talks too (its own lines may be sent while its socket is down).
      sent.push(b.call(Opcode.Say, { room: "lobby", text: `b${i}` }, Opcode.Said));
      if (i % 3 === 0) sent.push(a.call(Opcode.Say, { room: "lobby", text: `a${i}` }, Opcode.Said));
      if (i % 50 === 25) {
        // Cut A's socket mid-stream, as a network drop would (once the last cut is resumed).
        await until("A's previous resume", () => a.connectionState === "open");
        aSockets[aSockets.length - 1]!.destroy();
      }
      if (i % 10 === 0) await sleep(2);
    }
    await Promise.all(sent);
    await until("A to get all of B's lines", () => aGot.length >= lines);
    await until("B to get all of A's lines", () => bGot.length >= Math.ceil(lines / 3));
    assert.deepEqual(aGot, Array.from({ length: lines }, (_, i) => `b${i}`));
    assert.deepEqual(
      bGot,
      Array.from({ length: lines }, (_, i) => i).filter((i) => i % 3 === 0).map((i) => `a${i}`),
    );
    assert.equal(resumes.length, 6, "every cut was resumed");
    assert.ok(resumes.every((r) => !r.resync), "nothing was evicted");
    assert.equal(a.stats.resumes, 6);
    a.close();
    b.close();
    const log = fs.readFileSync(l.log, "utf8");
    assert.match(log, /session resumed on a new socket/);
  } finally {
    await l.stop();
  }
});

test("the heartbeat keeps an idle client alive against the server's idle timeout", async () => {
  const l = await startLattice(["--net.idle_timeout_ms", "600"]);
  try {
    const open = (heartbeatMs: number) => {
      const c = new LatticeClient({ url: `tcp://127.0.0.1:${l.port}`, transport: tcpTransport(l.port, []), heartbeatMs });
      const closed: string[] = [];
      c.onClose((r) => closed.push(r));
      c.on(Opcode.IconManifest, () => {}); // the push after Welcome: only the Pongs may be left
      return { c, closed };
    };
    const beating = open(150);
    const silent = open(0);
    await beating.c.connect();
    await silent.c.connect();
    await sleep(1800);
    assert.ok(silent.closed.length > 0, "without a heartbeat the server's idle timeout closes the session");
    assert.deepEqual(beating.closed, [], "the heartbeat kept it open");
    assert.ok(beating.c.isOpen);
    assert.ok(beating.c.stats.heartbeatsSent >= 3);
    assert.equal(beating.c.stats.heartbeatLosses, 0, "every Ping was answered");
    assert.equal(beating.c.stats.unhandled, 0, "Pongs with request id 0 are not unhandled");
    await beating.c.call(Opcode.Ping, {}, Opcode.Pong);
    beating.c.close();
  } finally {
    await l.stop();
  }
});
