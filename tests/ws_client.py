#!/usr/bin/env python3
"""A Lattice chat client over WebSocket written with the Python `websockets` package, from
docs/PROTOCOL.md alone (frames and protobuf bodies encoded by hand): used by the real-client tests.

  ws_client.py URL ROOM --expect TEXT --say TEXT [--ca CERT.pem]

Connects (subprotocol lattice.v1), says Hello, joins ROOM and prints `READY <session id>`; waits
for a `Said` whose text is --expect (from another client) and prints `GOT <from> <text>`; then says
--say, waits for its own `Said` echo, prints `DONE` and exits 0. Any Error frame, close or timeout
exits 1 with the reason.
"""
import argparse, ssl, struct, sys

from websockets.sync.client import connect

HELLO, WELCOME, ERROR, JOIN_ROOM, JOINED, SAY, SAID = 1, 2, 3, 10, 11, 12, 13
ICON_MANIFEST = 70


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_str(num, s):
    b = s.encode()
    return varint(num << 3 | 2) + varint(len(b)) + b


def frame(opcode, rid, body):
    return struct.pack("<IHHI", 12 + len(body), opcode, 0, rid) + body


def parse_fields(body):
    """protobuf body -> {field number: value} (varints as int, length-delimited as bytes)."""
    out, i = {}, 0
    while i < len(body):
        key, i = read_varint(body, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            out[num], i = read_varint(body, i)
        elif wt == 2:
            n, i = read_varint(body, i)
            out[num], i = body[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wt}")
    return out


def read_varint(b, i):
    shift = n = 0
    while True:
        x = b[i]
        i += 1
        n |= (x & 0x7F) << shift
        shift += 7
        if not x & 0x80:
            return n, i


def recv(ws):
    msg = ws.recv(timeout=20)
    if isinstance(msg, str):
        sys.exit("text message from the server")
    length, opcode, flags, rid = struct.unpack("<IHHI", msg[:12])
    assert length == len(msg), "one frame per binary message"
    assert flags == 0, "compressed frames are not expected here"
    f = parse_fields(msg[12:])
    if opcode == ERROR:
        sys.exit(f"server error {f.get(1)}: {f.get(2, b'').decode()}")
    return opcode, rid, f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("room")
    ap.add_argument("--expect", required=True)
    ap.add_argument("--say", required=True)
    ap.add_argument("--version", default="1.0.0-alpha")
    ap.add_argument("--ca", help="PEM certificate to trust for a wss:// URL")
    a = ap.parse_args()
    ctx = None
    if a.url.startswith("wss://"):
        ctx = ssl.create_default_context(cafile=a.ca)
    with connect(a.url, subprotocols=["lattice.v1"], open_timeout=20, ssl=ctx) as ws:
        assert ws.subprotocol == "lattice.v1", ws.subprotocol
        ws.send(frame(HELLO, 1, field_str(1, a.version)))
        op, rid, f = recv(ws)
        assert op == WELCOME and rid == 1, (op, rid)
        me = f.get(2, 0)
        ws.send(frame(JOIN_ROOM, 2, field_str(1, a.room)))
        op, rid, f = recv(ws)
        # The server pushes its icon manifest (request id 0) right after the first Welcome.
        if op == ICON_MANIFEST and rid == 0:
            op, rid, f = recv(ws)
        assert op == JOINED and rid == 2, (op, rid)
        print(f"READY {me}", flush=True)
        while True:
            op, rid, f = recv(ws)
            if op == SAID and f.get(3, b"").decode() == a.expect:
                print(f"GOT {f.get(2, 0)} {a.expect}", flush=True)
                break
        ws.send(frame(SAY, 3, field_str(1, a.room) + field_str(2, a.say)))
        while True:
            op, rid, f = recv(ws)
            if op == SAID and rid == 3:
                break
        print("DONE", flush=True)


if __name__ == "__main__":
    main()
