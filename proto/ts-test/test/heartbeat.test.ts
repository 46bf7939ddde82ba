// The liveness check (heartbeatMs / deadAfterMs) against scripted transports and hand-driven timers:
// a silently dead socket (no FIN, no RST: nothing arrives, nothing closes) is noticed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ConnectionClosedError, LatticeClient, Opcode, PROTOCOL_VERSION, ClientOptions, codecs, Ping, Resume } from "../../ts/index";
import { ManualTimers, ScriptedNet } from "./util";

const TOKEN = new Uint8Array(16).fill(7);

async function open(opts: Partial<ClientOptions> = {}, resume = false) {
  const net = new ScriptedNet();
  const timers = new ManualTimers();
  const client = new LatticeClient({ url: "ws://t", transport: net.factory, timers, resume: resume ? { random: () => 0.5 } : false, ...opts });
  const p = client.connect();
  const ep = net.last();
  ep.open();
  ep.plain(Opcode.Welcome, { serverVersion: PROTOCOL_VERSION, sessionId: 5, resumeToken: resume ? TOKEN : new Uint8Array(0) }, ep.last().requestId);
  await p;
  return { net, timers, client, ep };
}

/** Fires the armed timer with this delay (fails if there is none). */
function fire(timers: ManualTimers, ms: number): void {
  const e = [...timers.armed.entries()].find(([, t]) => t.ms === ms);
  assert.ok(e, `a timer of ${ms} ms (armed: ${[...timers.armed.values()].map((t) => t.ms)})`);
  timers.armed.delete(e[0]);
  e[1].fn();
}

const delays = (timers: ManualTimers) => [...timers.armed.values()].map((t) => t.ms).sort((a, b) => a - b);

test("a silent connection is noticed: Ping after heartbeatMs of silence, closed after deadAfterMs more", async () => {
  const { timers, client, ep } = await open({ heartbeatMs: 1000, requestTimeoutMs: 60_000 });
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  assert.deepEqual(delays(timers), [1000], "the default deadAfterMs is 2 × heartbeatMs, armed only when needed");
  const pending = client.request(Opcode.JoinRoom, { room: "r" });
  fire(timers, 1000);
  const ping = ep.last();
  assert.deepEqual([ping.opcode, ping.requestId], [Opcode.Ping, 0]);
  assert.equal((codecs[Opcode.Ping].decode(ping.body) as Ping).payload.length, 0, "an empty Ping: 12 bytes");
  assert.equal(client.pendingCount, 1, "a heartbeat is not a pending request");
  assert.deepEqual(delays(timers), [1000, 2000, 60_000]);
  fire(timers, 1000); // still silent: another Ping, the dead bound keeps running from the first silent check
  assert.equal(client.stats.heartbeatsSent, 2);
  fire(timers, 2000);
  assert.equal(client.connectionState, "closed");
  assert.deepEqual(reasons, ["heartbeat: nothing received for 2000 ms after a Ping"]);
  await assert.rejects(pending, ConnectionClosedError);
  assert.ok(ep.closed, "the dead socket is closed");
  assert.equal(client.stats.heartbeatLosses, 1);
  assert.equal(client.stats.timeouts, 0);
  assert.equal(timers.armed.size, 0);
});

test("any frame received cancels the dead bound; Pong pushes are not counted as unhandled", async () => {
  const { timers, client, ep } = await open({ heartbeatMs: 1000, deadAfterMs: 500 });
  fire(timers, 1000);
  assert.deepEqual(delays(timers), [500, 1000]);
  ep.plain(Opcode.Pong, {}, 0);
  assert.deepEqual(delays(timers), [1000]);
  assert.equal(client.stats.unhandled, 0);
  // Received something but sent nothing (a listener): Ping anyway, for the server's idle timeout.
  const sent = ep.sent.length;
  fire(timers, 1000);
  assert.equal(ep.sent.length, sent + 1);
  assert.deepEqual(delays(timers), [1000], "heard something: no dead bound");
  // Both ways busy: no Ping.
  ep.plain(Opcode.Said, { text: "x" }, 0);
  client.send(Opcode.Say, { room: "r", text: "y" });
  fire(timers, 1000);
  assert.equal(ep.last().opcode, Opcode.Say);
  assert.equal(client.stats.heartbeatsSent, 2);
  assert.ok(client.isOpen);
  client.close();
  assert.equal(timers.armed.size, 0);
});

test("heartbeatMs 0 turns the check off", async () => {
  const { timers } = await open({ heartbeatMs: 0 });
  assert.equal(timers.armed.size, 0);
});

test("the heartbeat takes no pending slot and leaves maxPending whole", async () => {
  const { timers, client, ep } = await open({ heartbeatMs: 1000, maxPending: 1 });
  fire(timers, 1000);
  const r = client.call(Opcode.Ping, { payload: new Uint8Array([1]) }, Opcode.Pong);
  ep.plain(Opcode.Pong, {}, 0);
  ep.plain(Opcode.Pong, { payload: new Uint8Array([1]) }, ep.last().requestId);
  assert.deepEqual(Array.from((await r).payload), [1]);
  assert.equal(client.stats.rejectedPendingFull, 0);
});

test("a silent resumable connection is resumed on a new socket", async () => {
  const { net, timers, client, ep } = await open({ heartbeatMs: 1000 }, true);
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  const pending = client.call(Opcode.JoinRoom, { room: "r" }, Opcode.Joined, { timeoutMs: 60_000 });
  fire(timers, 1000);
  assert.equal(ep.last().opcode, Opcode.Ping);
  fire(timers, 2000);
  assert.equal(client.connectionState, "reconnecting");
  assert.ok(ep.closed);
  assert.deepEqual(reasons, []);
  fire(timers, 50);
  const ep2 = net.last();
  assert.notEqual(ep2, ep);
  ep2.open();
  const resume = codecs[Opcode.Resume].decode(ep2.last().body) as Resume;
  assert.equal(resume.attempt, 1);
  ep.seq(Opcode.Said, { text: "late, on the dead socket" }, 0, 1, 0); // ignored
  ep2.plain(Opcode.Resumed, { resumeToken: TOKEN, lastReceivedSeq: 0, serverSeq: 0 });
  assert.ok(client.isOpen);
  // Both frames (the JoinRoom and the Ping) go again; the answer settles the call.
  assert.deepEqual(ep2.sent.slice(1).map((f) => f.opcode), [Opcode.JoinRoom, Opcode.Ping]);
  ep2.seq(Opcode.Joined, { room: "r", members: 1 }, ep.sent[1]!.requestId, 1, 2);
  assert.equal((await pending).room, "r");
  assert.ok(delays(timers).includes(1000), "the check runs again after the resume");
});
