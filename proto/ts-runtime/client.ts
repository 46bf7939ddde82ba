// LatticeClient: the frame protocol of docs/PROTOCOL.md over any `Transport`.
import * as M from "./messages";
import { Opcode, ErrorCode, MessageOf, InitOf, MessageCodec, PROTOCOL_VERSION, codecs, isOpcode } from "./protocol";
import {
  CompressionOptions,
  DEFAULT_COMPRESSION,
  DEFAULT_MAX_FRAME,
  FLAG_COMPRESSED,
  FrameError,
  compressBody,
  decodeFrame,
  encodeFrame,
  inflateBody,
} from "./frame";
import { compatibleVersions, parseVersion } from "./version";
import { Transport, TransportFactory, webSocketTransport } from "./transport";

// The host's timer functions (browsers, Node, mini-programs all have them), typed here so the
// client needs neither the DOM nor the Node typings.
declare function setTimeout(fn: () => void, ms: number): unknown;
declare function clearTimeout(handle: unknown): void;

/** Timer functions; injectable so tests can drive time by hand. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Settings of a `LatticeClient`. Every bound has a default. */
export interface ClientOptions {
  /** Server address, e.g. `wss://game.example.com/ws`. */
  url: string;
  /** How to open the connection. Default: the global `WebSocket`. */
  transport?: TransportFactory;
  /** Time allowed for each request (and for the Hello/Welcome handshake). Default 10000 ms. */
  requestTimeoutMs?: number;
  /** Most requests awaiting an answer at once; beyond it `request` rejects. Default 1024. */
  maxPending?: number;
  /** Largest frame sent or accepted. Default 1 MiB (the server's default `net.max_frame`). */
  maxFrame?: number;
  /** Body compression; set `threshold: Infinity` to never compress outgoing bodies. */
  compression?: Partial<CompressionOptions>;
  /** Version sent in `Hello`. Default `PROTOCOL_VERSION` of the generated code. */
  clientVersion?: string;
  /** Default: the global `setTimeout` / `clearTimeout`. */
  timers?: Timers;
}

/** Counters; each bound that is hit and each dropped frame is counted here. */
export interface ClientStats {
  framesSent: number;
  framesReceived: number;
  compressedSent: number;
  compressedReceived: number;
  timeouts: number;
  rejectedPendingFull: number;
  /** Frames with an opcode this client does not know (ignored). */
  unknownOpcodes: number;
  /** Bodies that failed to decode (the matching request is rejected; pushes are dropped). */
  decodeErrors: number;
  /** Pushes (or late replies) with no handler registered. */
  unhandled: number;
}

/** A decoded incoming frame. */
export interface Incoming<O extends Opcode = Opcode> {
  opcode: O;
  requestId: number;
  message: MessageOf[O];
}

/** Any decoded incoming frame, discriminated by `opcode`. */
export type AnyIncoming = { [O in Opcode]: Incoming<O> }[Opcode];

/** The server answered a request with an `Error` frame. */
export class ServerError extends Error {
  constructor(
    readonly code: number,
    readonly serverMessage: string,
    readonly requestOpcode: number,
  ) {
    super(`server error ${ErrorCode[code] ?? code} for opcode ${requestOpcode}: ${serverMessage}`);
    this.name = "ServerError";
  }
}

/** No answer within the timeout. */
export class RequestTimeoutError extends Error {
  constructor(readonly opcode: number, readonly requestId: number, ms: number) {
    super(`request ${requestId} (opcode ${opcode}) got no answer within ${ms} ms`);
    this.name = "RequestTimeoutError";
  }
}

/** The connection is not open (never was, or closed). */
export class ConnectionClosedError extends Error {
  constructor(readonly reason: string) {
    super(`connection closed: ${reason}`);
    this.name = "ConnectionClosedError";
  }
}

/** The peer broke the protocol, or a local bound was hit. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

type State = "idle" | "handshake" | "open" | "closed";

interface Pending {
  opcode: number;
  timer: unknown;
  resolve(frame: AnyIncoming): void;
  reject(err: Error): void;
}

type Handler = (message: never, frame: never) => void;

const MAX_REQUEST_ID = 0xffffffff;

/**
 * One session with a Lattice server.
 *
 * ```ts
 * const client = new LatticeClient({ url: "wss://example.com/ws" });
 * const welcome = await client.connect();
 * client.on(Opcode.Said, (said) => console.log(said.text));
 * const joined = await client.call(Opcode.JoinRoom, { room: "lobby" }, Opcode.Joined);
 * ```
 */
export class LatticeClient {
  /** Counters since construction. */
  readonly stats: ClientStats = {
    framesSent: 0,
    framesReceived: 0,
    compressedSent: 0,
    compressedReceived: 0,
    timeouts: 0,
    rejectedPendingFull: 0,
    unknownOpcodes: 0,
    decodeErrors: 0,
    unhandled: 0,
  };
  /** Session id from `Welcome` (a `Long` when the `long` package is present). */
  sessionId: M.Int64 | null = null;
  /** Server version from `Welcome`. */
  serverVersion: string | null = null;

  private state: State = "idle";
  private transport: Transport | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly handlers = new Map<number, Set<Handler>>();
  private readonly closeHandlers = new Set<(reason: string) => void>();
  private readonly opts: Required<Omit<ClientOptions, "compression">> & { compression: CompressionOptions };

  constructor(options: ClientOptions) {
    this.opts = {
      url: options.url,
      transport: options.transport ?? webSocketTransport(),
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      maxPending: options.maxPending ?? 1024,
      maxFrame: options.maxFrame ?? DEFAULT_MAX_FRAME,
      compression: { ...DEFAULT_COMPRESSION, ...options.compression },
      clientVersion: options.clientVersion ?? PROTOCOL_VERSION,
      timers: options.timers ?? {
        setTimeout: (fn, ms) => setTimeout(fn, ms),
        clearTimeout: (h) => clearTimeout(h),
      },
    };
    parseVersion(this.opts.clientVersion); // fail early on a malformed version
  }

  /** `true` between a successful `connect` and the close. */
  get isOpen(): boolean {
    return this.state === "open";
  }

  /** Number of requests awaiting an answer. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /**
   * Opens the transport, sends `Hello` with the client version and waits for `Welcome`.
   * Rejects with `ServerError` (e.g. `VERSION_MISMATCH`), `ProtocolError` (the server's major
   * version differs), `RequestTimeoutError` or `ConnectionClosedError`; the connection is closed then.
   */
  connect(): Promise<M.Welcome> {
    if (this.state !== "idle") return Promise.reject(new ProtocolError(`connect called in state ${this.state}`));
    this.state = "handshake";
    return new Promise<M.Welcome>((resolve, reject) => {
      const fail = (err: Error) => {
        this.shutdown(err.message);
        reject(err);
      };
      try {
        this.transport = this.opts.transport(this.opts.url, {
          open: () => {
            this.sendRequest(Opcode.Hello, { clientVersion: this.opts.clientVersion }).then((reply) => {
              if (reply.opcode !== Opcode.Welcome) {
                fail(new ProtocolError(`expected Welcome, got opcode ${reply.opcode}`));
                return;
              }
              const welcome = reply.message;
              let compatible = false;
              try {
                compatible = compatibleVersions(parseVersion(welcome.serverVersion), parseVersion(this.opts.clientVersion));
              } catch (e) {
                fail(new ProtocolError(`bad server version: ${(e as Error).message}`));
                return;
              }
              if (!compatible) {
                fail(new ProtocolError(`server speaks ${welcome.serverVersion}, client ${this.opts.clientVersion}: majors differ`));
                return;
              }
              this.sessionId = welcome.sessionId;
              this.serverVersion = welcome.serverVersion;
              this.state = "open";
              resolve(welcome);
            }, fail);
          },
          message: (data) => this.receive(data),
          close: (reason) => {
            const err = new ConnectionClosedError(reason);
            if (this.state === "handshake") reject(err);
            this.shutdown(reason);
          },
          error: (err) => {
            if (this.state === "handshake") fail(new ConnectionClosedError(`transport error: ${String(err)}`));
          },
        });
      } catch (e) {
        fail(e as Error);
      }
    });
  }

  /**
   * Sends a request and resolves with whatever frame answers it (same request id), or rejects
   * with `ServerError` when the answer is an `Error` frame, `RequestTimeoutError`,
   * `ConnectionClosedError`, or `ProtocolError` (too many pending requests, frame too large).
   */
  request<O extends Opcode>(opcode: O, message: InitOf[O], opts?: { timeoutMs?: number }): Promise<AnyIncoming> {
    if (this.state !== "open") {
      return Promise.reject(new ConnectionClosedError(this.state === "closed" ? "closed" : "not connected: await connect() first"));
    }
    return this.sendRequest(opcode, message, opts);
  }

  /** `request`, expecting a reply of type `reply`; any other reply rejects with `ProtocolError`. */
  async call<O extends Opcode, R extends Opcode>(
    opcode: O,
    message: InitOf[O],
    reply: R,
    opts?: { timeoutMs?: number },
  ): Promise<MessageOf[R]> {
    const frame = await this.request(opcode, message, opts);
    if (frame.opcode !== reply) {
      throw new ProtocolError(`expected opcode ${reply} (${Opcode[reply]}), got ${frame.opcode} (${Opcode[frame.opcode]})`);
    }
    return frame.message as MessageOf[R];
  }

  /** Sends a message that expects no answer (request id 0). Throws when not open. */
  send<O extends Opcode>(opcode: O, message: InitOf[O]): void {
    if (this.state !== "open") throw new ConnectionClosedError("not connected");
    this.writeFrame(opcode, message, 0);
  }

  /**
   * Calls `handler` for every pushed frame of type `opcode` (request id 0, or an id no pending
   * request has). Replies that settle a `request` are not pushed. Returns an unsubscribe function.
   */
  on<O extends Opcode>(opcode: O, handler: (message: MessageOf[O], frame: Incoming<O>) => void): () => void {
    let set = this.handlers.get(opcode);
    if (!set) this.handlers.set(opcode, (set = new Set()));
    set.add(handler as Handler);
    return () => set!.delete(handler as Handler);
  }

  /** Calls `handler` once with the reason when the session ends. */
  onClose(handler: (reason: string) => void): () => void {
    this.closeHandlers.add(handler);
    return () => this.closeHandlers.delete(handler);
  }

  /** Closes the session; pending requests reject with `ConnectionClosedError`. */
  close(reason = "closed by client"): void {
    this.shutdown(reason);
  }

  private sendRequest<O extends Opcode>(opcode: O, message: InitOf[O], opts?: { timeoutMs?: number }): Promise<AnyIncoming> {
    if (this.pending.size >= this.opts.maxPending) {
      this.stats.rejectedPendingFull++;
      return Promise.reject(new ProtocolError(`too many pending requests (${this.opts.maxPending})`));
    }
    const id = this.allocateId();
    return new Promise<AnyIncoming>((resolve, reject) => {
      try {
        this.writeFrame(opcode, message, id);
      } catch (e) {
        reject(e as Error);
        return;
      }
      const ms = opts?.timeoutMs ?? this.opts.requestTimeoutMs;
      const timer = this.opts.timers.setTimeout(() => {
        if (this.pending.delete(id)) {
          this.stats.timeouts++;
          reject(new RequestTimeoutError(opcode, id, ms));
        }
      }, ms);
      this.pending.set(id, { opcode, timer, resolve, reject });
    });
  }

  private allocateId(): number {
    // Bounded: at most maxPending ids are taken, so this finds a free one within maxPending + 1 steps.
    for (;;) {
      const id = this.nextId;
      this.nextId = id === MAX_REQUEST_ID ? 1 : id + 1;
      if (!this.pending.has(id)) return id;
    }
  }

  private writeFrame(opcode: Opcode, message: unknown, requestId: number): void {
    if (!this.transport) throw new ConnectionClosedError("not connected");
    const codec = codecs[opcode] as unknown as MessageCodec<unknown, unknown>;
    const raw = codec.encode(message).finish();
    const { body, compressed } = compressBody(raw, this.opts.compression);
    const frame = encodeFrame(opcode, compressed ? FLAG_COMPRESSED : 0, requestId, body);
    if (frame.length > this.opts.maxFrame) {
      throw new ProtocolError(`frame of ${frame.length} bytes exceeds maxFrame ${this.opts.maxFrame}`);
    }
    this.transport.send(frame);
    this.stats.framesSent++;
    if (compressed) this.stats.compressedSent++;
  }

  private receive(data: Uint8Array): void {
    if (this.state === "closed") return;
    this.stats.framesReceived++;
    let opcode: number, requestId: number, body: Uint8Array;
    try {
      const frame = decodeFrame(data, this.opts.maxFrame);
      ({ opcode, requestId, body } = frame);
      if (frame.flags & FLAG_COMPRESSED) {
        body = inflateBody(body, this.opts.compression.maxInflated);
        this.stats.compressedReceived++;
      }
    } catch (e) {
      // A broken frame means the stream can no longer be trusted: close, like the server does.
      this.shutdown(e instanceof FrameError ? e.message : String(e));
      return;
    }
    const pending = requestId !== 0 ? this.pending.get(requestId) : undefined;
    if (pending) {
      this.pending.delete(requestId);
      this.opts.timers.clearTimeout(pending.timer);
    }
    if (!isOpcode(opcode)) {
      this.stats.unknownOpcodes++;
      pending?.reject(new ProtocolError(`reply with unknown opcode ${opcode}`));
      return;
    }
    let message: unknown;
    try {
      message = (codecs[opcode] as unknown as MessageCodec<unknown, unknown>).decode(body);
    } catch (e) {
      this.stats.decodeErrors++;
      pending?.reject(new ProtocolError(`reply body of opcode ${opcode} does not decode: ${(e as Error).message}`));
      return;
    }
    const incoming = { opcode, requestId, message } as AnyIncoming;
    if (pending) {
      if (opcode === Opcode.Error) {
        const err = message as M.Error;
        pending.reject(new ServerError(err.code, err.message, err.opcode));
      } else {
        pending.resolve(incoming);
      }
      return;
    }
    const set = this.handlers.get(opcode);
    if (!set || set.size === 0) {
      this.stats.unhandled++;
      return;
    }
    for (const h of [...set]) (h as (m: unknown, f: unknown) => void)(message, incoming);
  }

  private shutdown(reason: string): void {
    if (this.state === "closed") return;
    this.state = "closed";
    const t = this.transport;
    this.transport = null;
    if (t) {
      try {
        t.close();
      } catch {
        // Closing an already broken transport may throw; the session is over either way.
      }
    }
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      this.opts.timers.clearTimeout(p.timer);
      p.reject(new ConnectionClosedError(reason));
    }
    for (const h of [...this.closeHandlers]) h(reason);
  }
}
