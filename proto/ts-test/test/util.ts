// Helpers shared by the tests: hex, JSON <-> message conversion, a scripted transport, manual timers.
import * as protobuf from "protobufjs/minimal";
import { Frame, TransportEvents, TransportFactory, Timers, codecs, decodeFrame, encodeFrame, Opcode, InitOf } from "../../ts/index";

export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function unhex(s: string): Uint8Array {
  if (s.length % 2 !== 0) throw new Error("odd hex length");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

interface LongLike {
  low: number;
  high: number;
  unsigned: boolean;
  toString(): string;
}

function isLong(v: unknown): v is LongLike {
  return typeof v === "object" && v !== null && "low" in v && "high" in v && "unsigned" in v;
}

/** A decoded message as golden JSON: 64-bit as decimal strings, bytes as hex. */
export function toJson(v: unknown): Json {
  if (v instanceof Uint8Array) return hex(v);
  if (isLong(v)) return v.toString();
  if (Array.isArray(v)) return v.map(toJson);
  if (typeof v === "object" && v !== null) {
    const o: { [k: string]: Json } = {};
    for (const [k, x] of Object.entries(v)) o[k] = toJson(x);
    return o;
  }
  return v as Json;
}

/** Golden JSON back to an init object, using the defaults of `new Class()` to learn field types. */
export function fromJson(opcode: Opcode, json: { [k: string]: Json }): unknown {
  const blank = codecs[opcode].decode(new Uint8Array(0)) as unknown as Record<string, unknown>;
  const init: Record<string, unknown> = {};
  const L = protobuf.util.Long as unknown as { fromString(s: string, unsigned: boolean): LongLike };
  for (const [k, v] of Object.entries(json)) {
    const d = blank[k];
    if (!(k in blank)) throw new Error(`golden field ${k} is not a field of opcode ${opcode}`);
    if (d instanceof Uint8Array) init[k] = unhex(v as string);
    else if (isLong(d)) init[k] = L.fromString(v as string, d.unsigned);
    else init[k] = v;
  }
  return init;
}

/** Manually driven timers: nothing fires until the test says so. */
export class ManualTimers implements Timers {
  private next = 1;
  readonly armed = new Map<number, { fn: () => void; ms: number }>();
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.armed.set(id, { fn, ms });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.armed.delete(handle as number);
  }
  fireAll(): void {
    const all = [...this.armed.values()];
    this.armed.clear();
    for (const t of all) t.fn();
  }
}

/** An in-memory server end: records what the client sends, injects what the test scripts. */
export class ScriptedServer {
  readonly raw: Uint8Array[] = [];
  readonly sent: Frame[] = [];
  events: TransportEvents | null = null;
  closed = false;
  url = "";

  readonly factory: TransportFactory = (url, events) => {
    this.url = url;
    this.events = events;
    return {
      send: (frame) => {
        this.raw.push(frame);
        this.sent.push(decodeFrame(frame));
      },
      close: () => {
        this.closed = true;
      },
    };
  };

  open(): void {
    this.ev().open();
  }

  ev(): TransportEvents {
    if (!this.events) throw new Error("client has not opened the transport");
    return this.events;
  }

  last(): Frame {
    const f = this.sent[this.sent.length - 1];
    if (!f) throw new Error("client sent nothing");
    return f;
  }

  /** Decodes the body of the last frame the client sent. */
  lastMessage<O extends Opcode>(opcode: O): unknown {
    const f = this.last();
    if (f.opcode !== opcode) throw new Error(`last frame has opcode ${f.opcode}, expected ${opcode}`);
    return codecs[opcode].decode(f.body);
  }

  reply<O extends Opcode>(opcode: O, message: InitOf[O], requestId: number, flags = 0): void {
    const body = (codecs[opcode].encode as (m: unknown) => protobuf.Writer)(message).finish();
    this.ev().message(encodeFrame(opcode, flags, requestId, body));
  }

  push(bytes: Uint8Array): void {
    this.ev().message(bytes);
  }
}

/** One scripted connection of a `ScriptedNet`. */
export class Endpoint {
  readonly sent: Frame[] = [];
  closed = false;
  constructor(readonly events: TransportEvents) {}

  open(): void {
    this.events.open();
  }

  last(): Frame {
    const f = this.sent[this.sent.length - 1];
    if (!f) throw new Error("client sent nothing on this connection");
    return f;
  }

  /** Sends a plain frame to the client. */
  plain<O extends Opcode>(opcode: O, message: InitOf[O], requestId = 0): void {
    const body = (codecs[opcode].encode as (m: unknown) => protobuf.Writer)(message).finish();
    this.events.message(encodeFrame(opcode, 0, requestId, body));
  }

  /** Sends a frame with the SEQ extension to the client. */
  seq<O extends Opcode>(opcode: O, message: InitOf[O], requestId: number, seq: number, ack: number): void {
    const body = (codecs[opcode].encode as (m: unknown) => protobuf.Writer)(message).finish();
    this.events.message(encodeFrame(opcode, 0, requestId, body, { seq, ack }));
  }
}

/** A scripted network: every transport the client opens is a new `Endpoint`. */
export class ScriptedNet {
  readonly endpoints: Endpoint[] = [];

  readonly factory: TransportFactory = (_url, events) => {
    const ep = new Endpoint(events);
    this.endpoints.push(ep);
    return {
      send: (frame) => {
        ep.sent.push(decodeFrame(frame));
      },
      close: () => {
        ep.closed = true;
      },
    };
  };

  last(): Endpoint {
    const ep = this.endpoints[this.endpoints.length - 1];
    if (!ep) throw new Error("client opened no connection");
    return ep;
  }
}
