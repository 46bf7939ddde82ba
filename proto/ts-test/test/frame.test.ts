// Frame header and body compression edge cases.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as zlib from "node:zlib";
import { FrameError, adler32, compressBody, decodeFrame, encodeFrame, inflateBody, DEFAULT_COMPRESSION } from "../../ts/index";
import { unhex } from "./util";

test("malformed frames are refused with a reason", () => {
  const cases: [string, Uint8Array, RegExp][] = [
    ["short", unhex("0b000000040000000700"), /shorter than the 12-byte header/],
    ["length mismatch", unhex("1100000004000000070000000a026869"), /length field says 17 bytes but the message has 16/],
    ["opcode 0", unhex("0c0000000000000001000000"), /opcode 0/],
    ["reserved flag", unhex("0c0000000400040001000000"), /reserved flag bits 0x0004/],
    ["SEQ without room for the extension", unhex("0c0000000400020001000000"), /too short for the sequence extension/],
    ["too large", unhex("0c0000100400000001000000"), /exceeds the limit/],
  ];
  for (const [name, bytes, re] of cases) {
    assert.throws(() => decodeFrame(bytes), (e: unknown) => e instanceof FrameError && re.test(e.message), name);
  }
  assert.throws(() => decodeFrame(unhex("1000000004000000070000000a026869"), 15), /exceeds the limit of 15/);
});

test("the SEQ extension round-trips after the header", () => {
  const f = encodeFrame(5, 0, 9, new Uint8Array([1, 2]), { seq: 0xfffffffe, ack: 3 });
  assert.equal(f.length, 22);
  const d = decodeFrame(f);
  assert.deepEqual([d.opcode, d.flags, d.requestId, d.seq, d.ack, Array.from(d.body)], [5, 2, 9, 0xfffffffe, 3, [1, 2]]);
  const plain = decodeFrame(encodeFrame(5, 0, 9, new Uint8Array([1])));
  assert.deepEqual([plain.seq, plain.ack], [0, 0]);
});

test("encodeFrame refuses out-of-range header fields", () => {
  assert.throws(() => encodeFrame(0, 0, 1, new Uint8Array(0)), FrameError);
  assert.throws(() => encodeFrame(70000, 0, 1, new Uint8Array(0)), FrameError);
  assert.throws(() => encodeFrame(4, 0, -1, new Uint8Array(0)), FrameError);
  assert.throws(() => encodeFrame(4, 0, 2 ** 32, new Uint8Array(0)), FrameError);
  assert.equal(encodeFrame(4, 0, 2 ** 32 - 1, new Uint8Array(0)).length, 12);
});

test("compression threshold is exclusive, incompressible bodies stay plain", () => {
  const text = new TextEncoder().encode("abc".repeat(400));
  const opts = { ...DEFAULT_COMPRESSION, threshold: text.length };
  assert.equal(compressBody(text, opts).compressed, false);
  const above = compressBody(text, { ...opts, threshold: text.length - 1 });
  assert.equal(above.compressed, true);
  assert.ok(above.body.length < text.length);
  // A standard zlib (node's) reads it.
  assert.deepEqual(new Uint8Array(zlib.inflateSync(above.body)), text);
  const noise = new Uint8Array(4096);
  let x = 12345;
  for (let i = 0; i < noise.length; i++) noise[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  const n = compressBody(noise, { ...DEFAULT_COMPRESSION, threshold: 0 });
  assert.equal(n.compressed, false);
  assert.equal(n.body, noise);
});

test("inflate honours the cap exactly and refuses a bomb", () => {
  const cap = 10_000;
  const exact = zlib.deflateSync(Buffer.alloc(cap, 7));
  assert.equal(inflateBody(exact, cap).length, cap);
  const over = zlib.deflateSync(Buffer.alloc(cap + 1, 7));
  assert.throws(() => inflateBody(over, cap), /inflates beyond the cap of 10000 bytes/);
  // 64 MiB of zeros ≈ 64 KiB compressed, refused under a 1 MiB cap.
  const bomb = zlib.deflateSync(Buffer.alloc(64 << 20), { level: 9 });
  assert.ok(bomb.length < 1 << 20);
  assert.throws(() => inflateBody(bomb, 1 << 20), /inflates beyond the cap/);
});

test("truncated and corrupt zlib bodies are refused", () => {
  const good = zlib.deflateSync(Buffer.from("hello hello hello hello"));
  assert.throws(() => inflateBody(good.subarray(0, good.length - 6), 1 << 20), FrameError);
  assert.throws(() => inflateBody(new Uint8Array(0), 1 << 20), /empty/);
  assert.throws(() => inflateBody(new TextEncoder().encode("not zlib at all"), 1 << 20), FrameError);
  const badSum = Buffer.from(good);
  badSum[badSum.length - 1]! ^= 0xff;
  assert.throws(() => inflateBody(badSum, 1 << 20), /Adler-32/);
  assert.throws(() => inflateBody(Buffer.concat([good, Buffer.from("xyz")]), 1 << 20), /Adler-32/);
  assert.equal(new TextDecoder().decode(inflateBody(good, 1 << 20)), "hello hello hello hello");
});

test("adler32 matches zlib's", () => {
  const big = new Uint8Array(100_000).map((_, i) => (i * 7919) & 0xff);
  for (const data of [new Uint8Array(0), new TextEncoder().encode("Wikipedia"), big, new Uint8Array(20_000).fill(255)]) {
    const z = zlib.deflateSync(data);
    const expected = z.readUInt32BE(z.length - 4);
    assert.equal(adler32(data), expected);
  }
  assert.equal(adler32(new TextEncoder().encode("Wikipedia")), 0x11e60398);
});
