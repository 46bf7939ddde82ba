// Protocol versions `major.minor.revision-stage` (see proto/src/version.rs for the packed form).

/** Release stage, in order. */
export const STAGES = ["alpha", "beta", "preview", "release"] as const;
/** One of `alpha`, `beta`, `preview`, `release`. */
export type Stage = (typeof STAGES)[number];

/** A parsed protocol version. */
export interface Version {
  major: number;
  minor: number;
  revision: number;
  stage: Stage;
}

const LIMITS = { major: 0xffff, minor: 0xffff, revision: 1023 } as const;

/** Parses `1.4.17-beta`. Throws an `Error` naming the problem on malformed input. */
export function parseVersion(text: string): Version {
  const m = /^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)-([a-z]+)$/.exec(text);
  if (!m) throw new Error(`version ${JSON.stringify(text)} is not of the form major.minor.revision-stage`);
  const parts = { major: Number(m[1]), minor: Number(m[2]), revision: Number(m[3]) };
  for (const [name, max] of Object.entries(LIMITS)) {
    const v = parts[name as keyof typeof parts];
    if (v > max) throw new Error(`version ${JSON.stringify(text)}: ${name} ${v} is above ${max}`);
  }
  const stage = m[4] as Stage;
  if (!STAGES.includes(stage)) throw new Error(`version ${JSON.stringify(text)}: unknown stage ${JSON.stringify(m[4])}`);
  return { ...parts, stage };
}

/** Prints `1.4.17-beta`. */
export function formatVersion(v: Version): string {
  return `${v.major}.${v.minor}.${v.revision}-${v.stage}`;
}

/** Total order: major, minor, revision, then stage (alpha < beta < preview < release). */
export function compareVersions(a: Version, b: Version): number {
  return (
    a.major - b.major ||
    a.minor - b.minor ||
    a.revision - b.revision ||
    STAGES.indexOf(a.stage) - STAGES.indexOf(b.stage)
  );
}

/** Client and server can talk when their majors are equal. */
export function compatibleVersions(a: Version, b: Version): boolean {
  return a.major === b.major;
}
