#!/usr/bin/env python3
"""A stand-in for your app behind ringway: receives webhooks, answers the
authorization and connect callbacks, and checks every request's signature.
Python 3 standard library only.

    RINGWAY_HOOKS_SECRET=... python3 examples/app_backend.py 127.0.0.1:9000

then start a node with

    ringway --hooks-url http://127.0.0.1:9000/hooks \
            --authorize-url http://127.0.0.1:9000/authorize --authorize-room 'private:*' \
            --connect-url http://127.0.0.1:9000/connect

Rules (edit them): the user "alice" may do anything in private rooms, others
may only subscribe; the cookie sid=alice-session is alice, any other cookie is
refused, no cookie is anonymous.
"""

import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("RINGWAY_HOOKS_SECRET", "").encode()


def signed(body: bytes, header: str) -> bool:
    """X-Ringway-Signature: sha256=<hex HMAC-SHA256 of the raw body>."""
    want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, header or "")


def authorize(q):
    if q["user"] == "alice":
        return {"allow": True, "ttl_s": 60}
    return {"allow": q["action"] == "subscribe", "ttl_s": 60}


def connect(q):
    sid = q["cookies"].get("sid")
    if sid is None:
        return 200, {"user": None}
    if sid == "alice-session":
        return 200, {"user": "alice", "rooms": {"sub": ["*"], "pub": ["*"]}}
    return 403, {}


class App(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not signed(body, self.headers.get("X-Ringway-Signature")):
            return self.answer(401, {"error": "bad signature"})
        q = json.loads(body)
        if self.path == "/hooks":
            for e in q["events"]:
                print(f"batch {q['batch']} from {q['node']}: {json.dumps(e)}", flush=True)
            return self.answer(200, {})
        if self.path == "/authorize":
            a = authorize(q)
            print(f"authorize {q['user']} {q['action']} {q['room']}: {a['allow']}", flush=True)
            return self.answer(200, a)
        if self.path == "/connect":
            status, a = connect(q)
            print(f"connect cookies={q['cookies']}: {status} {a}", flush=True)
            return self.answer(status, a)
        self.answer(404, {})

    def answer(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    if len(SECRET) < 16:
        sys.exit("set RINGWAY_HOOKS_SECRET (the node's hooks.secret, at least 16 characters)")
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9000").rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), App).serve_forever()
