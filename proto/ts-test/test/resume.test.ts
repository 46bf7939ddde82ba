// Resume in LatticeClient against a scripted network (no sockets, time driven by hand): sequence
// numbers and acks, reconnect with backoff and jitter, Resume/Resumed, resends, resync, loss.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ConnectionClosedError,
  ErrorCode,
  FLAG_SEQ,
  LatticeClient,
  Opcode,
  PROTOCOL_VERSION,
  ProtocolError,
  ResumeInfo,
  ResumeOptions,
  ResyncError,
  codecs,
  describeError,
  Hello,
  Resume,
} from "../../ts/index";
import { ManualTimers, ScriptedNet } from "./util";

const TOKEN = new Uint8Array(16).fill(7);

async function resumable(resume: ResumeOptions = {}) {
  const net = new ScriptedNet();
  const timers = new ManualTimers();
  const client = new LatticeClient({
    url: "ws://t",
    transport: net.factory,
    timers,
    resume: { random: () => 0.5, ...resume },
  });
  const p = client.connect();
  const ep = net.last();
  ep.open();
  const hello = codecs[Opcode.Hello].decode(ep.last().body) as Hello;
  assert.equal(hello.resume, true, "Hello asks for resume");
  assert.equal(ep.last().flags & FLAG_SEQ, 0, "Hello goes out plain");
  ep.plain(Opcode.Welcome, { serverVersion: PROTOCOL_VERSION, sessionId: 42, resumeToken: TOKEN }, ep.last().requestId);
  await p;
  assert.ok(client.resumable);
  return { net, timers, client };
}

/** The armed timer with this delay (fails if there is none). */
function fire(timers: ManualTimers, ms: number): void {
  const e = [...timers.armed.entries()].find(([, t]) => t.ms === ms);
  assert.ok(e, `a timer of ${ms} ms (armed: ${[...timers.armed.values()].map((t) => t.ms)})`);
  timers.armed.delete(e[0]);
  e[1].fn();
}

test("without a token from the server the client stays unsequenced", async () => {
  const net = new ScriptedNet();
  const client = new LatticeClient({ url: "ws://t", transport: net.factory, timers: new ManualTimers(), resume: true });
  const p = client.connect();
  net.last().open();
  net.last().plain(Opcode.Welcome, { serverVersion: PROTOCOL_VERSION, sessionId: 1 }, net.last().last().requestId);
  await p;
  assert.ok(!client.resumable);
  client.send(Opcode.Ping, {});
  assert.equal(net.last().last().flags, 0);
});

test("frames carry seq and the piggybacked ack; an Ack leaves on a timer", async () => {
  const { net, timers, client } = await resumable({ ackDelayMs: 150 });
  const ep = net.last();
  const ping = client.request(Opcode.Ping, {});
  let f = ep.last();
  assert.deepEqual([f.flags, f.seq, f.ack], [FLAG_SEQ, 1, 0]);
  ep.seq(Opcode.Pong, {}, f.requestId, 1, 1);
  await ping;
  ep.seq(Opcode.Said, { room: "r", text: "push" }, 0, 2, 1);
  assert.equal([...timers.armed.values()].filter((t) => t.ms === 150).length, 1, "one ack timer");
  fire(timers, 150);
  f = ep.last();
  assert.deepEqual([f.opcode, f.seq, f.ack, f.flags], [Opcode.Ack, 0, 2, FLAG_SEQ]);
  assert.equal(client.stats.acksSent, 1);
  client.send(Opcode.Ping, {});
  assert.deepEqual([ep.last().seq, ep.last().ack], [2, 2]);
});

test("a gap or a plain frame on a sequenced session closes it", async () => {
  const { net, client } = await resumable();
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  net.last().seq(Opcode.Said, { text: "x" }, 0, 2, 0);
  assert.match(reasons[0] ?? "", /got seq 2, expected 1/);
  const b = await resumable();
  const r2: string[] = [];
  b.client.onClose((r) => r2.push(r));
  b.net.last().plain(Opcode.Said, { text: "x" });
  assert.match(r2[0] ?? "", /without SEQ/);
});

test("a lost connection is resumed after a jittered backoff; unacknowledged frames go again", async () => {
  const { net, timers, client } = await resumable({ baseDelayMs: 100, maxDelayMs: 1000 });
  const first = net.last();
  const a = client.call(Opcode.Ping, { payload: new Uint8Array([1]) }, Opcode.Pong);
  const b = client.call(Opcode.Ping, { payload: new Uint8Array([2]) }, Opcode.Pong);
  first.seq(Opcode.Said, { text: "one" }, 0, 1, 1); // the server got frame 1 only
  first.events.close("socket closed code 1006");
  assert.equal(client.connectionState, "reconnecting");
  // Sends while reconnecting wait for the resume.
  client.send(Opcode.Say, { room: "r", text: "queued" });
  // Reconnect 0 waits random() · min(max, base · 2⁰) = 0.5 · 100.
  fire(timers, 50);
  const second = net.last();
  assert.notEqual(second, first);
  // Reconnect 1 (the second fails before Resumed) waits 0.5 · 200.
  second.events.close("refused");
  fire(timers, 100);
  const third = net.last();
  third.open();
  const resume = codecs[Opcode.Resume].decode(third.last().body) as Resume;
  assert.equal(third.last().flags, 0, "Resume goes out plain");
  assert.deepEqual([String(resume.sessionId), resume.lastReceivedSeq, resume.attempt], ["42", 1, 1]);
  assert.deepEqual(Array.from(resume.token), Array.from(TOKEN));
  const infos: ResumeInfo[] = [];
  client.onResumed((i) => infos.push(i));
  third.plain(Opcode.Resumed, { resumeToken: new Uint8Array(16).fill(9), lastReceivedSeq: 1, serverSeq: 1 });
  assert.deepEqual(infos, [{ resync: false, attempts: 2 }]);
  // Frames 2 and 3 (the second Ping, the queued Say) go again; frame 1 was received.
  const resent = third.sent.slice(1).map((f) => [f.opcode, f.seq]);
  assert.deepEqual(resent, [[Opcode.Ping, 2], [Opcode.Say, 3]]);
  assert.equal(client.stats.framesResent, 2);
  // The replies come in the replay; both calls settle.
  third.seq(Opcode.Pong, { payload: new Uint8Array([1]) }, first.sent[1]!.requestId, 2, 3);
  third.seq(Opcode.Pong, { payload: new Uint8Array([2]) }, first.sent[2]!.requestId, 3, 3);
  assert.deepEqual(Array.from((await a).payload), [1]);
  assert.deepEqual(Array.from((await b).payload), [2]);
  // The next resume uses the rotated token and the next attempt number.
  third.events.close("cut again");
  fire(timers, 50);
  net.last().open();
  const again = codecs[Opcode.Resume].decode(net.last().last().body) as Resume;
  assert.equal(again.attempt, 2);
  assert.deepEqual(Array.from(again.token), Array.from(new Uint8Array(16).fill(9)));
});

test("an old transport's late events are ignored", async () => {
  const { net, timers, client } = await resumable();
  const old = net.last();
  old.events.close("lost");
  fire(timers, 50);
  net.last().open();
  net.last().plain(Opcode.Resumed, { resumeToken: TOKEN, lastReceivedSeq: 0, serverSeq: 0 });
  const before = client.stats.framesReceived;
  old.seq(Opcode.Said, { text: "late" }, 0, 1, 0);
  old.events.close("late close");
  assert.equal(client.stats.framesReceived, before);
  assert.equal(client.connectionState, "open");
});

test("resync is reported and numbering goes on after the server's last frame", async () => {
  const { net, timers, client } = await resumable();
  net.last().events.close("lost");
  fire(timers, 50);
  net.last().open();
  const infos: ResumeInfo[] = [];
  client.onResumed((i) => infos.push(i));
  net.last().plain(Opcode.Resumed, { resumeToken: TOKEN, lastReceivedSeq: 0, serverSeq: 70, resync: true });
  assert.deepEqual(infos, [{ resync: true, attempts: 1 }]);
  const got: string[] = [];
  client.on(Opcode.Said, (m) => got.push(m.text));
  net.last().seq(Opcode.Said, { text: "after" }, 0, 71, 0);
  assert.deepEqual(got, ["after"]);
  assert.equal(client.stats.resyncs, 1);
});

test("a rejected resume ends the session; so does running out of attempts", async () => {
  const { net, timers, client } = await resumable();
  const pending = client.request(Opcode.Ping, {});
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  net.last().events.close("lost");
  fire(timers, 50);
  net.last().open();
  net.last().plain(Opcode.Error, { code: ErrorCode.RESUME_REJECTED, message: "resume rejected: unknown or closed session", opcode: Opcode.Resume });
  await assert.rejects(pending, ConnectionClosedError);
  assert.match(reasons[0] ?? "", /session lost: .*RESUME_REJECTED/);

  const two = await resumable({ maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 15 });
  const r2: string[] = [];
  two.client.onClose((r) => r2.push(r));
  two.net.last().events.close("lost");
  fire(two.timers, 5);
  two.net.last().events.close("refused");
  fire(two.timers, 7.5);
  two.net.last().events.close("refused");
  assert.match(r2[0] ?? "", /gave up after 2 reconnects/);
  assert.equal(two.client.connectionState, "closed");
});

test("a reconnect attempt that never opens or is never answered times out and counts", async () => {
  const { net, timers, client } = await resumable({ maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 10 });
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  net.last().events.close("lost");
  fire(timers, 5);
  const first = net.last();
  // The socket never opens: the attempt ends at requestTimeoutMs, its transport is closed.
  fire(timers, 10000);
  assert.ok(first.closed, "the stalled transport is closed");
  assert.equal(client.connectionState, "reconnecting");
  fire(timers, 5);
  const second = net.last();
  assert.notEqual(second, first);
  second.open(); // opens and sends Resume; the answer never comes
  fire(timers, 10000);
  assert.equal(client.connectionState, "closed");
  assert.match(reasons[0] ?? "", /reconnect attempt not answered within 10000 ms\); gave up after 2 reconnects/);
  assert.equal([...timers.armed.values()].length, 0, "no timer left running");
});

test("a transport error on a resumable open connection starts the reconnect", async () => {
  const { net, timers, client } = await resumable({ baseDelayMs: 10, maxDelayMs: 10 });
  const first = net.last();
  first.events.error(new Error("send failed"));
  assert.equal(client.connectionState, "reconnecting");
  assert.ok(first.closed, "the failed transport is closed");
  fire(timers, 5);
  assert.notEqual(net.last(), first, "a new transport for the resume");
});

test("unacknowledged frames are bounded", async () => {
  const { client } = await resumable({ maxUnacked: 2 });
  client.send(Opcode.Ping, {});
  client.send(Opcode.Ping, {});
  assert.throws(() => client.send(Opcode.Ping, {}), ProtocolError);
  assert.equal(client.stats.rejectedUnackedFull, 1);
});

test("a 1008 close frame from the server ends a resumable session with its reason: no Resume", async () => {
  const { net, timers, client } = await resumable();
  const pending = client.request(Opcode.Ping, {});
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  const before = net.endpoints.length;
  net.last().events.close("websocket closed code 1008: rate limited", { code: 1008, reason: "rate limited" });
  assert.equal(client.connectionState, "closed");
  assert.deepEqual(reasons, ["websocket closed code 1008: rate limited"]);
  await assert.rejects(pending, (e: unknown) => e instanceof ConnectionClosedError && /1008: rate limited/.test(e.message));
  assert.equal(timers.armed.size, 0, "no reconnect scheduled");
  assert.equal(net.endpoints.length, before);
  assert.equal(client.stats.reconnects, 0);

  // The other session-ending codes (protocol errors, internal failure) are final as well.
  for (const code of [1002, 1003, 1007, 1009, 1011]) {
    const c = await resumable();
    c.net.last().events.close(`websocket closed code ${code}: x`, { code, reason: "x" });
    assert.equal(c.client.connectionState, "closed", `code ${code}`);
  }
});

test("Kicked ends a resumable session at the close, with or without a close code", async () => {
  for (const info of [{ code: 1008, reason: "closed by server: account logged in elsewhere" }, undefined]) {
    const { net, timers, client } = await resumable();
    const reasons: string[] = [];
    client.onClose((r) => reasons.push(r));
    net.last().seq(Opcode.Kicked, { code: ErrorCode.LOGGED_IN_ELSEWHERE, message: "logged in on another session" }, 0, 1, 0);
    const text = info ? "websocket closed code 1008: closed by server: account logged in elsewhere" : "tcp closed";
    net.last().events.close(text, info);
    assert.equal(client.connectionState, "closed");
    assert.deepEqual(reasons, [`kicked: logged in on another session (LOGGED_IN_ELSEWHERE); ${text}`]);
    assert.equal(timers.armed.size, 0, "no reconnect scheduled");
  }
});

test("1001 (server shutdown, idle, operator) and drops without a close frame are resumed; a failure names the first loss", async () => {
  const { net, timers, client } = await resumable();
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  net.last().events.close("websocket closed code 1001: server shutdown", { code: 1001, reason: "server shutdown" });
  assert.equal(client.connectionState, "reconnecting");
  fire(timers, 50);
  net.last().open();
  net.last().plain(Opcode.Error, { code: ErrorCode.RESUME_REJECTED, message: "resume rejected: unknown or closed session", opcode: Opcode.Resume });
  assert.deepEqual(reasons, [
    "session lost: resume rejected: unknown or closed session (RESUME_REJECTED) after websocket closed code 1001: server shutdown",
  ]);
  for (const info of [undefined, { code: 1006 }, { code: 1005 }]) {
    const c = await resumable();
    c.net.last().events.close("websocket closed", info);
    assert.equal(c.client.connectionState, "reconnecting", JSON.stringify(info));
  }
});

test("giving up names the first loss and the last transport error readably", async () => {
  const { net, timers, client } = await resumable({ maxAttempts: 1, baseDelayMs: 10, maxDelayMs: 10 });
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  net.last().events.close("websocket closed code 1006", { code: 1006 });
  fire(timers, 5);
  net.last().events.error({ type: "error", message: "connect ECONNREFUSED 127.0.0.1:9" });
  assert.equal(reasons.length, 1);
  assert.equal(reasons[0], "connection lost (websocket closed code 1006; last: transport error: connect ECONNREFUSED 127.0.0.1:9); gave up after 1 reconnects");
  assert.doesNotMatch(reasons[0]!, /object Object/);
  assert.equal(describeError({ type: "error" }), "error event");
});

test("a SEQ frame before sequencing was granted closes the session", async () => {
  const net = new ScriptedNet();
  const client = new LatticeClient({ url: "ws://t", transport: net.factory, timers: new ManualTimers(), resume: true });
  const p = client.connect();
  net.last().open();
  // No token: the session is not sequenced, so a SEQ frame breaks the protocol.
  net.last().plain(Opcode.Welcome, { serverVersion: PROTOCOL_VERSION, sessionId: 1 }, net.last().last().requestId);
  await p;
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  net.last().seq(Opcode.Said, { text: "x" }, 0, 1, 0);
  assert.match(reasons[0] ?? "", /SEQ flag on a session without resume/);
  assert.ok(net.last().closed);
});

test("a resync rejects the requests the server had received with ResyncError; the others stay pending", async () => {
  const errors: string[] = [];
  const net = new ScriptedNet();
  const timers = new ManualTimers();
  const client = new LatticeClient({
    url: "ws://t",
    transport: net.factory,
    timers,
    resume: { random: () => 0.5 },
    onHandlerError: (e, where) => errors.push(`${where}: ${(e as Error).message}`),
  });
  const p = client.connect();
  net.last().open();
  net.last().plain(Opcode.Welcome, { serverVersion: PROTOCOL_VERSION, sessionId: 42, resumeToken: TOKEN }, net.last().last().requestId);
  await p;
  const first = net.last();
  const a = client.call(Opcode.JoinRoom, { room: "a" }, Opcode.Joined); // seq 1: the server gets it
  const b = client.call(Opcode.JoinRoom, { room: "b" }, Opcode.Joined); // seq 2: lost with the socket
  first.events.close("lost");
  const c = client.call(Opcode.JoinRoom, { room: "c" }, Opcode.Joined); // seq 3: made while reconnecting
  fire(timers, 50);
  const second = net.last();
  second.open();
  client.onResumed(() => {
    throw new Error("resumed bug");
  });
  const late: string[] = [];
  client.on(Opcode.Joined, (j) => late.push(j.room));
  second.plain(Opcode.Resumed, { resumeToken: TOKEN, lastReceivedSeq: 1, serverSeq: 40, resync: true });
  await assert.rejects(a, (e: unknown) => e instanceof ResyncError && e.opcode === Opcode.JoinRoom && e.requestId === first.sent[1]!.requestId);
  assert.equal(client.pendingCount, 2, "b and c were resent and wait for their answers");
  assert.deepEqual(second.sent.slice(1).map((f) => f.seq), [2, 3]);
  second.seq(Opcode.Joined, { room: "b", members: 1 }, first.sent[2]!.requestId, 41, 3);
  second.seq(Opcode.Joined, { room: "c", members: 1 }, second.sent[2]!.requestId, 42, 3);
  assert.equal((await b).room, "b");
  assert.equal((await c).room, "c");
  // The rejected request's answer, if it still comes, is a late reply: pushed to on() handlers.
  second.seq(Opcode.Joined, { room: "a", members: 1 }, first.sent[1]!.requestId, 43, 3);
  assert.deepEqual(late, ["a"]);
  assert.deepEqual(errors, ["onResumed handler: resumed bug"]);
  assert.ok(client.isOpen);
});
