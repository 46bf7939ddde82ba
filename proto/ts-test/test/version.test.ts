// Versions: same rules as proto/src/version.rs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PROTOCOL_VERSION, compareVersions, compatibleVersions, formatVersion, parseVersion } from "../../ts/index";

test("parse/format round trip", () => {
  for (const s of ["1.4.17-beta", "0.0.0-alpha", "65535.65535.1023-release", "2.10.0-preview", PROTOCOL_VERSION]) {
    assert.equal(formatVersion(parseVersion(s)), s);
  }
  assert.deepEqual(parseVersion("1.4.17-beta"), { major: 1, minor: 4, revision: 17, stage: "beta" });
});

test("ordering is total", () => {
  const sorted = ["0.0.0-alpha", "0.0.0-release", "0.0.1-alpha", "1.4.17-alpha", "1.4.17-beta", "1.4.17-preview", "1.4.17-release", "1.10.0-alpha", "2.0.0-alpha"];
  const vs = sorted.map(parseVersion);
  for (let i = 0; i < vs.length; i++) {
    for (let j = 0; j < vs.length; j++) {
      assert.equal(Math.sign(compareVersions(vs[i]!, vs[j]!)), Math.sign(i - j), `${sorted[i]} vs ${sorted[j]}`);
    }
  }
  assert.ok(compatibleVersions(parseVersion("1.0.0-alpha"), parseVersion("1.9.3-release")));
  assert.ok(!compatibleVersions(parseVersion("1.0.0-alpha"), parseVersion("2.0.0-alpha")));
});

test("malformed versions are refused", () => {
  for (const s of ["", "1", "1.4.17", "1.4-beta", "1.4.17.2-beta", "01.4.17-beta", "1.4.17-gamma", "1.4.17-Beta", "1.4.1024-beta", "65536.0.0-beta", " 1.4.17-beta", "1.4.17-"]) {
    assert.throws(() => parseVersion(s), Error, s);
  }
});
