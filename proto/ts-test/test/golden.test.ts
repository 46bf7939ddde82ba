// Golden vectors shared with Rust (proto/tests/golden.rs).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as protobuf from "protobufjs/minimal";
import {
  DEFAULT_COMPRESSION,
  FLAG_COMPRESSED,
  Opcode,
  codecs,
  compressBody,
  decodeFrame,
  encodeFrame,
  inflateBody,
  isOpcode,
} from "../../ts/index";
import { fromJson, hex, toJson, unhex } from "./util";

const GOLDEN = path.resolve(__dirname, "../../../golden");

interface Vector {
  name: string;
  opcode: number;
  flags: number;
  requestId: number;
  message: { [k: string]: never };
  frame: string;
}

function load(name: string): { vectors: Vector[] } {
  const file = path.join(GOLDEN, name);
  if (!fs.existsSync(file)) {
    throw new Error(`${file} is missing: generate it with LATTICE_UPDATE_GOLDEN=1 cargo test -p lattice-proto --test golden`);
  }
  return JSON.parse(fs.readFileSync(file, "utf8"));
}

const rust = load("rust-frames.json").vectors;

function encodeTs(v: Vector): Uint8Array {
  assert.ok(isOpcode(v.opcode), `${v.name}: opcode ${v.opcode} unknown to TS`);
  const op = v.opcode as Opcode;
  const raw = (codecs[op].encode as (m: unknown) => protobuf.Writer)(fromJson(op, v.message)).finish();
  const { body, compressed } = compressBody(raw, DEFAULT_COMPRESSION);
  return encodeFrame(op, compressed ? FLAG_COMPRESSED : 0, v.requestId, body);
}

test("64-bit fields decode as Long (the `long` package is loaded)", () => {
  assert.ok(protobuf.util.Long, "protobufjs did not load `long`: 64-bit ids would lose precision");
});

test("the PROTOCOL.md example is in the vectors", () => {
  const v = rust.find((x) => x.name === "protocol_md_ping");
  assert.equal(v?.frame, "1000000004000000070000000a026869");
});

for (const v of rust) {
  test(`Rust frame decodes in TS: ${v.name}`, () => {
    const f = decodeFrame(unhex(v.frame));
    assert.equal(f.opcode, v.opcode);
    assert.equal(f.flags, v.flags);
    assert.equal(f.requestId, v.requestId);
    assert.ok(isOpcode(f.opcode));
    const body = f.flags & FLAG_COMPRESSED ? inflateBody(f.body, DEFAULT_COMPRESSION.maxInflated) : f.body;
    const msg = codecs[f.opcode as Opcode].decode(body);
    assert.deepEqual(toJson(msg), v.message);
  });

  test(`TS encodes like Rust: ${v.name}`, () => {
    const mine = encodeTs(v);
    const f = decodeFrame(mine);
    assert.equal(f.flags, v.flags, "same compression decision");
    if (v.flags & FLAG_COMPRESSED) {
      // zlib output may differ between implementations; the inflated bodies must not.
      const theirs = decodeFrame(unhex(v.frame));
      assert.equal(
        hex(inflateBody(f.body, DEFAULT_COMPRESSION.maxInflated)),
        hex(inflateBody(theirs.body, DEFAULT_COMPRESSION.maxInflated)),
      );
    } else {
      assert.equal(hex(mine), v.frame);
    }
  });
}

test("TS frames match the committed ts-frames.json (decoded by proto/tests/golden.rs)", () => {
  const doc = {
    comment: "Frames encoded by the TypeScript client (proto/ts-test/test/golden.test.ts). Regenerate with LATTICE_UPDATE_GOLDEN=1 deploy/ci/ts.sh",
    vectors: rust.map((v) => ({ name: v.name, frame: hex(encodeTs(v)) })),
  };
  const text = JSON.stringify(doc, null, 2) + "\n";
  const file = path.join(GOLDEN, "ts-frames.json");
  if (process.env.LATTICE_UPDATE_GOLDEN === "1") fs.writeFileSync(file, text);
  assert.ok(fs.existsSync(file), `${file} is missing: run with LATTICE_UPDATE_GOLDEN=1`);
  assert.equal(fs.readFileSync(file, "utf8"), text, "ts-frames.json is stale: rerun with LATTICE_UPDATE_GOLDEN=1 and run the Rust golden test");
});
