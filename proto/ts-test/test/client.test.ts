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
  WebSocketLike,
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
  assert.throws(() => new LatticeClient({ url: "ws://t", clientVersion: "1.0" }), /not of the form/);
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
  await assert.rejects(ping, ProtocolError);
  assert.ok(client.isOpen, "a failed request leaves the session open");
});

test("timeouts reject, are counted, and a late reply goes to push handlers", async () => {
  const { server, timers, client } = await connected({ requestTimeoutMs: 5000 });
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

test("WebSocket adapter (WHATWG shape)", async () => {
  const sockets: FakeWebSocket[] = [];
  class FakeWebSocket implements WebSocketLike {
    binaryType = "blob";
    sent: Uint8Array[] = [];
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
    close(): void {
      this.onclose?.({ code: 1000 });
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
  // A text message is not a frame: reported as a transport error, the session stays up.
  ws.onmessage!({ data: "text" });
  assert.ok(client.isOpen);
  client.close();
  assert.ok(!client.isOpen);
  const g = globalThis as { WebSocket?: unknown };
  const saved = g.WebSocket;
  delete g.WebSocket;
  try {
    assert.throws(() => webSocketTransport()("ws://x", { open() {}, message() {}, close() {}, error() {} }), /no WebSocket/);
  } finally {
    if (saved !== undefined) g.WebSocket = saved;
  }
});
