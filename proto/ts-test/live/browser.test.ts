// The demo page in headless Chromium (Debian's chromium, driven by playwright-core): the page
// loads the bundled generated client from the server, says Hello, joins a room and exchanges
// `Said` with a Python client written on the `websockets` package (tests/ws_client.py);
// once over ws:// from the HTTP listener and once over wss:// from the HTTPS listener.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as os from "node:os";
import * as path from "node:path";
import { spawn } from "node:child_process";
import * as readline from "node:readline";
import { launchChromium, requireChromium, startLattice } from "./server";


for (const scheme of ["ws", "wss"] as const) test(`the demo page in Chromium chats with a Python websockets client over ${scheme}://`, async () => {
  requireChromium();
  const tls = scheme === "wss";
  const server = await startLattice([], { tls });
  // Over wss the page comes from the HTTPS listener with the development certificate, which
  // Chromium is told to accept; the Python client trusts exactly that certificate.
  const origin = tls ? `https://127.0.0.1:${server.https}` : `http://127.0.0.1:${server.http}`;
  const wsUrl = tls ? `wss://127.0.0.1:${server.https}/ws` : `ws://127.0.0.1:${server.http}/ws`;
  const browser = await launchChromium();
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: tls });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`${origin}/`);
    assert.equal(await page.evaluate(() => location.protocol), tls ? "https:" : "http:");
    const session = await page.evaluate(() => (window as any).demo.connect());
    assert.match(session, /^\d+$/);
    assert.equal(await page.evaluate(() => (window as any).demo.join("lobby")), 1);

    const script = path.resolve(__dirname, "../../../../../tests/ws_client.py");
    const py = spawn("python3", [script, wsUrl, "lobby", "--expect", "hello from chromium",
      "--say", "hello from python", ...(tls ? ["--ca", server.certFile!] : [])], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    py.stderr.on("data", (d) => (stderr += d));
    // Every line the client prints, in order; next() waits for the next one.
    const lines: string[] = [];
    let wake: (() => void) | null = null;
    let exited: number | null = null;
    readline.createInterface({ input: py.stdout! }).on("line", (l) => {
      lines.push(l);
      wake?.();
    });
    py.on("exit", (code) => {
      exited = code ?? -1;
      wake?.();
    });
    const next = async (): Promise<string> => {
      for (;;) {
        const l = lines.shift();
        if (l !== undefined) return l;
        if (exited !== null) throw new Error(`python client exited ${exited} before printing: ${stderr}`);
        await new Promise<void>((r) => (wake = r));
      }
    };
    const ready = await next();
    assert.match(ready, /^READY \d+$/);
    const pySession = ready.split(" ")[1];
    // Chromium speaks; Python hears it, then answers.
    assert.equal(await page.evaluate(() => (window as any).demo.say("lobby", "hello from chromium")), "hello from chromium");
    assert.equal(await next(), `GOT ${session} hello from chromium`);
    assert.equal(await next(), "DONE");
    await page.waitForFunction(() => (window as any).demo.said.some((s: any) => s.text === "hello from python"));
    const said = await page.evaluate(() => (window as any).demo.said.find((s: any) => s.text === "hello from python"));
    assert.equal(said.from, pySession);
    assert.equal(said.room, "lobby");
    await page.screenshot({ path: path.join(os.tmpdir(), `lattice-demo-${scheme}.png`) });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.stop();
  }
});
