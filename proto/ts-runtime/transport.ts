// Transports: anything that carries one binary frame per message. The client never touches a
// socket API directly, so browsers, Node and mini-program sockets all plug in here.

/** What a transport knows about how it closed. */
export interface CloseInfo {
  /**
   * The close code (WebSocket: the `CloseEvent.code`; 1006 or absent when no close frame came).
   * The server's own codes are in docs/PROTOCOL.md, "Close codes".
   */
  code?: number | undefined;
  /** The close frame's reason text, if any. */
  reason?: string | undefined;
}

/** What a transport reports to the client. */
export interface TransportEvents {
  open(): void;
  message(data: Uint8Array): void;
  /** The connection ended; `info` carries the close code and reason when the socket has them. */
  close(reason: string, info?: CloseInfo): void;
  /** A socket error (an error event, a failed send); a `close` usually follows. */
  error(err: unknown): void;
  /**
   * The peer broke the transport's contract (e.g. a text WebSocket message): the session closes,
   * the client calling `close(1003, …)`.
   */
  protocolError(reason: string): void;
}

/** An open (or opening) connection. */
export interface Transport {
  /** Sends one frame as one binary message. */
  send(frame: Uint8Array): void;
  /**
   * Closes the connection; `events.close` may still be called afterwards. Without a code, a plain
   * close; with one (the client gives 1002 or 1003 after a protocol error), a close frame with
   * that code and the short ASCII `reason` where the socket can send one.
   */
  close(code?: number, reason?: string): void;
}

/** Opens a transport to `url`, reporting through `events`. */
export type TransportFactory = (url: string, events: TransportEvents) => Transport;

/** The part of the WHATWG `WebSocket` the client uses (browser, Node 22+, the `ws` package). */
export interface WebSocketLike {
  binaryType: string;
  send(data: ArrayBuffer | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => unknown) | null;
  onmessage: ((ev: { data: unknown }) => unknown) | null;
  onclose: ((ev: { code?: number; reason?: string }) => unknown) | null;
  onerror: ((ev: unknown) => unknown) | null;
}

/** A `WebSocket` constructor. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

// The host's WebSocket, if any (typed here so the client does not need the DOM typings).
declare const WebSocket: WebSocketConstructor | undefined;

function toBytes(data: unknown): Uint8Array | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/**
 * A readable text for whatever a socket API reports as an error: an `Error`, a DOM `Event` or
 * `ErrorEvent` (`type`, `message`, `error`), a `ws` or Node error (`code`, `errno`, `cause`), a
 * mini-program `{ errMsg, errCode }`. Never "[object Object]".
 */
export function describeError(err: unknown): string {
  const seen: unknown[] = [];
  const parts: string[] = [];
  const add = (p: string) => {
    if (p && parts.indexOf(p) < 0) parts.push(p);
  };
  const walk = (e: unknown, depth: number) => {
    if (e === null || e === undefined || depth > 3 || seen.indexOf(e) >= 0) return;
    seen.push(e);
    if (typeof e !== "object") {
      add(String(e));
      return;
    }
    const o = e as Record<string, unknown>;
    const str = (k: string) => (typeof o[k] === "string" && o[k] !== "" ? (o[k] as string) : undefined);
    const num = (k: string) => (typeof o[k] === "number" ? String(o[k]) : undefined);
    const name = str("name");
    const message = str("message") ?? str("errMsg") ?? str("reason");
    if (message) add(name && name !== "Error" && message.indexOf(name) < 0 ? `${name}: ${message}` : message);
    const code = str("code") ?? num("code") ?? num("errCode") ?? num("errno");
    if (code) add(`code ${code}`);
    walk(o["error"], depth + 1);
    walk(o["cause"], depth + 1);
    const type = str("type");
    if (parts.length === 0 && type) add(`${type} event`);
  };
  walk(err, 0);
  if (parts.length > 0) return parts.join(", ");
  try {
    const json = JSON.stringify(err);
    if (json && json !== "{}") return json;
  } catch {
    // Cyclic or exotic: fall through.
  }
  const s = String(err);
  return s === "[object Object]" ? "unknown error (no details from the socket API)" : s;
}

function closeReason(kind: string, ev?: { code?: number; reason?: string } | null): string {
  const code = ev && ev.code !== undefined ? ` code ${ev.code}` : "";
  const reason = ev && ev.reason ? `: ${ev.reason}` : "";
  return `${kind} closed${code}${reason}`;
}

function closeInfo(ev?: { code?: number; reason?: string } | null): CloseInfo {
  return { code: ev && typeof ev.code === "number" ? ev.code : undefined, reason: ev && ev.reason ? ev.reason : undefined };
}

/** Transport over a WHATWG WebSocket (`globalThis.WebSocket` unless a constructor is given). */
export function webSocketTransport(ctor?: WebSocketConstructor): TransportFactory {
  return (url, events) => {
    const C = ctor ?? (typeof WebSocket !== "undefined" ? WebSocket : undefined);
    if (!C) throw new Error("no WebSocket in this environment: pass a constructor or use miniProgramTransport");
    const ws = new C(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => events.open();
    ws.onmessage = (ev) => {
      const bytes = toBytes(ev.data);
      if (bytes) events.message(bytes);
      else events.protocolError("protocol error: text WebSocket message received (Lattice frames travel in binary messages)");
    };
    ws.onclose = (ev) => events.close(closeReason("websocket", ev), closeInfo(ev));
    ws.onerror = (ev) => events.error(ev);
    return {
      send: (frame) => ws.send(frame),
      close: (code, reason) => {
        if (code === undefined) return ws.close();
        try {
          ws.close(code, reason);
        } catch {
          // The WHATWG WebSocket (browsers, Node 22+) lets a script send 1000 and 3000-4999 only:
          // a plain close then. The `ws` package sends the code.
          ws.close();
        }
      },
    };
  };
}

/** The part of a mini-program `SocketTask` (WeChat `wx.connectSocket`, uni-app `uni.connectSocket`) used here. */
export interface SocketTaskLike {
  send(opts: { data: ArrayBuffer; fail?: (err: unknown) => void }): void;
  close(opts?: { code?: number; reason?: string }): void;
  onOpen(cb: (res?: unknown) => void): void;
  onMessage(cb: (res: { data: ArrayBuffer | string }) => void): void;
  onClose(cb: (res?: { code?: number; reason?: string }) => void): void;
  onError(cb: (err: unknown) => void): void;
}

/** Options passed to `connectSocket`. `complete` is set so uni-app returns a SocketTask. */
export interface ConnectSocketOptions {
  url: string;
  complete?: () => void;
}

/**
 * Transport over a mini-program socket: pass `(o) => wx.connectSocket(o)` (WeChat) or
 * `(o) => uni.connectSocket(o)` (uni-app).
 */
export function miniProgramTransport(connectSocket: (opts: ConnectSocketOptions) => SocketTaskLike): TransportFactory {
  return (url, events) => {
    const task = connectSocket({ url, complete: () => {} });
    task.onOpen(() => events.open());
    task.onMessage((res) => {
      const bytes = toBytes(res.data);
      if (bytes) events.message(bytes);
      else events.protocolError("protocol error: text socket message received (Lattice frames travel in binary messages)");
    });
    task.onClose((res) => events.close(closeReason("socket", res), closeInfo(res)));
    task.onError((err) => events.error(err));
    return {
      // SocketTask.send wants a whole ArrayBuffer, not a view.
      send: (frame) =>
        task.send({
          data: frame.buffer.slice(frame.byteOffset, frame.byteOffset + frame.byteLength) as ArrayBuffer,
          fail: (err) => events.error(err),
        }),
      close: (code, reason) => {
        if (code === undefined) return task.close({});
        try {
          task.close({ code, reason: reason ?? "" });
        } catch {
          task.close({});
        }
      },
    };
  };
}
