// The operations console (`GET /console` on the admin listener) in headless Chromium (Debian's
// chromium, driven by playwright-core) against a real lattice started with a known admin token:
// three clients (the generated TypeScript client over WebSocket, on the `ws` package) hold
// sessions; the page asks for the token, then shows the sessions per shard and live charts, closes
// one session from its list (the client sees its connection end), edits the IP rules (a bad block
// is refused and shown, nothing changes), and refuses a wrong token. Saves a screenshot to the
// temp dir.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as os from "node:os";
import * as path from "node:path";
import WebSocket from "ws";
import { Page } from "playwright-core";
import { LatticeClient, Opcode, miniProgramTransport, SocketTaskLike, ConnectSocketOptions } from "../../ts/index";
import { launchChromium, requireChromium, startLattice } from "./server";

const TOKEN = "console-live-token-7f3a";
// Upper bound of every wait for the page (it polls every 500 ms here); never a timing assertion.
const WAIT = { timeout: 20_000 };

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

async function login(page: Page, token: string) {
  await page.waitForSelector("#login", { state: "visible" });
  await page.fill("#token", token);
  await page.click("#login-btn");
}

const points = (page: Page, chart: string, series: string) =>
  page.$eval(`#${chart} path[data-series="${series}"]`, (p) => Number(p.getAttribute("data-points")));

test("the operations console in Chromium shows live numbers, closes a session and edits the IP rules", async () => {
  requireChromium();
  const server = await startLattice([], { adminToken: TOKEN });
  const url = `ws://127.0.0.1:${server.http}/ws`;
  const clients: LatticeClient[] = [];
  const browser = await launchChromium();
  try {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const c = new LatticeClient({ url, transport: miniProgramTransport(connectSocket) });
      const w = await c.connect();
      clients.push(c);
      ids.push(String(w.sessionId));
      await c.call(Opcode.JoinRoom, { room: "console" }, Opcode.Joined);
    }
    const adminUrl = `http://127.0.0.1:${server.admin}`;
    const admin = async (method: string, p: string, body?: unknown) => {
      const r = await fetch(adminUrl + p, {
        method,
        headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      assert.equal(r.status, 200, `${method} ${p}`);
      return r.json() as Promise<any>;
    };

    // A wrong token: the data routes answer 401 and the page asks again, showing why.
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error" && !/Failed to load resource: the server responded with a status of 40[01]/.test(m.text())) errors.push(m.text()); });
    await page.goto(`${adminUrl}/console?every=500`);
    await login(page, "not-the-token");
    await page.waitForFunction(() => /refused the token/.test(document.getElementById("login-error")!.textContent!), null, WAIT);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("lattice-admin-token")), null, "a refused token is not kept");

    await login(page, TOKEN);
    await page.waitForFunction(() => document.getElementById("total-open")!.textContent === "3", null, WAIT);
    // Per shard, the page's rows add up to what it shows, and to what the server counts.
    const perShard = await page.$$eval("#shard-table tbody tr", (rows) => rows.map((r) => Number(r.children[1].textContent)));
    assert.equal(perShard.length, 2, "two shards");
    assert.equal(perShard.reduce((a, b) => a + b, 0), 3);
    assert.equal((await admin("GET", "/admin/sessions")).open, 3);
    const listed = await page.$$eval("#sessions tbody tr", (rows) => rows.map((r) => r.getAttribute("data-id")));
    assert.deepEqual([...listed].sort(), [...ids].sort(), "the list shows exactly the clients' sessions");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("lattice-admin-token")), TOKEN);

    // Live charts: the session gauge gains points with every poll; requests made while the page
    // watches show up as a rate and a handler latency.
    await page.waitForFunction(() => Number(document.querySelector('#chart-sessions path[data-series="open"]')!.getAttribute("data-points")) >= 3, null, WAIT);
    let rid = 0;
    const pinger = setInterval(() => {
      rid++;
      clients[1].call(Opcode.JoinRoom, { room: `console-${rid % 3}` }, Opcode.Joined).catch(() => {});
    }, 50);
    try {
      await page.waitForFunction(() => Number(document.querySelector('#chart-latency path[data-series="p99"]')!.getAttribute("data-points")) >= 1, null, WAIT);
      await page.waitForFunction(() => Array.from(document.querySelectorAll("#msg-table tbody tr td:first-child")).some((td) => td.textContent === "JoinRoom"), null, WAIT);
    } finally {
      clearInterval(pinger);
    }
    assert.ok(await points(page, "chart-rates", "reqRate") >= 1);
    const legend = await page.textContent("#legend-rates");
    assert.match(legend!, /requests\/s: /);
    // Storage health from /metrics (SQLite by default here).
    const dirty = await page.$eval('#storage-table tr[data-key="dirty rows"] td.n', (td) => td.textContent);
    assert.match(dirty!, /^\d+$/, "dirty rows is a number from /metrics");

    // Close a session from the page: its client sees the connection end, the page sees it gone.
    const closed = new Promise<string>((resolve) => clients[0].onClose(resolve));
    await page.fill("#close-reason", "console test");
    await page.click(`#sessions tr[data-id="${ids[0]}"] button.close`);
    await closed;
    await page.waitForFunction((id) => !document.querySelector(`#sessions tr[data-id="${id}"]`) && document.getElementById("total-open")!.textContent === "2", ids[0], WAIT);
    assert.match((await page.textContent("#close-result"))!, new RegExp(`session ${ids[0]}: closed 1`));
    assert.equal((await admin("GET", "/admin/sessions")).open, 2);

    // IP rules: a bad block is refused with the server's reason and changes nothing ...
    await page.waitForFunction(() => (document.getElementById("rules-allow") as HTMLTextAreaElement) !== null);
    await page.fill("#rules-deny", "not-a-block");
    await page.click("#rules-save");
    await page.waitForFunction(() => document.getElementById("rules-result")!.className === "err", null, WAIT);
    assert.match((await page.textContent("#rules-result"))!, /400.*not-a-block/);
    assert.deepEqual((await admin("GET", "/admin/ip-rules")).deny, []);
    // ... a good one is applied live.
    await page.fill("#rules-deny", "10.0.0.0/8\n192.0.2.0/24");
    await page.click("#rules-save");
    await page.waitForFunction(() => /^saved/.test(document.getElementById("rules-result")!.textContent!), null, WAIT);
    assert.deepEqual((await admin("GET", "/admin/ip-rules")).deny, ["10.0.0.0/8", "192.0.2.0/24"]);
    assert.equal((await admin("GET", "/admin/sessions")).open, 2, "the loopback sessions are not refused");

    await page.screenshot({ path: path.join(os.tmpdir(), "lattice-console.png"), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    for (const c of clients) c.close();
    await browser.close();
    await server.stop();
  }
});
