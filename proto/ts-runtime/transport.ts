// Transports: anything that carries one binary frame per message. The client never touches a
// socket API directly, so browsers, Node and mini-program sockets all plug in here.

/** What a transport reports to the client. */
export interface TransportEvents {
  open(): void;
  message(data: Uint8Array): void;
  close(reason: string): void;
  error(err: unknown): void;
}

/** An open (or opening) connection. */
export interface Transport {
  /** Sends one frame as one binary message. */
  send(frame: Uint8Array): void;
  /** Closes the connection; `events.close` may still be called afterwards. */
  close(): void;
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

function closeReason(kind: string, ev?: { code?: number; reason?: string } | null): string {
  const code = ev && ev.code !== undefined ? ` code ${ev.code}` : "";
  const reason = ev && ev.reason ? `: ${ev.reason}` : "";
  return `${kind} closed${code}${reason}`;
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
      else events.error(new Error("text WebSocket message received: Lattice frames are binary"));
    };
    ws.onclose = (ev) => events.close(closeReason("websocket", ev));
    ws.onerror = (ev) => events.error(ev);
    return { send: (frame) => ws.send(frame), close: () => ws.close() };
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
      else events.error(new Error("text socket message received: Lattice frames are binary"));
    });
    task.onClose((res) => events.close(closeReason("socket", res)));
    task.onError((err) => events.error(err));
    return {
      // SocketTask.send wants a whole ArrayBuffer, not a view.
      send: (frame) =>
        task.send({
          data: frame.buffer.slice(frame.byteOffset, frame.byteOffset + frame.byteLength) as ArrayBuffer,
          fail: (err) => events.error(err),
        }),
      close: () => task.close({}),
    };
  };
}
