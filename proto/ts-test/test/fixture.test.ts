// The exporter on every supported field shape (fixtures/lattice/fixture.proto), against prost's
// encodings in golden/fixture-bodies.json (written by proto/tests/fixture.rs).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { Kitchen, Color } from "../fixture/messages";
import { Opcode, codecs } from "../fixture/protocol";
import { hex, toJson, unhex } from "./util";

const file = path.resolve(__dirname, "../../../golden/fixture-bodies.json");
const vectors: { name: string; body: string; message: unknown }[] = JSON.parse(fs.readFileSync(file, "utf8")).vectors;

for (const v of vectors) {
  test(`fixture decodes field by field: ${v.name}`, () => {
    assert.deepEqual(toJson(Kitchen.decode(unhex(v.body))), v.message);
  });
  test(`fixture re-encodes byte for byte: ${v.name}`, () => {
    assert.equal(hex(Kitchen.encode(Kitchen.decode(unhex(v.body))).finish()), v.body);
  });
}

test("plain numbers and partial init objects encode like prost", () => {
  const v = vectors.find((x) => x.name === "kitchen_numbers")!;
  const mine = Kitchen.encode({ i64: -5, u64: 7, s64: -3, fx64: 1, sfx64: -2, rinner: [{ name: "x" }], rfx64: [5] }).finish();
  assert.equal(hex(mine), v.body);
});

test("create fills defaults and copies nested inits", () => {
  const k = Kitchen.create({ inner: { name: "n", color: Color.BLUE }, ri32: [1] });
  assert.equal(k.inner?.name, "n");
  assert.deepEqual(k.inner?.vals, []);
  assert.equal(k.text, "");
  assert.equal(k.maybe, null);
  assert.equal(codecs[Opcode.Kitchen], Kitchen);
});

test("unknown fields are skipped, malformed bodies throw", () => {
  const full = unhex(vectors.find((x) => x.name === "kitchen_full")!.body);
  // Field 99, varint 1, appended: ignored.
  const extended = new Uint8Array([...full, 0x98, 0x06, 0x01]);
  assert.deepEqual(toJson(Kitchen.decode(extended)), toJson(Kitchen.decode(full)));
  // Field 14 (string) sent as varint: wrong wire type.
  assert.throws(() => Kitchen.decode(new Uint8Array([0x70, 0x01])), /lattice.Kitchen.text: unexpected wire type 0/);
  // Truncated.
  assert.throws(() => Kitchen.decode(full.subarray(0, full.length - 1)));
  // A nested message whose field overruns the nested length.
  assert.throws(() => Kitchen.decode(new Uint8Array([0x8a, 0x01, 0x02, 0x0a, 0x05, 0x61, 0x62, 0x63, 0x64, 0x65])), /overruns/);
});
