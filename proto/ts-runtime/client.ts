// LatticeClient: the frame protocol of docs/PROTOCOL.md over any `Transport`.
import * as M from "./messages";
import { Opcode, ErrorCode, MessageOf, InitOf, MessageCodec, PROTOCOL_VERSION, codecs, isOpcode } from "./protocol";
import {
  CompressionOptions,
  DEFAULT_COMPRESSION,
  DEFAULT_MAX_FRAME,
  FLAG_COMPRESSED,
  FLAG_SEQ,
  Frame,
  FrameError,
  compressBody,
  decodeFrame,
  encodeFrame,
  inflateBody,
} from "./frame";
import { compatibleVersions, parseVersion } from "./version";
import { CloseInfo, Transport, TransportFactory, describeError, webSocketTransport } from "./transport";

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
  /**
   * Time allowed for each request, and for the whole handshake: `connect()` rejects with
   * `RequestTimeoutError` when no `Welcome` came this long after it was called (opening the
   * transport included). Default 10000 ms.
   */
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
  /**
   * Liveness check while open: every `heartbeatMs` the client sends a `Ping` (request id 0, empty
   * payload) when nothing was received, or nothing sent, since the previous check. This also keeps
   * the server's idle timeout (`net.idle_timeout_ms`, 60 s) from closing an idle client. Default
   * 15000; 0 turns the check off.
   */
  heartbeatMs?: number;
  /**
   * After a check that found nothing received, the connection counts as lost (like a socket closed
   * without a close frame: resumed, or the session closes) when nothing arrives within this.
   * Default 2 × `heartbeatMs`.
   */
  deadAfterMs?: number;
  /**
   * Resume: ask the server for sequencing in `Hello`; when it grants it, a lost connection is
   * reopened automatically (exponential backoff with full jitter) and the session resumed with
   * nothing lost: unacknowledged requests are resent, missed server frames replayed. `true` takes
   * the defaults. Off by default.
   */
  resume?: boolean | ResumeOptions;
  /**
   * Called when one of the application's callbacks (an `on()` push handler, an `onClose` or
   * `onResumed` handler) throws; the client goes on (the other handlers run, frames keep being
   * processed). `where` names the callback, e.g. `push handler of opcode 13 (Said)`. Default: `console.error`.
   */
  onHandlerError?: (error: unknown, where: string) => void;
}

/** Settings of resume and automatic reconnection. Every bound has a default. */
export interface ResumeOptions {
  /** Consecutive failed reconnects before the session is given up (closed). Default 20. */
  maxAttempts?: number;
  /** Reconnect `n` (0, 1, …) waits a random time in [0, min(maxDelayMs, baseDelayMs·2ⁿ)). Default 100. */
  baseDelayMs?: number;
  /** Cap of the backoff. Default 5000. */
  maxDelayMs?: number;
  /** An acknowledgement waits this long for an outgoing frame to carry it, then goes in an `Ack`. Default 200. */
  ackDelayMs?: number;
  /** Sent frames kept until the server acknowledges them (resent after a resume); beyond it sends refuse. Default 1024. */
  maxUnacked?: number;
  /** Random numbers in [0, 1) for the jitter. Default `Math.random`. */
  random?: () => number;
}

/** What a resume told the client. */
export interface ResumeInfo {
  /**
   * Frames the client had not received were evicted from the server's replay buffer: they are
   * lost, and the application must fetch its state afresh (e.g. rejoin rooms, reload lists).
   */
  resync: boolean;
  /** Reconnects it took (1 when the first one worked). */
  attempts: number;
}

// The host's console (browsers, Node and mini-programs have one; typed here for the same reason).
declare const console: { error(...args: unknown[]): void };

// The host's random source (every JavaScript environment has `Math`).
declare const Math: { random(): number; min(a: number, b: number): number; pow(a: number, b: number): number };

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
  /** Connections lost and reopened to resume (each attempt counts). */
  reconnects: number;
  /** Resumes the server accepted. */
  resumes: number;
  /** Resumes that came with `resync` (frames lost to the server's replay bound). */
  resyncs: number;
  /** Frames sent again after a resume. */
  framesResent: number;
  /** `Ack` frames sent. */
  acksSent: number;
  /** Sends refused because `maxUnacked` frames waited for an acknowledgement. */
  rejectedUnackedFull: number;
  /** `Ping` frames sent by the liveness check (`heartbeatMs`). */
  heartbeatsSent: number;
  /** Connections given up as lost because nothing arrived within `deadAfterMs`. */
  heartbeatLosses: number;
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

/** No answer within the timeout (for `connect()`: no `Welcome`; `requestId` is then 0 if `Hello` never left). */
export class RequestTimeoutError extends Error {
  constructor(readonly opcode: number, readonly requestId: number, ms: number, message?: string) {
    super(message ?? `request ${requestId} (opcode ${opcode}) got no answer within ${ms} ms`);
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

/**
 * A resume came with `resync`: the server had received this request before the connection was
 * lost, and its answer may be among the frames it could no longer replay. The outcome is unknown
 * (the request may have been handled); an answer that still arrives goes to the `on()` handlers.
 */
export class ResyncError extends Error {
  constructor(readonly opcode: number, readonly requestId: number) {
    super(`request ${requestId} (opcode ${opcode}): its answer may have been lost in a resync; outcome unknown`);
    this.name = "ResyncError";
  }
}

/** The peer broke the protocol, or a local bound was hit. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/** Where a client is: `reconnecting` while a lost connection is being replaced (resume). */
export type ConnectionState = "idle" | "handshake" | "open" | "reconnecting" | "closed";

interface Pending {
  opcode: number;
  /** `seq` of the request's frame on a sequenced session (else 0). */
  seq: number;
  timer: unknown;
  resolve(frame: AnyIncoming): void;
  reject(err: Error): void;
}

type Handler = (message: never, frame: never) => void;

const MAX_REQUEST_ID = 0xffffffff;

/**
 * WebSocket close codes with which the server ends a session for good (docs/PROTOCOL.md, "Close
 * codes"): protocol errors (1002, 1003, 1007, 1009), an application reason (1008: a failed
 * handshake, a refused Resume, a rate limit with policy `close`, a `Kicked` session) and an
 * internal failure (1011). A close with one of them is not resumed. Every other close (no close
 * frame: 1005/1006 or no code; 1000; 1001 server shutdown / idle / operator) is resumed.
 */
const FINAL_CLOSE_CODES = [1002, 1003, 1007, 1008, 1009, 1011];

/** The close code the client sends when the server broke the protocol with a frame (a bad frame, `SEQ`). */
const PROTOCOL_ERROR = 1002;
/** The close code the client sends for a message the transport cannot take (a text message). */
const UNSUPPORTED_DATA = 1003;

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
    reconnects: 0,
    resumes: 0,
    resyncs: 0,
    framesResent: 0,
    acksSent: 0,
    rejectedUnackedFull: 0,
    heartbeatsSent: 0,
    heartbeatLosses: 0,
  };
  /** Session id from `Welcome` (a `Long` when the `long` package is present). */
  sessionId: M.Int64 | null = null;
  /** Server version from `Welcome`. */
  serverVersion: string | null = null;

  private state: ConnectionState = "idle";
  private transport: Transport | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly handlers = new Map<number, Set<Handler>>();
  private readonly closeHandlers = new Set<(reason: string) => void>();
  private readonly resumedHandlers = new Set<(info: ResumeInfo) => void>();
  private readonly opts: Required<Omit<ClientOptions, "compression" | "resume" | "onHandlerError">> & {
    onHandlerError: (error: unknown, where: string) => void;
    compression: CompressionOptions;
    resume: Required<ResumeOptions> | null;
  };
  // Sequencing (docs/PROTOCOL.md, "Resume"), once `Welcome` granted it.
  private sequenced = false;
  private token: Uint8Array | null = null;
  private lastRecv = 0;
  private lastSent = 0;
  private lastAckSent = 0;
  private unacked: { seq: number; frame: Uint8Array }[] = [];
  private ackTimer: unknown = null;
  private reconnectTimer: unknown = null;
  // Bounds one reconnect attempt: a socket that never opens, or a Resume never answered.
  private attemptTimer: unknown = null;
  private attempt = 0;
  private failures = 0;
  private generation = 0;
  private connectTimer: unknown = null;
  // Rejects the pending `connect()` (set while the handshake runs).
  private handshakeFailed: ((err: Error) => void) | null = null;
  // A `Kicked` push arrived: the server is ending the session (the account logged in elsewhere).
  private kicked: M.Kicked | null = null;
  // Why the connection was lost when reconnecting started (named in the final reason if it fails).
  private lostReason: string | null = null;
  // Liveness check (heartbeatMs): received / sent anything since the last check.
  private beatTimer: unknown = null;
  private deadTimer: unknown = null;
  private heard = false;
  private spoke = false;

  constructor(options: ClientOptions) {
    const compression = { ...DEFAULT_COMPRESSION, ...options.compression };
    this.opts = {
      url: options.url,
      transport: options.transport ?? webSocketTransport(),
      requestTimeoutMs: duration("requestTimeoutMs", options.requestTimeoutMs, 10_000, 1),
      maxPending: count("maxPending", options.maxPending, 1024, 1),
      maxFrame: count("maxFrame", options.maxFrame, DEFAULT_MAX_FRAME, 20),
      compression: {
        ...compression,
        threshold: size("compression.threshold", compression.threshold),
        maxInflated: size("compression.maxInflated", compression.maxInflated),
        level: zlibLevel(compression.level),
      },
      clientVersion: options.clientVersion ?? PROTOCOL_VERSION,
      timers: options.timers ?? {
        setTimeout: (fn, ms) => setTimeout(fn, ms),
        clearTimeout: (h) => clearTimeout(h),
      },
      heartbeatMs: duration("heartbeatMs", options.heartbeatMs, 15_000, 0),
      deadAfterMs: 0,
      resume: resumeOptions(options.resume),
      onHandlerError: options.onHandlerError ?? ((e, where) => console.error(`lattice: ${where} threw`, e)),
    };
    this.opts.deadAfterMs = duration("deadAfterMs", options.deadAfterMs, Math.min(2 * this.opts.heartbeatMs, MAX_TIMER_MS) || 1, 1);
    try {
      parseVersion(this.opts.clientVersion); // fail early on a malformed version
    } catch (e) {
      throw new RangeError(`clientVersion ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** `true` between a successful `connect` and the close, except while reconnecting. */
  get isOpen(): boolean {
    return this.state === "open";
  }

  /** Where the client is. */
  get connectionState(): ConnectionState {
    return this.state;
  }

  /** `true` once `Welcome` granted resume: a lost connection is then replaced automatically. */
  get resumable(): boolean {
    return this.sequenced;
  }

  /** Number of requests awaiting an answer. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /**
   * Opens the transport, sends `Hello` with the client version and waits for `Welcome`.
   * Rejects with `ServerError` (e.g. `VERSION_MISMATCH`), `ProtocolError` (the server's major
   * version differs, or it broke the protocol), `RequestTimeoutError` (no `Welcome` within
   * `requestTimeoutMs` of this call, opening included) or `ConnectionClosedError` (the transport
   * closed, reported an error, or could not be created, e.g. no global `WebSocket`); the
   * connection is closed then. Called once per client: in any other state than before the first
   * call it rejects with `ProtocolError` and changes nothing (make a new client to connect again).
   */
  connect(): Promise<M.Welcome> {
    if (this.state !== "idle") return Promise.reject(new ProtocolError(`connect called in state ${this.state}`));
    this.state = "handshake";
    return new Promise<M.Welcome>((resolve, reject) => {
      // Every way the handshake ends without Welcome (close() included) goes through shutdown(),
      // which rejects connect() with `err`, or with ConnectionClosedError(reason) without one.
      this.handshakeFailed = reject;
      const fail = (err: Error) => this.shutdown(err instanceof ConnectionClosedError ? err.reason : err.message, err);
      // The handshake bound runs from here: a socket that never opens (a stalled upgrade, a
      // dropped SYN) fails connect() as surely as a missing Welcome.
      const ms = this.opts.requestTimeoutMs;
      let opened = false;
      this.connectTimer = this.opts.timers.setTimeout(() => {
        this.connectTimer = null;
        if (this.state !== "handshake") return;
        this.stats.timeouts++;
        const what = opened ? "no Welcome" : "the transport did not open";
        fail(new RequestTimeoutError(Opcode.Hello, 0, ms, `handshake not complete within ${ms} ms (${what})`));
      }, ms);
      try {
        const hello = { clientVersion: this.opts.clientVersion, resume: this.opts.resume !== null };
        // Every transport gets a generation; events of an older one are ignored (its socket was
        // replaced), the client-side twin of the server's binding generation.
        const gen = ++this.generation;
        this.transport = this.opts.transport(this.opts.url, {
          open: () => {
            if (this.generation !== gen) return;
            opened = true;
            this.sendRequest(Opcode.Hello, hello).then((reply) => {
              // close() (or a broken frame) may have ended the session after the Welcome came.
              if (this.state !== "handshake") return;
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
              if (this.opts.resume && welcome.resumeToken.length > 0) {
                // From here on every frame either way carries the SEQ extension.
                this.sequenced = true;
                this.token = welcome.resumeToken;
              }
              this.state = "open";
              this.handshakeFailed = null;
              this.beat();
              if (this.connectTimer !== null) {
                this.opts.timers.clearTimeout(this.connectTimer);
                this.connectTimer = null;
              }
              resolve(welcome);
            }, fail);
          },
          message: (data) => {
            if (this.generation === gen) this.receive(data);
          },
          close: (reason, info) => {
            if (this.generation !== gen) return;
            if (this.state === "handshake") this.shutdown(reason);
            else this.lost(reason, info);
          },
          error: (err) => {
            if (this.generation !== gen) return;
            if (this.state === "handshake") fail(new ConnectionClosedError(`transport error: ${describeError(err)}`));
            else this.transportFailed(err);
          },
          protocolError: (reason) => {
            if (this.generation === gen) this.broken(reason, UNSUPPORTED_DATA);
          },
        });
      } catch (e) {
        // The factory could not even start (e.g. no global WebSocket): a documented error class.
        fail(new ConnectionClosedError(`cannot open the transport: ${describeError(e)}`));
      }
    });
  }

  /**
   * Sends a request and resolves with whatever frame answers it (same request id), or rejects
   * with `ServerError` when the answer is an `Error` frame, `RequestTimeoutError`,
   * `ConnectionClosedError`, `ResyncError` (resume), `RangeError` (an invalid `timeoutMs`), or
   * `ProtocolError` (too many pending or unacknowledged requests, body or frame too large).
   */
  request<O extends Opcode>(opcode: O, message: InitOf[O], opts?: { timeoutMs?: number }): Promise<AnyIncoming> {
    if (!this.canSend()) {
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

  /**
   * Sends a message that expects no answer (request id 0). Throws when not open. While
   * reconnecting (resume), requests and sends are kept and go out after the resume.
   */
  send<O extends Opcode>(opcode: O, message: InitOf[O]): void {
    if (!this.canSend()) throw new ConnectionClosedError("not connected");
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

  /**
   * Calls `handler` after every accepted resume (the connection was lost and replaced). When
   * `info.resync` is true, frames were lost: fetch the application's state afresh.
   */
  onResumed(handler: (info: ResumeInfo) => void): () => void {
    this.resumedHandlers.add(handler);
    return () => this.resumedHandlers.delete(handler);
  }

  private canSend(): boolean {
    return this.state === "open" || (this.state === "reconnecting" && this.sequenced);
  }

  /** Closes the session; pending requests reject with `ConnectionClosedError`. */
  close(reason = "closed by client"): void {
    this.shutdown(reason);
  }

  private sendRequest<O extends Opcode>(opcode: O, message: InitOf[O], opts?: { timeoutMs?: number }): Promise<AnyIncoming> {
    let ms: number;
    try {
      ms = duration("timeoutMs", opts?.timeoutMs, this.opts.requestTimeoutMs, 1);
    } catch (e) {
      return Promise.reject(e);
    }
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
      const timer = this.opts.timers.setTimeout(() => {
        if (this.pending.delete(id)) {
          this.stats.timeouts++;
          reject(new RequestTimeoutError(opcode, id, ms));
        }
      }, ms);
      this.pending.set(id, { opcode, seq: this.sequenced ? this.lastSent : 0, timer, resolve, reject });
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
    if (!this.transport && !this.sequenced) throw new ConnectionClosedError("not connected");
    const codec = codecs[opcode] as unknown as MessageCodec<unknown, unknown>;
    const raw = codec.encode(message).finish();
    // The server inflates a compressed body only up to its compress.max_inflated and closes the
    // session beyond it (1002); refuse such bodies here, compressible or not.
    const cap = this.opts.compression.maxInflated;
    if (raw.length > cap) throw new ProtocolError(`body of ${raw.length} bytes exceeds compression.maxInflated ${cap}`);
    const { body, compressed } = compressBody(raw, this.opts.compression);
    const flags = compressed ? FLAG_COMPRESSED : 0;
    const seq = this.sequenced ? { seq: (this.lastSent + 1) >>> 0, ack: this.lastRecv } : undefined;
    const frame = encodeFrame(opcode, flags, requestId, body, seq);
    if (frame.length > this.opts.maxFrame) {
      throw new ProtocolError(`frame of ${frame.length} bytes exceeds maxFrame ${this.opts.maxFrame}`);
    }
    if (seq) {
      const max = this.opts.resume!.maxUnacked;
      if (this.unacked.length >= max) {
        this.stats.rejectedUnackedFull++;
        throw new ProtocolError(`too many frames waiting for the server's acknowledgement (${max})`);
      }
      this.lastSent = seq.seq;
      this.unacked.push({ seq: seq.seq, frame });
      this.ackSent();
    }
    // While reconnecting the frame waits in `unacked` and goes out after the resume.
    if (this.state !== "reconnecting" && this.transport) this.transport.send(frame);
    this.spoke = true;
    this.stats.framesSent++;
    if (compressed) this.stats.compressedSent++;
  }

  /** The acknowledgement of `lastRecv` left (on a frame or in an `Ack`). */
  private ackSent(): void {
    this.lastAckSent = this.lastRecv;
    if (this.ackTimer !== null) {
      this.opts.timers.clearTimeout(this.ackTimer);
      this.ackTimer = null;
    }
  }

  /** Something was received: acknowledge it within `ackDelayMs`. */
  private scheduleAck(): void {
    if (this.ackTimer !== null) return;
    this.ackTimer = this.opts.timers.setTimeout(() => {
      this.ackTimer = null;
      if (this.state !== "open" || !this.transport || this.lastRecv === this.lastAckSent) return;
      const frame = encodeFrame(Opcode.Ack, 0, 0, new Uint8Array(0), { seq: 0, ack: this.lastRecv });
      this.transport.send(frame);
      this.ackSent();
      this.spoke = true;
      this.stats.acksSent++;
    }, this.opts.resume!.ackDelayMs);
  }

  /** The server acknowledged everything up to `ack`: forget those frames. */
  private acked(ack: number): void {
    let n = 0;
    while (n < this.unacked.length && !seqAfter(this.unacked[n]!.seq, ack)) n++;
    if (n > 0) this.unacked.splice(0, n);
  }

  /** Sequencing checks of a frame of a sequenced session. Returns false when it is consumed. */
  private sequence(frame: Frame): boolean {
    if ((frame.flags & FLAG_SEQ) === 0) {
      this.broken(`protocol error: frame (opcode ${frame.opcode}) without SEQ on a resumable session`);
      return false;
    }
    this.acked(frame.ack);
    if (frame.opcode === Opcode.Ack) return false;
    const expected = (this.lastRecv + 1) >>> 0;
    if (frame.seq !== expected) {
      this.broken(`protocol error: got seq ${frame.seq}, expected ${expected}`);
      return false;
    }
    this.lastRecv = frame.seq;
    this.scheduleAck();
    return true;
  }

  /**
   * The connection was lost (not closed by us): resume when we can, else the session ends. A
   * close the server means as final (a close frame with a session-ending code, or any close after
   * a `Kicked` push) ends the session with the server's reason instead of resuming.
   */
  private lost(reason: string, info?: CloseInfo): void {
    if (this.state === "closed") return;
    if (this.kicked) {
      this.shutdown(`kicked: ${this.kicked.message} (${ErrorCode[this.kicked.code] ?? this.kicked.code}); ${reason}`);
      return;
    }
    if (!this.sequenced || !this.opts.resume || (info?.code !== undefined && FINAL_CLOSE_CODES.indexOf(info.code) >= 0)) {
      this.shutdown(reason);
      return;
    }
    if (this.lostReason === null) this.lostReason = reason;
    this.state = "reconnecting";
    this.transport = null;
    ++this.generation;
    if (this.ackTimer !== null) {
      this.opts.timers.clearTimeout(this.ackTimer);
      this.ackTimer = null;
    }
    this.stopBeat();
    this.scheduleReconnect(reason);
  }

  private scheduleReconnect(reason: string): void {
    const r = this.opts.resume!;
    if (this.failures >= r.maxAttempts) {
      const first = this.lostReason !== null && this.lostReason !== reason ? `${this.lostReason}; last: ` : "";
      this.shutdown(`connection lost (${first}${reason}); gave up after ${r.maxAttempts} reconnects`);
      return;
    }
    // Full jitter: a crowd of clients cut at once does not come back at once.
    const cap = Math.min(r.maxDelayMs, r.baseDelayMs * Math.pow(2, this.failures));
    const delay = r.random() * cap;
    this.failures++;
    this.reconnectTimer = this.opts.timers.setTimeout(() => {
      this.reconnectTimer = null;
      this.reconnect();
    }, delay);
  }

  /** Opens a new transport and sends `Resume`; its answer is handled in `resumeAnswer`. */
  private reconnect(): void {
    if (this.state !== "reconnecting") return;
    this.stats.reconnects++;
    const gen = ++this.generation;
    const retry = (why: string) => {
      if (this.generation !== gen || this.state !== "reconnecting") return;
      this.clearAttemptTimer();
      const t = this.transport;
      this.transport = null;
      ++this.generation;
      if (t) {
        try {
          t.close();
        } catch {
          // Already closed: nothing to release.
        }
      }
      this.scheduleReconnect(why);
    };
    // Each attempt is bounded like the first handshake: a socket that never opens or a Resume
    // never answered counts as a failed reconnect (towards maxAttempts), not a wait forever.
    const ms = this.opts.requestTimeoutMs;
    this.clearAttemptTimer();
    this.attemptTimer = this.opts.timers.setTimeout(() => {
      this.attemptTimer = null;
      retry(`reconnect attempt not answered within ${ms} ms`);
    }, ms);
    try {
      this.transport = this.opts.transport(this.opts.url, {
        open: () => {
          if (this.generation !== gen || !this.transport) return;
          this.attempt++;
          const body = M.Resume.encode({
            sessionId: this.sessionId ?? 0,
            token: this.token ?? new Uint8Array(0),
            lastReceivedSeq: this.lastRecv,
            attempt: this.attempt,
          }).finish();
          this.transport.send(encodeFrame(Opcode.Resume, 0, this.allocateId(), body));
        },
        message: (data) => {
          if (this.generation !== gen) return;
          if (this.state === "reconnecting") this.resumeAnswer(data);
          else this.receive(data);
        },
        close: (why, info) => {
          if (this.generation !== gen) return;
          if (this.state === "reconnecting" && info?.code !== undefined && FINAL_CLOSE_CODES.indexOf(info.code) >= 0) {
            this.shutdown(`resume failed: ${why}${this.lostReason ? ` (after ${this.lostReason})` : ""}`);
          } else if (this.state === "reconnecting") retry(why);
          else this.lost(why, info);
        },
        error: (err) => {
          if (this.generation !== gen) return;
          if (this.state === "reconnecting") retry(`transport error: ${describeError(err)}`);
          else this.transportFailed(err);
        },
        protocolError: (why) => {
          if (this.generation === gen) this.shutdown(why, undefined, UNSUPPORTED_DATA);
        },
      });
    } catch (e) {
      retry(`cannot open the transport: ${describeError(e)}`);
    }
  }

  /**
   * A transport error on an open connection (a failed send, e.g. a mini-game `SocketTask.send`
   * fail callback): the connection is treated as lost at once (closed, then resumed or ended as
   * `lost` decides), so a frame that never left does not leave its request waiting out its
   * timeout or, on a sequenced session, open a gap the server would close the session for.
   */
  private transportFailed(err: unknown): void {
    if (this.state !== "open") return;
    const t = this.transport;
    this.lost(`transport error: ${describeError(err)}`);
    if (t) {
      try {
        t.close();
      } catch {
        // Already closed.
      }
    }
  }

  private clearAttemptTimer(): void {
    if (this.attemptTimer !== null) {
      this.opts.timers.clearTimeout(this.attemptTimer);
      this.attemptTimer = null;
    }
  }

  /** The first frame on a reconnected transport: `Resumed`, or the refusal. */
  private resumeAnswer(data: Uint8Array): void {
    this.clearAttemptTimer();
    let frame: Frame;
    let message: unknown;
    try {
      frame = decodeFrame(data, this.opts.maxFrame);
      if ((frame.flags & (FLAG_SEQ | FLAG_COMPRESSED)) !== 0 || !isOpcode(frame.opcode)) {
        throw new FrameError(`unexpected answer to Resume (opcode ${frame.opcode}, flags ${frame.flags})`);
      }
      message = (codecs[frame.opcode] as unknown as MessageCodec<unknown, unknown>).decode(frame.body);
    } catch (e) {
      this.shutdown(`resume failed: ${(e as Error).message}`);
      return;
    }
    if (frame.opcode === Opcode.Error) {
      const err = message as M.Error;
      // The session is gone (closed, expired): nothing to resume; the application starts anew.
      const after = this.lostReason ? ` after ${this.lostReason}` : "";
      this.shutdown(`session lost: ${err.message} (${ErrorCode[err.code] ?? err.code})${after}`);
      return;
    }
    if (frame.opcode !== Opcode.Resumed) {
      this.shutdown(`resume failed: expected Resumed, got opcode ${frame.opcode}`);
      return;
    }
    const r = message as M.Resumed;
    this.token = r.resumeToken;
    if (r.resync) {
      // Frames we lacked were evicted: numbering goes on after the server's last frame.
      this.lastRecv = r.serverSeq >>> 0;
      this.stats.resyncs++;
    }
    this.lastAckSent = this.lastRecv;
    this.acked(r.lastReceivedSeq);
    this.state = "open";
    this.lostReason = null;
    this.beat();
    const info: ResumeInfo = { resync: r.resync, attempts: this.failures };
    this.failures = 0;
    this.stats.resumes++;
    // What the server did not get goes again, in order.
    for (const u of this.unacked) {
      this.transport!.send(u.frame);
      this.stats.framesResent++;
    }
    if (r.resync) {
      // Requests the server had received may have lost their answers with the evicted frames:
      // reject them now rather than at their timeouts. Those it had not received were just resent.
      for (const [id, p] of [...this.pending]) {
        if (seqAfter(p.seq, r.lastReceivedSeq)) continue;
        this.pending.delete(id);
        this.opts.timers.clearTimeout(p.timer);
        p.reject(new ResyncError(p.opcode, id));
      }
    }
    for (const h of [...this.resumedHandlers]) this.guard("onResumed handler", () => h(info));
  }

  private receive(data: Uint8Array): void {
    if (this.state === "closed") return;
    this.stats.framesReceived++;
    this.heard = true;
    if (this.deadTimer !== null) {
      this.opts.timers.clearTimeout(this.deadTimer);
      this.deadTimer = null;
    }
    let opcode: number, requestId: number, body: Uint8Array;
    try {
      const frame = decodeFrame(data, this.opts.maxFrame);
      if (!this.sequenced && (frame.flags & FLAG_SEQ) !== 0) {
        // As the server: SEQ belongs to sessions that resume granted, and only after Welcome.
        throw new FrameError(`protocol error: SEQ flag on a session without resume (opcode ${frame.opcode})`);
      }
      if (this.sequenced && !this.sequence(frame)) return;
      ({ opcode, requestId, body } = frame);
      if (frame.flags & FLAG_COMPRESSED) {
        body = inflateBody(body, this.opts.compression.maxInflated);
        this.stats.compressedReceived++;
      }
    } catch (e) {
      // A broken frame means the stream can no longer be trusted: close, like the server does.
      this.broken(e instanceof FrameError ? e.message : String(e));
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
    if (opcode === Opcode.Kicked && requestId === 0) {
      // The server closes right after it: that close ends the session (no resume).
      this.kicked = message as M.Kicked;
    }
    if (pending && this.state === "handshake" && opcode === Opcode.Welcome && this.opts.resume) {
      // The frame behind Welcome (a push such as the icon manifest) may be handled before the
      // handshake's promise callback runs: sequencing starts here, with the Welcome itself.
      const welcome = message as M.Welcome;
      if (welcome.resumeToken.length > 0) {
        this.sequenced = true;
        this.token = welcome.resumeToken;
      }
    }
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
      // A Pong with request id 0 answers a heartbeat Ping: expected, not "unhandled".
      if (opcode !== Opcode.Pong || requestId !== 0) this.stats.unhandled++;
      return;
    }
    for (const h of [...set]) {
      this.guard(`push handler of opcode ${opcode} (${Opcode[opcode]})`, () => (h as (m: unknown, f: unknown) => void)(message, incoming));
    }
  }

  /** Starts (or restarts) the liveness check; the connection just became open. */
  private beat(): void {
    this.stopBeat();
    if (this.opts.heartbeatMs === 0) return;
    this.heard = this.spoke = false;
    this.beatTimer = this.opts.timers.setTimeout(() => this.check(), this.opts.heartbeatMs);
  }

  private stopBeat(): void {
    if (this.beatTimer !== null) this.opts.timers.clearTimeout(this.beatTimer);
    if (this.deadTimer !== null) this.opts.timers.clearTimeout(this.deadTimer);
    this.beatTimer = this.deadTimer = null;
  }

  /** One liveness check: Ping when quiet either way; silence after it means the socket is dead. */
  private check(): void {
    this.beatTimer = null;
    if (this.state !== "open") return;
    const heard = this.heard;
    const full = this.sequenced && this.unacked.length >= this.opts.resume!.maxUnacked;
    if ((!heard || !this.spoke) && !full) {
      try {
        // Request id 0: no pending entry, no timer (the answer is a Pong push, not counted as unhandled).
        this.writeFrame(Opcode.Ping, {}, 0);
        this.stats.heartbeatsSent++;
      } catch {
        // Defensive: a failing send must not stop the check; silence decides below either way.
      }
    }
    if (!heard && this.deadTimer === null) {
      const ms = this.opts.deadAfterMs;
      this.deadTimer = this.opts.timers.setTimeout(() => {
        this.deadTimer = null;
        if (this.state !== "open") return;
        this.stats.heartbeatLosses++;
        // Lost exactly like a socket closed without a close frame; the dead socket is closed here.
        const t = this.transport;
        this.transport = null;
        ++this.generation;
        try {
          t?.close();
        } catch {
          // Already broken: nothing to close.
        }
        this.lost(`heartbeat: nothing received for ${ms} ms after a Ping`);
      }, ms);
    }
    this.heard = this.spoke = false;
    this.beatTimer = this.opts.timers.setTimeout(() => this.check(), this.opts.heartbeatMs);
  }

  /**
   * The peer broke the protocol: the session closes with `code` (1002 for a broken frame, 1003 for
   * what the transport reports, a text message) and a pending `connect()` rejects with
   * `ProtocolError`.
   */
  private broken(reason: string, code: number = PROTOCOL_ERROR): void {
    this.shutdown(reason, new ProtocolError(reason), code);
  }

  /**
   * Ends the session; a pending `connect()` rejects with `err`, or `ConnectionClosedError(reason)`.
   * `closeCode`: the transport is closed with it (a protocol error), else without a code.
   */
  private shutdown(reason: string, err?: Error, closeCode?: number): void {
    if (this.state === "closed") return;
    this.state = "closed";
    const handshakeFailed = this.handshakeFailed;
    this.handshakeFailed = null;
    ++this.generation;
    for (const timer of [this.ackTimer, this.reconnectTimer, this.connectTimer, this.attemptTimer]) {
      if (timer !== null) this.opts.timers.clearTimeout(timer);
    }
    this.ackTimer = this.reconnectTimer = this.connectTimer = this.attemptTimer = null;
    this.stopBeat();
    this.unacked = [];
    const t = this.transport;
    this.transport = null;
    if (t) {
      try {
        if (closeCode === undefined) t.close();
        else t.close(closeCode, closeCode === UNSUPPORTED_DATA ? "text message received" : "protocol error");
      } catch {
        // Closing an already broken transport may throw; the session is over either way.
      }
    }
    handshakeFailed?.(err ?? new ConnectionClosedError(reason));
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      this.opts.timers.clearTimeout(p.timer);
      p.reject(new ConnectionClosedError(reason));
    }
    for (const h of [...this.closeHandlers]) this.guard("onClose handler", () => h(reason));
  }

  /**
   * Runs an application callback: what it throws is reported to `onHandlerError`, never to the
   * socket's event dispatch (with the `ws` package that would crash Node or stop frame processing).
   */
  private guard(where: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      try {
        this.opts.onHandlerError(e, where);
      } catch {
        // A failing reporter must not stop frame processing either.
      }
    }
  }
}

/** `a` comes after `b` in 32-bit serial-number order (RFC 1982). */
function seqAfter(a: number, b: number): boolean {
  const d = (a - b) >>> 0;
  return d !== 0 && d < 0x80000000;
}

/** The largest delay timers take (2^31 − 1 ms, about 24.8 days); larger ones fire at once. */
const MAX_TIMER_MS = 0x7fffffff;

/**
 * A duration option in ms: `def` when absent; a number ≥ `min` (`Infinity` included) is clamped to
 * `MAX_TIMER_MS`; anything else (NaN, below `min`, not a number) throws a `RangeError`.
 */
function duration(name: string, v: number | undefined, def: number, min: number): number {
  if (v === undefined) return def;
  if (typeof v !== "number" || !(v >= min)) throw new RangeError(`${name} must be a number of ms >= ${min}, got ${String(v)}`);
  return Math.min(v, MAX_TIMER_MS);
}

/** A count option: `def` when absent, else an integer ≥ `min` (or a `RangeError`). */
function count(name: string, v: number | undefined, def: number, min: number): number {
  if (v === undefined) return def;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${String(v)}`);
  return v;
}

/** A byte size that may be `Infinity`: a number ≥ 0, else a `RangeError`. */
function size(name: string, v: number): number {
  if (typeof v !== "number" || !(v >= 0)) throw new RangeError(`${name} must be a number >= 0, got ${String(v)}`);
  return v;
}

/** `compression.level`: an integer 0..9, else a `RangeError` (NaN would turn compression off). */
function zlibLevel(v: number): CompressionOptions["level"] {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 9) throw new RangeError(`compression.level must be an integer 0..9, got ${String(v)}`);
  return v as CompressionOptions["level"];
}

function resumeOptions(o: boolean | ResumeOptions | undefined): Required<ResumeOptions> | null {
  if (!o) return null;
  const r = o === true ? {} : o;
  return {
    maxAttempts: count("resume.maxAttempts", r.maxAttempts, 20, 0),
    baseDelayMs: duration("resume.baseDelayMs", r.baseDelayMs, 100, 0),
    maxDelayMs: duration("resume.maxDelayMs", r.maxDelayMs, 5000, 0),
    ackDelayMs: duration("resume.ackDelayMs", r.ackDelayMs, 200, 0),
    maxUnacked: count("resume.maxUnacked", r.maxUnacked, 1024, 1),
    random: r.random ?? (() => Math.random()),
  };
}
