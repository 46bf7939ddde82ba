// Frame layout of docs/PROTOCOL.md: 12-byte little-endian header (plus the 8-byte sequence extension
// when the SEQ flag is set) + body. Sans-IO: bytes in, bytes out.
import { Unzlib, zlibSync } from "fflate";

/** Size of the frame header in bytes (without the sequence extension). */
export const HEADER_LEN = 12;
/** Size of the sequence extension (`u32 seq`, `u32 ack`) that follows the header with `FLAG_SEQ`. */
export const EXT_LEN = 8;
/** Flag bit 0: the body is a zlib stream (RFC 1950) of the protobuf bytes. */
export const FLAG_COMPRESSED = 0x0001;
/** Flag bit 1: the sequence extension follows the header (sessions that resume). */
export const FLAG_SEQ = 0x0002;
/** Flag bits 2–15: reserved, must be 0. */
export const RESERVED_FLAGS = 0xfffc;
/** Default `net.max_frame` of the server. */
export const DEFAULT_MAX_FRAME = 1_048_576;

/** One decoded frame header and its (still encoded) body. */
export interface Frame {
  opcode: number;
  flags: number;
  requestId: number;
  /** The sender's sequence number of this frame (0 without `FLAG_SEQ`). */
  seq: number;
  /** The sender's cumulative acknowledgement (0 without `FLAG_SEQ`). */
  ack: number;
  body: Uint8Array;
}

/** A frame that breaks the protocol (the session is closed with this message as the reason). */
export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FrameError";
  }
}

function checkUint(name: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new FrameError(`${name} ${value} is not an integer in 0..=${max}`);
  }
}

/**
 * Builds a frame. With `seq` given (a sequenced session), `FLAG_SEQ` is set and the extension
 * (`seq`, `ack`) follows the header. Throws `FrameError` on out-of-range header fields.
 */
export function encodeFrame(
  opcode: number,
  flags: number,
  requestId: number,
  body: Uint8Array,
  seq?: { seq: number; ack: number },
): Uint8Array {
  checkUint("opcode", opcode, 0xffff);
  if (opcode === 0) throw new FrameError("opcode 0 is never valid");
  checkUint("flags", flags, 0xffff);
  checkUint("request id", requestId, 0xffffffff);
  const head = seq ? HEADER_LEN + EXT_LEN : HEADER_LEN;
  const length = head + body.length;
  checkUint("frame length", length, 0xffffffff);
  const out = new Uint8Array(length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, length, true);
  dv.setUint16(4, opcode, true);
  dv.setUint16(6, seq ? flags | FLAG_SEQ : flags, true);
  dv.setUint32(8, requestId, true);
  if (seq) {
    checkUint("seq", seq.seq, 0xffffffff);
    checkUint("ack", seq.ack, 0xffffffff);
    dv.setUint32(12, seq.seq, true);
    dv.setUint32(16, seq.ack, true);
  }
  out.set(body, head);
  return out;
}

/**
 * Parses exactly one frame (one WebSocket binary message carries one frame). Throws `FrameError`
 * when the message is shorter than a header, its length field disagrees with its size, it is
 * larger than `maxFrame`, the opcode is 0, or a reserved flag bit is set.
 */
export function decodeFrame(data: Uint8Array, maxFrame: number = DEFAULT_MAX_FRAME): Frame {
  if (data.length < HEADER_LEN) {
    throw new FrameError(`frame of ${data.length} bytes is shorter than the ${HEADER_LEN}-byte header`);
  }
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const length = dv.getUint32(0, true);
  if (length > maxFrame) throw new FrameError(`frame length ${length} exceeds the limit of ${maxFrame} bytes`);
  if (length !== data.length) {
    throw new FrameError(`frame length field says ${length} bytes but the message has ${data.length}`);
  }
  const opcode = dv.getUint16(4, true);
  if (opcode === 0) throw new FrameError("opcode 0 is never valid");
  const flags = dv.getUint16(6, true);
  if ((flags & RESERVED_FLAGS) !== 0) {
    throw new FrameError(`reserved flag bits 0x${(flags & RESERVED_FLAGS).toString(16).padStart(4, "0")}`);
  }
  const requestId = dv.getUint32(8, true);
  if ((flags & FLAG_SEQ) === 0) {
    return { opcode, flags, requestId, seq: 0, ack: 0, body: data.subarray(HEADER_LEN) };
  }
  if (length < HEADER_LEN + EXT_LEN) {
    throw new FrameError(`frame length ${length} is too short for the sequence extension (20 bytes)`);
  }
  return {
    opcode,
    flags,
    requestId,
    seq: dv.getUint32(12, true),
    ack: dv.getUint32(16, true),
    body: data.subarray(HEADER_LEN + EXT_LEN),
  };
}

/** Body compression settings (the server's `compress.threshold` / `compress.max_inflated`). */
export interface CompressionOptions {
  /** Bodies strictly longer than this are compressed. `Infinity` turns sending compression off. */
  threshold: number;
  /** Hard cap on an inflated body; a larger one is a protocol error (compression bomb). */
  maxInflated: number;
  /** zlib level 0..9. */
  level: 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9;
}

/** Defaults that match the server's. */
export const DEFAULT_COMPRESSION: CompressionOptions = { threshold: 1024, maxInflated: 1_048_576, level: 1 };

/** Compresses `body` when it is above the threshold and shrinks; `compressed` says which. */
export function compressBody(body: Uint8Array, opts: CompressionOptions): { body: Uint8Array; compressed: boolean } {
  if (body.length <= opts.threshold) return { body, compressed: false };
  const z = zlibSync(body, { level: opts.level });
  if (z.length >= body.length) return { body, compressed: false };
  return { body: z, compressed: true };
}

/** Input bytes fed to the inflater per step: bounds the output produced between cap checks. */
const INFLATE_STEP = 1024;

/**
 * Inflates a zlib body, refusing to produce more than `maxInflated` bytes (memory stays within the
 * cap plus about one step's output). Throws `FrameError` on a bomb, a corrupt or a truncated stream.
 */
export function inflateBody(body: Uint8Array, maxInflated: number): Uint8Array {
  const chunks: Uint8Array[] = [];
  let total = 0;
  let ended = false;
  const tooLarge = new FrameError(`compressed body inflates beyond the cap of ${maxInflated} bytes`);
  const u = new Unzlib((chunk, final) => {
    total += chunk.length;
    if (total > maxInflated) throw tooLarge;
    chunks.push(chunk);
    if (final) ended = true;
  });
  try {
    if (body.length === 0) throw new FrameError("compressed body is empty");
    for (let i = 0; i < body.length; i += INFLATE_STEP) {
      const end = Math.min(i + INFLATE_STEP, body.length);
      u.push(body.subarray(i, end), end === body.length);
    }
  } catch (e) {
    if (e instanceof FrameError) throw e;
    throw new FrameError(`compressed body is not a valid zlib stream: ${(e as Error).message}`);
  }
  if (!ended) throw new FrameError("compressed body is truncated (zlib stream has no end)");
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  // fflate checks neither the Adler-32 trailer nor what follows the stream; the trailer must be
  // the body's last 4 bytes (so trailing garbage fails too), as the Rust side requires.
  const n = body.length;
  const trailer = ((body[n - 4]! << 24) | (body[n - 3]! << 16) | (body[n - 2]! << 8) | body[n - 1]!) >>> 0;
  if (n < 6 || trailer !== adler32(out)) {
    throw new FrameError("compressed body has a bad Adler-32 checksum or bytes after the zlib stream");
  }
  return out;
}

/** Adler-32 (RFC 1950) of `data`. */
export function adler32(data: Uint8Array): number {
  let a = 1;
  let b = 0;
  // 5552 bytes is the most that can be summed before b may overflow 2^32 (zlib's NMAX).
  for (let i = 0; i < data.length; ) {
    const end = Math.min(i + 5552, data.length);
    for (; i < end; i++) {
      a += data[i]!;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}
