// Resume in a browser (docs/PROTOCOL.md "Resume"): in headless Chromium, the generated client
// (the bundle the server serves at /lattice.js) opens a resumable session over ws://, joins a room
// and listens while another page's client says numbered lines; mid-chat its WebSocket is closed
// (`WebSocket.close()`, the only way a page can drop its socket), three times. The client
// reconnects by itself, resumes on a new WebSocket (landing on either shard: the server runs two),
// and ends with every line exactly once and in order; a line it says while reconnecting reaches
// the other page exactly once.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { launchChromium, requireChromium, startLattice } from "./server";

const LINES = 60;
const CUTS = [10, 25, 40];

test("the TypeScript client in Chromium closes its WebSocket mid-chat and resumes with nothing lost", async () => {
  requireChromium();
  const server = await startLattice([]);
  const origin = `http://127.0.0.1:${server.http}`;
  const browser = await launchChromium();
  try {
    const context = await browser.newContext();
    const listener = await context.newPage();
    const speaker = await context.newPage();
    const errors: string[] = [];
    for (const p of [listener, speaker]) p.on("pageerror", (e) => errors.push(String(e)));
    await listener.goto(`${origin}/`);
    await speaker.goto(`${origin}/`);

    // The listener: a resumable client whose WebSockets the test can reach (to close them).
    const welcome = await listener.evaluate(async () => {
      const w = window as any;
      const L = w.Lattice;
      w.sockets = [] as WebSocket[];
      class Tracked extends WebSocket {
        constructor(url: string) {
          super(url);
          w.sockets.push(this);
        }
      }
      w.got = [] as string[];
      w.resumed = [] as any[];
      const client = new L.LatticeClient({
        url: `ws://${location.host}/ws`,
        transport: L.webSocketTransport(Tracked),
        requestTimeoutMs: 10000,
        resume: { baseDelayMs: 50, maxDelayMs: 500 },
      });
      client.on(L.Opcode.Said, (s: any) => w.got.push(s.text));
      client.onResumed((info: any) => w.resumed.push(info));
      w.client = client;
      const wel = await client.connect();
      await client.call(L.Opcode.JoinRoom, { room: "lobby" }, L.Opcode.Joined);
      return { session: String(wel.sessionId), resumable: client.resumable };
    });
    assert.equal(welcome.resumable, true, "the server grants resume over WebSocket");

    // The speaker: an ordinary client in another page.
    await speaker.evaluate(async () => {
      const w = window as any;
      const L = w.Lattice;
      w.heard = [] as string[];
      const client = new L.LatticeClient({ url: `ws://${location.host}/ws`, requestTimeoutMs: 10000 });
      client.on(L.Opcode.Said, (s: any) => w.heard.push(s.text));
      w.client = client;
      await client.connect();
      await client.call(L.Opcode.JoinRoom, { room: "lobby" }, L.Opcode.Joined);
    });

    let cuts = 0;
    for (let i = 0; i < LINES; i++) {
      await speaker.evaluate((text) => (window as any).client.call((window as any).Lattice.Opcode.Say,
        { room: "lobby", text }, (window as any).Lattice.Opcode.Said), `line ${i}`);
      if (CUTS.includes(i)) {
        // Each cut hits an established socket: the resume of the cut before has completed (else
        // the close would land on a socket still resuming, and two cuts would be one reconnect).
        await listener.waitForFunction((n) => (window as any).resumed.length >= n, cuts, { timeout: 20000 });
        // Mid-chat: the listener's socket goes away while lines keep coming; the listener also
        // says something while it reconnects (kept, sent after the resume).
        await listener.evaluate(async (n) => {
          const w = window as any;
          w.sockets[w.sockets.length - 1].close();
          w.pendingSay = w.client.call(w.Lattice.Opcode.Say, { room: "lobby", text: `from listener ${n}` }, w.Lattice.Opcode.Said);
        }, cuts);
        cuts++;
      }
    }
    await listener.waitForFunction((n) => (window as any).got.filter((t: string) => t.startsWith("line ")).length >= n,
      LINES, { timeout: 20000 });
    await listener.evaluate(() => (window as any).pendingSay);
    await speaker.waitForFunction((n) => (window as any).heard.filter((t: string) => t.startsWith("from listener")).length >= n,
      CUTS.length, { timeout: 20000 });
    // A moment for any duplicate to show up, then the exact lists.
    await listener.evaluate(() => (window as any).client.call((window as any).Lattice.Opcode.Ping, { payload: new Uint8Array([1]) }, (window as any).Lattice.Opcode.Pong));

    const got: string[] = await listener.evaluate(() => (window as any).got.filter((t: string) => t.startsWith("line ")));
    assert.deepEqual(got, Array.from({ length: LINES }, (_, i) => `line ${i}`), "every line once, in order");
    const heard: string[] = await speaker.evaluate(() => (window as any).heard.filter((t: string) => t.startsWith("from listener")));
    assert.deepEqual(heard, CUTS.map((_, n) => `from listener ${n}`), "what the listener said while reconnecting arrived once");
    const stats = await listener.evaluate(() => ({ ...(window as any).client.stats, sockets: (window as any).sockets.length,
      resumed: (window as any).resumed, session: String((window as any).client.sessionId ?? "") }));
    assert.equal(stats.resumes, CUTS.length, JSON.stringify(stats));
    assert.equal(stats.resyncs, 0);
    assert.equal(stats.sockets, CUTS.length + 1, "one new WebSocket per cut");
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.stop();
  }
});
