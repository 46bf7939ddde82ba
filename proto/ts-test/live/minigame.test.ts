// The generated TypeScript client in Node through a mini-game transport adapter: the client is
// given `miniProgramTransport(connectSocket)`, where `connectSocket` returns an object shaped like
// WeChat's SocketTask (onOpen/onMessage/onClose/onError, send({data}), close()) built here on the
// `ws` package. Node 20 has no global WebSocket, so this also proves the client does not assume
// the browser global. Two clients chat in a room through a real server.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import WebSocket from "ws";
import { LatticeClient, Opcode, miniProgramTransport, SocketTaskLike, ConnectSocketOptions } from "../../ts/index";
import { startLattice } from "./server";

/** What `wx.connectSocket` returns, on the `ws` package. */
function connectSocket(opts: ConnectSocketOptions): SocketTaskLike {
  const ws = new WebSocket(opts.url, ["lattice.v1"]);
  ws.binaryType = "arraybuffer";
  return {
    send: ({ data, fail }) => ws.send(data, (err) => err && fail && fail(err)),
    close: (o) => ws.close(o?.code ?? 1000, o?.reason),
    onOpen: (cb) => ws.on("open", () => cb()),
    onMessage: (cb) => ws.on("message", (data: ArrayBuffer) => cb({ data })),
    onClose: (cb) => ws.on("close", (code: number, reason: Buffer) => cb({ code, reason: reason.toString() })),
    onError: (cb) => ws.on("error", (err: Error) => cb(err)),
  };
}

test("two mini-game clients chat through lattice over WebSocket", async () => {
  const server = await startLattice();
  try {
    const url = `ws://127.0.0.1:${server.http}/ws`;
    const a = new LatticeClient({ url, transport: miniProgramTransport(connectSocket) });
    const b = new LatticeClient({ url, transport: miniProgramTransport(connectSocket) });
    const wa = await a.connect();
    const wb = await b.connect();
    assert.notEqual(String(wa.sessionId), String(wb.sessionId));
    const pong = await a.call(Opcode.Ping, { payload: new Uint8Array([1, 2, 3]) }, Opcode.Pong);
    assert.deepEqual([...pong.payload], [1, 2, 3]);
    // A body above the compression threshold travels compressed both ways.
    const big = new Uint8Array(5000).fill(7);
    const bigPong = await a.call(Opcode.Ping, { payload: big }, Opcode.Pong);
    assert.equal(bigPong.payload.length, 5000);
    assert.ok(a.stats.compressedReceived >= 1, "the server compressed the large Pong");
    await a.call(Opcode.JoinRoom, { room: "minigame" }, Opcode.Joined);
    const joined = await b.call(Opcode.JoinRoom, { room: "minigame" }, Opcode.Joined);
    assert.equal(joined.members, 2);
    const heard = new Promise<string>((resolve) => b.on(Opcode.Said, (s) => resolve(`${String(s.from)}:${s.text}`)));
    const echo = await a.call(Opcode.Say, { room: "minigame", text: "hi from a" }, Opcode.Said);
    assert.equal(echo.text, "hi from a");
    assert.equal(await heard, `${String(wa.sessionId)}:hi from a`);
    const closed = new Promise<string>((resolve) => a.onClose(resolve));
    a.close();
    await closed;
    b.close();
  } finally {
    await server.stop();
  }
});
