"""A small OpenAI-compatible embeddings server for tests (standard library only).

It answers ``POST /v1/embeddings`` in OpenAI's shape with deterministic unit vectors made from
the SHA-256 of each input, so the same text always gets the same vector and a query equal to
an item's content finds that item with a score of 1. Inputs containing :attr:`poison` are
refused with a 400 (the daemon then fails just those items, which end as dead letters).
Requests with an input containing the marker given to :meth:`MockProvider.hold` wait until
:meth:`MockProvider.release`, so that a test can act while an embedding is in flight.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["MockProvider", "vector_for"]


def vector_for(text: str, dimension: int) -> list[float]:
    """The mock's embedding of ``text``: ``dimension`` floats from SHA-256, of length 1."""
    raw: list[float] = []
    block = 0
    while len(raw) < dimension:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        raw.extend((b - 127.5) / 127.5 for b in digest)
        block += 1
    values = raw[:dimension]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class MockProvider:
    """The server, on ``127.0.0.1`` and a free port, in a background thread.

    Attributes:
        dimension: the length of its vectors.
        poison: inputs containing this text are refused with a 400.
        model: the model name it answers with.

    ::

        mock.hold("SLOW")                 # requests with an input containing SLOW now wait
        ...                               # the daemon starts embedding such an item
        mock.wait_held(1)                 # one such request is in flight
        ...                               # act on the item meanwhile
        mock.release()                    # and let it (and later ones) through

    """

    def __init__(
        self, dimension: int = 8, poison: str = "POISON", model: str = "text-embedding-3-small"
    ) -> None:
        self.dimension = dimension
        self.poison = poison
        self.model = model
        self._lock = threading.Lock()
        self._requests = 0
        self._inputs = 0
        self._held = threading.Condition(self._lock)
        self._hold_marker: str | None = None
        self._holding = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="mock-embeddings", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The ``embedding.base_url`` to give the daemon."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> int:
        """Embedding requests answered so far (refused ones included)."""
        with self._lock:
            return self._requests

    @property
    def inputs(self) -> int:
        """Inputs embedded so far."""
        with self._lock:
            return self._inputs

    def hold(self, marker: str) -> None:
        """From now on, a request with an input containing ``marker`` waits (at most 60 s)
        until :meth:`release`.
        """
        if not marker:
            raise ValueError("the marker must not be empty")
        with self._lock:
            self._hold_marker = marker

    def release(self) -> None:
        """Lets the held requests through, and holds no more."""
        with self._held:
            self._hold_marker = None
            self._held.notify_all()

    def wait_held(self, count: int = 1, timeout: float = 10.0) -> None:
        """Waits until ``count`` requests are held; ``TimeoutError`` after ``timeout``."""
        with self._held:
            if not self._held.wait_for(lambda: self._holding >= count, timeout):
                raise TimeoutError(f"{self._holding} requests held after {timeout} s, not {count}")

    def _wait_if_held(self, inputs: list[str]) -> None:
        with self._held:
            marker = self._hold_marker
            if marker is None or not any(marker in text for text in inputs):
                return
            self._holding += 1
            self._held.notify_all()
            try:
                self._held.wait_for(lambda: self._hold_marker != marker, timeout=60)
            finally:
                self._holding -= 1

    def start(self) -> MockProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MockProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, body: Any) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer for one request body."""
        if not isinstance(body, dict):
            return 400, _error("the body must be a JSON object")
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            return 400, _error("input must be a string or an array of strings")
        self._wait_if_held(inputs)
        with self._lock:
            self._requests += 1
        refused = [i for i, text in enumerate(inputs) if self.poison and self.poison in text]
        if refused:
            return 400, _error(f"input {refused[0]} is refused by the mock (it holds the poison)")
        encoding = body.get("encoding_format", "float")
        data = []
        tokens = 0
        for index, text in enumerate(inputs):
            vector = vector_for(text, self.dimension)
            tokens += max(1, len(text.split()))
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                if encoding == "base64"
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        with self._lock:
            self._inputs += len(inputs)
        return 200, {
            "object": "list",
            "data": data,
            "model": body.get("model") or self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


def _handler(mock: MockProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/embeddings":
                self._send(404, {"error": {"message": "no such route", "type": "not_found"}})
                return
            length = int(self.headers.get("content-length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except ValueError:
                self._send(400, _error("the body is not JSON"))
                return
            self._send(*mock.answer(body))

        def _send(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet

    return Handler
