"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests, benchmarks and offline demos.

It speaks the real wire format (``POST /v1/chat/completions``), so the real openai and
langchain clients run unmodified against it; replies are queued per request and can inject
HTTP errors, delays (timeouts) and malformed JSON.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer: a status (200 or an error code), its text, and a delay before it."""

    content: str = ""
    status: int = 200
    delay_s: float = 0.0
    prompt_tokens: int = 50
    completion_tokens: int = 20


class FakeOpenAIServer:
    """Serves queued :class:`Reply` objects in order, then ``default`` for every later request."""

    def __init__(self, *, default: Callable[[dict[str, Any]], Reply] | Reply | None = None,
                 latency_s: float = 0.0, echo_key: bool = False) -> None:
        self.default = default or Reply(content="{}")
        self.echo_key = echo_key  # error bodies quote the request's Authorization header back
        self.latency_s = latency_s
        self.requests: list[dict[str, Any]] = []  # each: {"body": ..., "headers": lower-cased}
        self.max_in_flight = 0  # most requests served at once (checks client-side concurrency)
        self._in_flight = 0
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append({"body": body, "headers": headers})
            if self._script:
                return self._script.popleft()
        return self.default(body) if callable(self.default) else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = server._next(body, headers)
                with server._lock:
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                time.sleep(server.latency_s + reply.delay_s)
                with server._lock:
                    server._in_flight -= 1
                if reply.status != 200:
                    message = reply.content or f"scripted HTTP {reply.status}"
                    if server.echo_key:  # as some servers do: "invalid key Bearer sk-..."
                        auth = headers.get("authorization", "")
                        message += f" (you sent {auth}; key {auth.removeprefix('Bearer ')})"
                    payload = {"error": {"message": message, "type": "scripted",
                                         "code": str(reply.status)}}
                else:
                    payload = _completion(body, reply)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # client gave up (timeout test)
                    pass

        return Handler


def _completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": reply.content}}],
        "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                  "total_tokens": reply.prompt_tokens + reply.completion_tokens},
    }
