"""A real loopback HTTP server that receives webhooks, for the tests that deliver them.

Loopback receivers are refused as SSRF unless allow-listed: tests that deliver to one set
`WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]`, as an operator would for an internal receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


class WebhookReceiver:
    """Records every POST (headers, body, path). `fail_first` answers 500 that many times;
    `redirect_to` answers 307 to that address instead of 200."""

    def __init__(self, *, fail_first: int = 0, redirect_to: str = ""):
        self.calls: list[dict] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls.append({"headers": dict(self.headers), "body": body,
                                    "path": self.path})
                if len(outer.calls) <= outer.fail_first:
                    self.send_response(500)
                elif redirect_to:
                    self.send_response(307)
                    self.send_header("Location", redirect_to)
                else:
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def signature_valid(secret: str, call: dict) -> bool:
    """Whether a received call carries the platform's HMAC signature for `secret`."""
    timestamp = call["headers"]["X-SynapseX-Timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + call["body"],
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(call["headers"]["X-SynapseX-Signature"], f"sha256={expected}")
