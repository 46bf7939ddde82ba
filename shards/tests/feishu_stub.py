#!/usr/bin/env python3
"""A local stand-in for a Feishu custom-bot webhook, for shards/tests/alerts.rs.

    feishu_stub.py SECRET OUT_FILE [CERT_PEM KEY_PEM]

Binds 127.0.0.1 on a free port and prints it. For each POST it checks, with Python's own
hmac/hashlib/base64 (an implementation independent of the server's): the JSON shape the custom
bot requires (msg_type "text", content.text), the timestamp (Unix seconds as a string, within an
hour of now) and the signature base64(HMAC-SHA256(key = "{timestamp}\\n{secret}", msg = "")).
It appends one JSON line per request to OUT_FILE ({"sign_ok", "shape_ok", "text", "path"}) and
answers like the bot: {"code": 0} when everything checks, {"code": 19021} for a bad signature,
{"code": 9499} for a bad body. With CERT_PEM and KEY_PEM it serves HTTPS. Runs until killed.
"""
import base64
import hashlib
import hmac
import http.server
import json
import ssl
import sys
import time

SECRET = sys.argv[1]
OUT = sys.argv[2]


def expected_sign(ts):
    key = f"{ts}\n{SECRET}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        rec = {"path": self.path, "sign_ok": False, "shape_ok": False, "text": None}
        try:
            body = json.loads(raw)
            rec["shape_ok"] = (
                body.get("msg_type") == "text"
                and isinstance(body.get("content"), dict)
                and isinstance(body["content"].get("text"), str)
                and self.headers.get("Content-Type", "").startswith("application/json")
            )
            rec["text"] = body.get("content", {}).get("text")
            ts = body.get("timestamp")
            rec["sign_ok"] = (
                isinstance(ts, str)
                and ts.isdigit()
                and abs(int(ts) - time.time()) < 3600
                and hmac.compare_digest(str(body.get("sign")), expected_sign(ts))
            )
        except Exception as e:  # noqa: BLE001 - a bad body is recorded, not fatal
            rec["error"] = str(e)
        with open(OUT, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if not rec["shape_ok"]:
            answer = {"code": 9499, "msg": "Bad Request", "data": {}}
        elif not rec["sign_ok"]:
            answer = {"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time", "data": {}}
        else:
            answer = {"code": 0, "msg": "success", "data": {}}
        out = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


srv = http.server.HTTPServer(("127.0.0.1", 0), H)
if len(sys.argv) > 4:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
