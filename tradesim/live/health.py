"""The health endpoint: JSON on 127.0.0.1 only, behind a bearer token."""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"  # never another interface: the endpoint is for this machine's operator


def new_token() -> str:
    return secrets.token_urlsafe(24)


class HealthServer:
    """Serves ``snapshot()`` at ``/health`` to requests carrying ``Authorization: Bearer TOKEN``."""

    def __init__(self, *, snapshot: Callable[[], dict[str, Any]], token: str, port: int = 0
                 ) -> None:
        expected = f"Bearer {token}".encode()

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                given = (self.headers.get("Authorization") or "").encode()
                if not hmac.compare_digest(given, expected):
                    self._send(401, {"error": "missing or wrong token: send 'Authorization: "
                                              "Bearer TOKEN' (the token file in the session "
                                              "folder)"})
                    return
                if self.path.split("?")[0] not in ("/", "/health"):
                    self._send(404, {"error": f"unknown path {self.path}; use /health"})
                    return
                body = snapshot()
                self._send(200 if body.get("status") == "ok" else 503, body)

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, default=str).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        self.server = ThreadingHTTPServer((HOST, port), _Handler)
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, name="paper-health",
                                        daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
