// LatticeClient against a scripted in-memory server (no network, no real time).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as zlib from "node:zlib";
import {
  ConnectionClosedError,
  ErrorCode,
  FLAG_COMPRESSED,
  LatticeClient,
  ClientOptions,
  Opcode,
  PROTOCOL_VERSION,
  ProtocolError,
  RequestTimeoutError,
  ServerError,
  SocketTaskLike,
  TransportFactory,
  WebSocketLike,
  describeError,
  Kicked,
  codecs,
  encodeFrame,
  miniProgramTransport,
  webSocketTransport,
  Hello,
  Say,
} from "../../ts/index";
import { ManualTimers, ScriptedServer } from "./util";

async function connected(opts: Partial<ClientOptions> = {}) {
  const server = new ScriptedServer();
  const timers = new ManualTimers();
  const client = new LatticeClient({ url: "ws://test/ws", transport: server.factory, timers, ...opts });
  const p = client.connect();
  server.open();
  const hello = server.last();
  server.reply(Opcode.Welcome, { serverVersion: PROTOCOL_VERSION, sessionId: 77 }, hello.requestId);
  await p;
  return { server, timers, client };
}

test("handshake: Hello first with the protocol version, then Welcome", async () => {
  const server = new ScriptedServer();
  const client = new LatticeClient({ url: "ws://test/ws", transport: server.factory, timers: new ManualTimers() });
  const p = client.connect();
  assert.equal(server.url, "ws://test/ws");
  assert.equal(server.sent.length, 0, "nothing is sent before the transport opens");
  server.open();
  assert.equal(server.sent.length, 1);
  const hello = server.lastMessage(Opcode.Hello) as Hello;
  assert.equal(hello.clientVersion, PROTOCOL_VERSION);
  assert.notEqual(server.last().requestId, 0);
  server.reply(Opcode.Welcome, { serverVersion: "1.7.3-release", sessionId: 123456789 }, server.last().requestId);
  const welcome = await p;
  assert.equal(welcome.serverVersion, "1.7.3-release");
  assert.equal(String(client.sessionId), "123456789");
  assert.ok(client.isOpen);
});

test("VERSION_MISMATCH error rejects connect and closes", async () => {
  const server = new ScriptedServer();
  const client = new LatticeClient({ url: "ws://t", transport: server.factory, timers: new ManualTimers(), clientVersion: "2.0.0-alpha" });
  const p = client.connect();
  server.open();
  assert.equal((server.lastMessage(Opcode.Hello) as Hello).clientVersion, "2.0.0-alpha");
  server.reply(Opcode.Error, { code: ErrorCode.VERSION_MISMATCH, message: "server speaks 1", opcode: Opcode.Hello }, server.last().requestId);
  await assert.rejects(p, (e: unknown) => e instanceof ServerError && e.code === ErrorCode.VERSION_MISMATCH && e.requestOpcode === Opcode.Hello);
  assert.ok(server.closed);
  assert.ok(!client.isOpen);
});

test("a Welcome with another major is refused by the client", async () => {
  const server = new ScriptedServer();
  const client = new LatticeClient({ url: "ws://t", transport: server.factory, timers: new ManualTimers() });
  const p = client.connect();
  server.open();
  server.reply(Opcode.Welcome, { serverVersion: "9.0.0-release", sessionId: 1 }, server.last().requestId);
  await assert.rejects(p, (e: unknown) => e instanceof ProtocolError && /majors differ/.test(e.message));
  assert.ok(server.closed);
});

test("handshake timeout and transport close during handshake reject connect", async () => {
  const server = new ScriptedServer();
  const timers = new ManualTimers();
  const client = new LatticeClient({ url: "ws://t", transport: server.factory, timers });
  const p = client.connect();
  server.open();
  timers.fireAll();
  await assert.rejects(p, RequestTimeoutError);
  assert.ok(server.closed);

  const s2 = new ScriptedServer();
  const c2 = new LatticeClient({ url: "ws://t", transport: s2.factory, timers: new ManualTimers() });
  const p2 = c2.connect();
  s2.ev().close("socket closed code 1006");
  await assert.rejects(p2, (e: unknown) => e instanceof ConnectionClosedError && /1006/.test(e.message));
});

test("requests before connect are refused", async () => {
  const client = new LatticeClient({ url: "ws://t", transport: new ScriptedServer().factory, timers: new ManualTimers() });
  await assert.rejects(client.request(Opcode.Ping, {}), ConnectionClosedError);
  assert.throws(() => client.send(Opcode.Ping, {}), ConnectionClosedError);
  assert.throws(() => new LatticeClient({ url: "ws://t", clientVersion: "1.0" }), (e: unknown) => e instanceof RangeError && /^clientVersion version "1.0" is not of the form/.test(e.message));
});

test("replies are matched by request id, in any order", async () => {
  const { server, client } = await connected();
  const join = client.call(Opcode.JoinRoom, { room: "lobby" }, Opcode.Joined);
  const joinId = server.last().requestId;
  const ping = client.call(Opcode.Ping, { payload: new Uint8Array([1, 2, 3]) }, Opcode.Pong);
  const pingId = server.last().requestId;
  assert.notEqual(joinId, pingId);
  assert.equal(client.pendingCount, 2);
  server.reply(Opcode.Pong, { payload: new Uint8Array([1, 2, 3]) }, pingId);
  server.reply(Opcode.Joined, { room: "lobby", members: 4 }, joinId);
  const [joined, pong] = await Promise.all([join, ping]);
  assert.equal(joined.room, "lobby");
  assert.equal(joined.members, 4);
  assert.deepEqual(Array.from(pong.payload), [1, 2, 3]);
  assert.equal(client.pendingCount, 0);
});

test("an Error reply rejects the request with its code; a wrong reply type is a ProtocolError", async () => {
  const { server, client } = await connected();
  const say = client.request(Opcode.Say, { room: "nowhere", text: "hi" });
  server.reply(Opcode.Error, { code: ErrorCode.NOT_MEMBER, message: "join first", opcode: Opcode.Say }, server.last().requestId);
  await assert.rejects(say, (e: unknown) => e instanceof ServerError && e.code === ErrorCode.NOT_MEMBER && e.serverMessage === "join first");
  const ping = client.call(Opcode.Ping, {}, Opcode.Pong);
  server.reply(Opcode.Joined, { room: "x" }, server.last().requestId);
  await assert.rejects(ping, (e: unknown) => e instanceof ProtocolError && e.message === `expected opcode ${Opcode.Pong} (Pong), got ${Opcode.Joined} (Joined)`);
  assert.ok(client.isOpen, "a failed request leaves the session open");
});

test("timeouts reject, are counted, and a late reply goes to push handlers", async () => {
  const { server, timers, client } = await connected({ requestTimeoutMs: 5000, heartbeatMs: 0 });
  const join = client.request(Opcode.JoinRoom, { room: "slow" });
  const id = server.last().requestId;
  assert.equal([...timers.armed.values()][0]?.ms, 5000);
  timers.fireAll();
  await assert.rejects(join, (e: unknown) => e instanceof RequestTimeoutError && e.requestId === id);
  assert.equal(client.stats.timeouts, 1);
  assert.equal(client.pendingCount, 0);
  const late: string[] = [];
  client.on(Opcode.Joined, (m) => late.push(m.room));
  server.reply(Opcode.Joined, { room: "slow", members: 1 }, id);
  assert.deepEqual(late, ["slow"]);
  // Per-request timeout override.
  void client.request(Opcode.Ping, {}, { timeoutMs: 50 }).catch(() => {});
  assert.equal([...timers.armed.values()][0]?.ms, 50);
});

test("push handlers receive frames with request id 0 and can unsubscribe", async () => {
  const { server, client } = await connected();
  const got: string[] = [];
  const off = client.on(Opcode.Said, (m, frame) => {
    assert.equal(frame.requestId, 0);
    got.push(`${String(m.from)}:${m.text}`);
  });
  server.reply(Opcode.Said, { room: "lobby", from: 9, text: "one" }, 0);
  server.reply(Opcode.Said, { room: "lobby", from: 10, text: "two" }, 0);
  off();
  server.reply(Opcode.Said, { room: "lobby", from: 11, text: "three" }, 0);
  assert.deepEqual(got, ["9:one", "10:two"]);
  assert.equal(client.stats.unhandled, 1);
  // The sender's own Said carries the Say's request id and settles the call instead.
  const said = client.call(Opcode.Say, { room: "lobby", text: "me" }, Opcode.Said);
  server.reply(Opcode.Said, { room: "lobby", from: 77, text: "me" }, server.last().requestId);
  assert.equal((await said).text, "me");
});

test("bodies above the threshold are sent compressed, smaller ones plain", async () => {
  const { server, client } = await connected({ compression: { threshold: 100 } });
  client.send(Opcode.Say, { room: "lobby", text: "short" });
  assert.equal(server.last().flags, 0);
  const long = "lattice ".repeat(200);
  client.send(Opcode.Say, { room: "lobby", text: long });
  const f = server.last();
  assert.equal(f.flags, FLAG_COMPRESSED);
  assert.equal(f.requestId, 0);
  // An independent zlib (node's) inflates it.
  const say = codecs[Opcode.Say].decode(new Uint8Array(zlib.inflateSync(f.body))) as Say;
  assert.equal(say.text, long);
  assert.equal(client.stats.compressedSent, 1);
});

test("compressed pushes are inflated", async () => {
  const { server, client } = await connected();
  const text = "界".repeat(3000);
  const body = codecs[Opcode.Said].encode({ room: "lobby", from: 5, text }).finish();
  const got: string[] = [];
  client.on(Opcode.Said, (m) => got.push(m.text));
  server.push(encodeFrame(Opcode.Said, FLAG_COMPRESSED, 0, zlib.deflateSync(body)));
  assert.deepEqual(got, [text]);
  assert.equal(client.stats.compressedReceived, 1);
});

test("a compression bomb closes the session with a reason", async () => {
  const { server, client } = await connected({ compression: { maxInflated: 64 * 1024 } });
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  const pending = client.request(Opcode.Ping, {});
  server.push(encodeFrame(Opcode.Said, FLAG_COMPRESSED, 0, zlib.deflateSync(Buffer.alloc(8 << 20))));
  await assert.rejects(pending, ConnectionClosedError);
  assert.deepEqual(reasons, ["compressed body inflates beyond the cap of 65536 bytes"]);
  assert.ok(server.closed);
  assert.ok(!client.isOpen);
});

test("reserved flag bits and broken frames close the session", async () => {
  const { server, client } = await connected();
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  server.push(encodeFrame(Opcode.Pong, 0x0004, 0, new Uint8Array(0)));
  assert.deepEqual(reasons, ["reserved flag bits 0x0004"]);
  assert.ok(server.closed);
  server.push(encodeFrame(Opcode.Pong, 0, 0, new Uint8Array(0)));
  assert.equal(reasons.length, 1, "nothing is processed after close");
});

test("unknown opcodes and undecodable bodies are counted, not fatal", async () => {
  const { server, client } = await connected();
  server.push(encodeFrame(1000, 0, 0, new Uint8Array([8, 1])));
  assert.equal(client.stats.unknownOpcodes, 1);
  const ping = client.request(Opcode.Ping, {});
  server.push(encodeFrame(Opcode.Pong, 0, server.last().requestId, new Uint8Array([0x0a, 0x05, 1])));
  await assert.rejects(ping, (e: unknown) => e instanceof ProtocolError && /does not decode/.test(e.message));
  assert.equal(client.stats.decodeErrors, 1);
  assert.ok(client.isOpen);
});

test("pending requests are bounded", async () => {
  const { client } = await connected({ maxPending: 2 });
  const a = client.request(Opcode.Ping, {});
  const b = client.request(Opcode.Ping, {});
  await assert.rejects(client.request(Opcode.Ping, {}), (e: unknown) => e instanceof ProtocolError && /too many pending/.test(e.message));
  assert.equal(client.stats.rejectedPendingFull, 1);
  client.close("test over");
  await assert.rejects(a, (e: unknown) => e instanceof ConnectionClosedError && e.reason === "test over");
  await assert.rejects(b, ConnectionClosedError);
});

test("frames above maxFrame are not sent", async () => {
  const { server, client } = await connected({ maxFrame: 64, compression: { threshold: Infinity } });
  const before = server.sent.length;
  await assert.rejects(client.request(Opcode.Say, { room: "r", text: "x".repeat(100) }), /exceeds maxFrame 64/);
  assert.equal(server.sent.length, before);
  assert.equal(client.pendingCount, 0);
});

test("request ids skip 0 when they wrap", async () => {
  const { server, client } = await connected();
  (client as unknown as { nextId: number }).nextId = 0xffffffff;
  const a = client.request(Opcode.Ping, {});
  assert.equal(server.last().requestId, 0xffffffff);
  const b = client.request(Opcode.Ping, {});
  assert.equal(server.last().requestId, 1);
  client.close();
  await assert.rejects(a, ConnectionClosedError);
  await assert.rejects(b, ConnectionClosedError);
});

test("close rejects everything once and calls close handlers once", async () => {
  const { server, client } = await connected();
  let calls = 0;
  client.onClose(() => calls++);
  const p = client.request(Opcode.JoinRoom, { room: "a" });
  server.ev().close("socket closed code 1001");
  await assert.rejects(p, (e: unknown) => e instanceof ConnectionClosedError && /1001/.test(e.message));
  client.close();
  assert.equal(calls, 1);
  await assert.rejects(client.request(Opcode.Ping, {}), ConnectionClosedError);
});

test("mini-program adapter (wx.connectSocket shape)", async () => {
  const sent: ArrayBuffer[] = [];
  const cb: Partial<Record<"open" | "message" | "close" | "error", (x?: unknown) => void>> = {};
  let closed = false;
  let connectUrl = "";
  const task: SocketTaskLike = {
    send: (o) => void sent.push(o.data),
    close: () => {
      closed = true;
    },
    onOpen: (f) => void (cb.open = f),
    onMessage: (f) => void (cb.message = f as (x?: unknown) => void),
    onClose: (f) => void (cb.close = f as (x?: unknown) => void),
    onError: (f) => void (cb.error = f),
  };
  const client = new LatticeClient({
    url: "wss://game/ws",
    transport: miniProgramTransport((o) => {
      connectUrl = o.url;
      return task;
    }),
    timers: new ManualTimers(),
  });
  const p = client.connect();
  assert.equal(connectUrl, "wss://game/ws");
  cb.open!();
  assert.equal(sent.length, 1);
  assert.ok(sent[0] instanceof ArrayBuffer, "SocketTask.send gets a whole ArrayBuffer");
  const hello = new Uint8Array(sent[0]!);
  const id = new DataView(hello.buffer).getUint32(8, true);
  const welcome = encodeFrame(Opcode.Welcome, 0, id, codecs[Opcode.Welcome].encode({ serverVersion: PROTOCOL_VERSION, sessionId: 3 }).finish());
  // Deliver as a standalone ArrayBuffer, as WeChat does.
  cb.message!({ data: welcome.buffer.slice(welcome.byteOffset, welcome.byteOffset + welcome.byteLength) });
  await p;
  assert.equal(String(client.sessionId), "3");
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  cb.close!({ code: 1000, reason: "bye" });
  assert.deepEqual(reasons, ["socket closed code 1000: bye"]);
  assert.ok(closed);
});

test("mini-program adapter: a text message is a protocol error that closes the session", async () => {
  const cb: Partial<Record<"open" | "message" | "close" | "error", (x?: unknown) => void>> = {};
  let closed = false;
  const closedWith: ({ code?: number; reason?: string } | undefined)[] = [];
  const sent: ArrayBuffer[] = [];
  const task: SocketTaskLike = {
    send: (o) => void sent.push(o.data),
    close: (o) => {
      closed = true;
      closedWith.push(o);
    },
    onOpen: (f) => void (cb.open = f),
    onMessage: (f) => void (cb.message = f as (x?: unknown) => void),
    onClose: (f) => void (cb.close = f as (x?: unknown) => void),
    onError: (f) => void (cb.error = f),
  };
  const client = new LatticeClient({ url: "wss://game/ws", transport: miniProgramTransport(() => task), timers: new ManualTimers() });
  const p = client.connect();
  cb.open!();
  const id = new DataView(sent[0]!).getUint32(8, true);
  const welcome = encodeFrame(Opcode.Welcome, 0, id, codecs[Opcode.Welcome].encode({ serverVersion: PROTOCOL_VERSION }).finish());
  cb.message!({ data: welcome.buffer.slice(welcome.byteOffset, welcome.byteOffset + welcome.byteLength) });
  await p;
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  cb.message!({ data: "hello" });
  assert.match(reasons[0] ?? "", /protocol error: text socket message/);
  assert.ok(closed);
  assert.deepEqual(closedWith, [{ code: 1003, reason: "text message received" }]);
  assert.equal(client.connectionState, "closed");
  // During the handshake it rejects connect() with ProtocolError.
  const c2 = new LatticeClient({ url: "wss://game/ws", transport: miniProgramTransport(() => task), timers: new ManualTimers() });
  const p2 = c2.connect();
  cb.open!();
  cb.message!({ data: "hello" });
  await assert.rejects(p2, (e: unknown) => e instanceof ProtocolError && /text socket message/.test(e.message));
});

test("connect() times out when the transport never opens, and closes it", async () => {
  const server = new ScriptedServer();
  const timers = new ManualTimers();
  const client = new LatticeClient({ url: "ws://t", transport: server.factory, timers, requestTimeoutMs: 3000 });
  const p = client.connect();
  // The bound starts at connect(), before any open event.
  assert.deepEqual([...timers.armed.values()].map((t) => t.ms), [3000]);
  timers.fireAll();
  await assert.rejects(
    p,
    (e: unknown) => e instanceof RequestTimeoutError && e.opcode === Opcode.Hello && /handshake not complete within 3000 ms \(the transport did not open\)/.test(e.message),
  );
  assert.ok(server.closed, "the transport is closed");
  assert.equal(client.connectionState, "closed");
  assert.equal(client.stats.timeouts, 1);
  server.open(); // a late open changes nothing
  assert.equal(server.sent.length, 0);

  // One bound for the whole handshake: the timer armed at connect() also covers the Welcome.
  const s2 = new ScriptedServer();
  const t2 = new ManualTimers();
  const c2 = new LatticeClient({ url: "ws://t", transport: s2.factory, timers: t2, requestTimeoutMs: 3000 });
  const p2 = c2.connect();
  s2.open();
  t2.fireAll();
  await assert.rejects(p2, (e: unknown) => e instanceof RequestTimeoutError && /\(no Welcome\)/.test(e.message));
  // A successful handshake leaves no handshake timer behind.
  const { timers: t3 } = await connected();
  assert.deepEqual([...t3.armed.values()].map((t) => t.ms), [15000], "the handshake bound is cleared once Welcome came (the heartbeat remains)");
});

test("a SEQ frame on a session that is not sequenced closes it", async () => {
  const { server, client } = await connected();
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  const said: string[] = [];
  client.on(Opcode.Said, (m) => said.push(m.text));
  const pending = client.request(Opcode.Ping, {});
  server.push(encodeFrame(Opcode.Said, 0, 0, codecs[Opcode.Said].encode({ room: "r", text: "x" }).finish(), { seq: 1, ack: 0 }));
  assert.deepEqual(said, [], "not delivered");
  assert.match(reasons[0] ?? "", /protocol error: SEQ flag on a session without resume/);
  assert.ok(server.closed);
  await assert.rejects(pending, ConnectionClosedError);
});

test("transport errors are described readably, never [object Object]", async () => {
  assert.equal(describeError({ type: "error" }), "error event");
  const wsErr = { type: "error", message: "connect ECONNREFUSED 127.0.0.1:9", error: Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:9"), { code: "ECONNREFUSED" }) };
  assert.equal(describeError(wsErr), "connect ECONNREFUSED 127.0.0.1:9, code ECONNREFUSED");
  assert.equal(describeError({ errMsg: "connectSocket:fail timeout", errCode: 5 }), "connectSocket:fail timeout, code 5");
  assert.equal(describeError(new TypeError("fetch failed")), "TypeError: fetch failed");
  assert.equal(describeError("boom"), "boom");
  assert.equal(describeError({}), "unknown error (no details from the socket API)");
  const server = new ScriptedServer();
  const client = new LatticeClient({ url: "ws://t", transport: server.factory, timers: new ManualTimers() });
  const p = client.connect();
  server.ev().error(wsErr);
  await assert.rejects(p, (e: unknown) => e instanceof ConnectionClosedError && e.message === "connection closed: transport error: connect ECONNREFUSED 127.0.0.1:9, code ECONNREFUSED");
});

test("a transport error on an open connection ends it at once (a send that failed loses no wait)", async () => {
  const { server, client } = await connected();
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  const pending = client.request(Opcode.Ping, {});
  server.ev().error({ errMsg: "sendSocketMessage:fail", errCode: 1 });
  await assert.rejects(pending, ConnectionClosedError);
  assert.equal(client.connectionState, "closed");
  assert.ok(server.closed, "the transport is closed");
  assert.deepEqual(reasons, ["transport error: sendSocketMessage:fail, code 1"]);
});

test("without a WebSocket, connect() rejects with ConnectionClosedError", async () => {
  const g = globalThis as { WebSocket?: unknown };
  const saved = g.WebSocket;
  delete g.WebSocket;
  try {
    const client = new LatticeClient({ url: "ws://t", timers: new ManualTimers() });
    await assert.rejects(client.connect(), (e: unknown) => e instanceof ConnectionClosedError && /cannot open the transport: no WebSocket in this environment/.test(e.message));
    assert.equal(client.connectionState, "closed");
    // Any factory that throws is reported the same way.
    const throwing: TransportFactory = () => {
      throw new TypeError("bad url");
    };
    const c2 = new LatticeClient({ url: "ws://t", transport: throwing, timers: new ManualTimers() });
    await assert.rejects(c2.connect(), (e: unknown) => e instanceof ConnectionClosedError && /TypeError: bad url/.test(e.message));
  } finally {
    if (saved !== undefined) g.WebSocket = saved;
  }
});

test("Kicked then the close ends an ordinary session with the kick's reason", async () => {
  const { server, client } = await connected();
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  const kicked: Kicked[] = [];
  client.on(Opcode.Kicked, (k) => kicked.push(k));
  server.reply(Opcode.Kicked, { code: ErrorCode.LOGGED_IN_ELSEWHERE, message: "logged in on another session" }, 0);
  assert.equal(kicked.length, 1, "still delivered to on()");
  server.ev().close("websocket closed code 1008: closed by server: account logged in elsewhere", { code: 1008, reason: "closed by server: account logged in elsewhere" });
  assert.deepEqual(reasons, ["kicked: logged in on another session (LOGGED_IN_ELSEWHERE); websocket closed code 1008: closed by server: account logged in elsewhere"]);
});

test("WebSocket adapter (WHATWG shape)", async () => {
  const sockets: FakeWebSocket[] = [];
  class FakeWebSocket implements WebSocketLike {
    binaryType = "blob";
    sent: Uint8Array[] = [];
    closedWith: { code?: number; reason?: string }[] = [];
    onopen: ((ev: unknown) => unknown) | null = null;
    onmessage: ((ev: { data: unknown }) => unknown) | null = null;
    onclose: ((ev: { code?: number; reason?: string }) => unknown) | null = null;
    onerror: ((ev: unknown) => unknown) | null = null;
    constructor(readonly url: string) {
      sockets.push(this);
    }
    send(data: ArrayBuffer | ArrayBufferView): void {
      this.sent.push(new Uint8Array(data as ArrayBuffer));
    }
    close(code?: number, reason?: string): void {
      this.closedWith.push({ code, reason });
      this.onclose?.({ code: code ?? 1005 });
    }
  }
  const client = new LatticeClient({ url: "ws://x", transport: webSocketTransport(FakeWebSocket), timers: new ManualTimers() });
  const p = client.connect();
  const ws = sockets[0]!;
  assert.equal(ws.binaryType, "arraybuffer");
  ws.onopen!({});
  const id = new DataView(ws.sent[0]!.buffer, ws.sent[0]!.byteOffset).getUint32(8, true);
  const welcome = encodeFrame(Opcode.Welcome, 0, id, codecs[Opcode.Welcome].encode({ serverVersion: PROTOCOL_VERSION }).finish());
  ws.onmessage!({ data: welcome.buffer });
  await p;
  assert.ok(client.isOpen);
  // A text message is not a frame: a protocol error that closes the session (the server closes with 1003).
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  const pending = client.request(Opcode.Ping, {});
  ws.onmessage!({ data: "text" });
  assert.ok(!client.isOpen);
  assert.match(reasons[0] ?? "", /protocol error: text WebSocket message/);
  // The client closes as the server would: code 1003 (unsupported data).
  assert.deepEqual(ws.closedWith, [{ code: 1003, reason: "text message received" }]);
  await assert.rejects(pending, (e: unknown) => e instanceof ConnectionClosedError && /text WebSocket message/.test(e.message));
  client.close();
  assert.equal(reasons.length, 1);
  // A WHATWG WebSocket that refuses the code (browsers allow 1000 and 3000-4999 only): a plain close.
  class StrictWebSocket extends FakeWebSocket {
    override close(code?: number, reason?: string): void {
      if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) throw new Error("InvalidAccessError");
      super.close(code, reason);
    }
  }
  const strict = new LatticeClient({ url: "ws://x", transport: webSocketTransport(StrictWebSocket), timers: new ManualTimers() });
  const p2 = strict.connect();
  const ws2 = sockets[1]!;
  ws2.onopen!({});
  ws2.onmessage!({ data: "text" });
  await assert.rejects(p2, (e: unknown) => e instanceof ProtocolError && /text WebSocket message/.test(e.message));
  assert.deepEqual(ws2.closedWith, [{ code: undefined, reason: undefined }]);
  // A broken frame closes with 1002 (protocol error).
  const c3 = new LatticeClient({ url: "ws://x", transport: webSocketTransport(FakeWebSocket), timers: new ManualTimers() });
  const p3 = c3.connect();
  const ws3 = sockets[2]!;
  ws3.onopen!({});
  ws3.onmessage!({ data: new Uint8Array(5).buffer });
  await assert.rejects(p3, (e: unknown) => e instanceof ProtocolError);
  assert.deepEqual(ws3.closedWith, [{ code: 1002, reason: "protocol error" }]);
  const g = globalThis as { WebSocket?: unknown };
  const saved = g.WebSocket;
  delete g.WebSocket;
  try {
    assert.throws(() => webSocketTransport()("ws://x", { open() {}, message() {}, close() {}, error() {}, protocolError() {} }), /no WebSocket/);
  } finally {
    if (saved !== undefined) g.WebSocket = saved;
  }
});

test("close() during the handshake rejects connect() with ConnectionClosedError, opened or not", async () => {
  for (const openFirst of [false, true]) {
    const server = new ScriptedServer();
    const timers = new ManualTimers();
    const client = new LatticeClient({ url: "ws://t", transport: server.factory, timers });
    const reasons: string[] = [];
    client.onClose((r) => reasons.push(r));
    const p = client.connect();
    if (openFirst) server.open();
    client.close("user cancel");
    await assert.rejects(p, (e: unknown) => e instanceof ConnectionClosedError && e.reason === "user cancel");
    assert.deepEqual(reasons, ["user cancel"]);
    assert.equal(timers.armed.size, 0, "no timer left behind");
    assert.ok(server.closed);
  }
  // Welcome arrived but connect() has not resolved yet (its callback is a microtask away): close() wins.
  const server = new ScriptedServer();
  const timers = new ManualTimers();
  const client = new LatticeClient({ url: "ws://t", transport: server.factory, timers });
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  const p = client.connect();
  server.open();
  server.reply(Opcode.Welcome, { serverVersion: PROTOCOL_VERSION, sessionId: 1 }, server.last().requestId);
  client.close("user cancel");
  await assert.rejects(p, ConnectionClosedError);
  assert.equal(client.connectionState, "closed");
  assert.equal(timers.armed.size, 0, "no heartbeat on a closed client");
  assert.deepEqual(reasons, ["user cancel"]);
});

test("a protocol break during the handshake rejects connect() with ProtocolError; onClose gets the bare reason", async () => {
  const server = new ScriptedServer();
  const client = new LatticeClient({ url: "ws://t", transport: server.factory, timers: new ManualTimers() });
  const reasons: string[] = [];
  client.onClose((r) => reasons.push(r));
  const p = client.connect();
  server.open();
  server.push(encodeFrame(Opcode.Welcome, 0x0004, server.last().requestId, new Uint8Array(0)));
  await assert.rejects(p, (e: unknown) => e instanceof ProtocolError && /reserved flag bits/.test(e.message));
  assert.equal(reasons.length, 1);
  assert.match(reasons[0]!, /^reserved flag bits/);

  // A transport error or close during the handshake: onClose gets the reason without the
  // "connection closed: " prefix of the error's message.
  const s2 = new ScriptedServer();
  const c2 = new LatticeClient({ url: "ws://t", transport: s2.factory, timers: new ManualTimers() });
  const r2: string[] = [];
  c2.onClose((r) => r2.push(r));
  const p2 = c2.connect();
  s2.ev().error(new Error("connect ECONNREFUSED"));
  await assert.rejects(p2, (e: unknown) => e instanceof ConnectionClosedError && e.reason === "transport error: connect ECONNREFUSED");
  assert.deepEqual(r2, ["transport error: connect ECONNREFUSED"]);
});

test("a throwing push, onClose or onResumed handler is reported and processing goes on", async () => {
  const errors: string[] = [];
  const { server, client } = await connected({ onHandlerError: (e, where) => errors.push(`${where}: ${(e as Error).message}`) });
  const got: string[] = [];
  client.on(Opcode.Said, (m) => {
    got.push(`a:${m.text}`);
    if (m.text === "1") throw new Error("handler bug");
  });
  client.on(Opcode.Said, (m) => got.push(`b:${m.text}`));
  // Delivered the way a socket's event emitter would: a throw escaping here would reach it.
  assert.doesNotThrow(() => server.reply(Opcode.Said, { room: "r", text: "1" }, 0));
  server.reply(Opcode.Said, { room: "r", text: "2" }, 0);
  assert.deepEqual(got, ["a:1", "b:1", "a:2", "b:2"]);
  assert.deepEqual(errors, [`push handler of opcode ${Opcode.Said} (Said): handler bug`]);
  assert.ok(client.isOpen);
  const ping = client.call(Opcode.Ping, {}, Opcode.Pong);
  server.reply(Opcode.Pong, {}, server.last().requestId);
  await ping;
  const closed: string[] = [];
  client.onClose(() => {
    throw new Error("close bug");
  });
  client.onClose((r) => closed.push(r));
  assert.doesNotThrow(() => server.ev().close("websocket closed code 1006"));
  assert.deepEqual(closed, ["websocket closed code 1006"]);
  assert.equal(errors[1], "onClose handler: close bug");
});

test("without onHandlerError a throwing handler goes to console.error", async () => {
  const { server, client } = await connected();
  const logged: unknown[][] = [];
  const saved = console.error;
  console.error = (...args: unknown[]) => void logged.push(args);
  try {
    client.on(Opcode.Said, () => {
      throw new Error("oops");
    });
    server.reply(Opcode.Said, { room: "r", text: "x" }, 0);
  } finally {
    console.error = saved;
  }
  assert.equal(logged.length, 1);
  assert.equal(logged[0]![0], `lattice: push handler of opcode ${Opcode.Said} (Said) threw`);
  assert.equal((logged[0]![1] as Error).message, "oops");
  assert.ok(client.isOpen);
});

test("a body larger than compression.maxInflated is refused locally, compressible or not", async () => {
  const { server, client } = await connected({ compression: { maxInflated: 1000 } });
  const before = server.sent.length;
  // Compresses to a few bytes, far below maxFrame: the server would still refuse to inflate it.
  await assert.rejects(
    client.request(Opcode.Ping, { payload: new Uint8Array(1001).fill(65) }),
    (e: unknown) => e instanceof ProtocolError && /body of 1004 bytes exceeds compression.maxInflated 1000/.test(e.message),
  );
  assert.throws(() => client.send(Opcode.Ping, { payload: new Uint8Array(2000) }), ProtocolError);
  assert.equal(server.sent.length, before, "nothing sent");
  assert.equal(client.pendingCount, 0);
  client.send(Opcode.Ping, { payload: new Uint8Array(997).fill(65) }); // a 1000-byte body goes
  assert.equal(server.sent.length, before + 1);
  assert.ok(client.isOpen);
  // The default is the server's default compress.max_inflated (1 MiB), below the default maxFrame's reach
  // only once compressed: a 1.1 MB compressible body is refused before it is compressed.
  const d = await connected();
  await assert.rejects(d.client.request(Opcode.Ping, { payload: new Uint8Array(1_100_000).fill(65) }), /exceeds compression.maxInflated 1048576/);
});

test("options are validated: bad durations and counts throw RangeError, huge durations are clamped", async () => {
  const server = new ScriptedServer();
  const make = (o: Partial<ClientOptions>) => new LatticeClient({ url: "ws://t", transport: server.factory, timers: new ManualTimers(), ...o });
  for (const v of [0, -1, NaN, "5" as unknown as number]) {
    assert.throws(() => make({ requestTimeoutMs: v }), (e: unknown) => e instanceof RangeError && /requestTimeoutMs must be a number of ms >= 1/.test(e.message));
  }
  assert.throws(() => make({ maxPending: 0 }), /maxPending must be an integer >= 1/);
  assert.throws(() => make({ maxPending: NaN }), RangeError);
  assert.throws(() => make({ maxFrame: 1.5 }), RangeError);
  assert.throws(() => make({ compression: { maxInflated: NaN } }), /compression.maxInflated/);
  for (const level of [42, -3, NaN, 1.5, "x"]) {
    assert.throws(() => make({ compression: { level: level as unknown as 1 } }), (e: unknown) => e instanceof RangeError && /compression.level must be an integer 0..9/.test(e.message));
  }
  make({ compression: { level: 0 } });
  make({ compression: { level: 9 } });
  assert.throws(() => make({ resume: { baseDelayMs: -5 } }), /resume.baseDelayMs/);
  assert.throws(() => make({ resume: { maxUnacked: 0 } }), /resume.maxUnacked/);
  make({ compression: { threshold: Infinity }, resume: { baseDelayMs: 0, ackDelayMs: 0, maxAttempts: 0 } });

  // Above 2^31 − 1 ms (Infinity included) a host timer would fire at once: clamped.
  for (const v of [Infinity, 3e9, 2 ** 31]) {
    const { server: s, timers, client } = await connected({ requestTimeoutMs: v });
    const ms = [...timers.armed.values()].map((t) => t.ms);
    void client.request(Opcode.Ping, {}).catch(() => {});
    const armed = [...timers.armed.values()].map((t) => t.ms).filter((m, i) => i >= ms.length || m !== ms[i]);
    assert.ok(armed.includes(2 ** 31 - 1), `clamped to 2^31 - 1 (armed ${armed})`);
    assert.equal(s.sent.length, 2);
  }
  const { timers, client } = await connected();
  void client.request(Opcode.Ping, {}, { timeoutMs: Infinity }).catch(() => {});
  assert.ok([...timers.armed.values()].some((t) => t.ms === 2 ** 31 - 1));
  await assert.rejects(client.request(Opcode.Ping, {}, { timeoutMs: 0 }), /timeoutMs must be a number of ms >= 1, got 0/);
  await assert.rejects(client.request(Opcode.Ping, {}, { timeoutMs: NaN }), RangeError);
  assert.equal(client.pendingCount, 1);
});
