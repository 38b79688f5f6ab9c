"""A small threaded HTTP server on 127.0.0.1 with request counting and fault injection.

Each fake subclasses :class:`FakeHandler` for its routes. Tests arm faults on a path prefix
(``server.inject("/cogs/", "503", times=2)``): the next matching requests get the fault
instead of the real answer (``"slow"``: the real answer, late). Every request is recorded
so tests can count them.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

FaultKind = Literal["429", "503", "500", "401", "403", "truncate", "corrupt", "reset", "slow"]
#: How long a ``slow`` fault holds its answer back by default, seconds.
SLOW_DELAY_S = 2.0


@dataclass
class Fault:
    """One armed fault: ``kind`` for the next ``times`` requests under ``prefix``.

    ``delay_s`` is how long a ``slow`` fault waits before it answers.
    """

    prefix: str
    kind: FaultKind
    times: int = 1
    retry_after_ms: int = 0
    delay_s: float = SLOW_DELAY_S


class FakeServer(ThreadingHTTPServer):
    """Threaded server that records requests and hands out armed faults."""

    daemon_threads = True

    def __init__(self, handler: type[FakeHandler], **state: Any) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.state: dict[str, Any] = state
        self.requests: list[tuple[str, str]] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def inject(
        self,
        prefix: str,
        kind: FaultKind,
        *,
        times: int = 1,
        retry_after_ms: int = 0,
        delay_s: float = SLOW_DELAY_S,
    ) -> None:
        """Arm a fault for the next ``times`` requests whose path starts with ``prefix``."""
        with self._lock:
            self.faults.append(Fault(prefix, kind, times, retry_after_ms, delay_s))

    def faults_left(self) -> int:
        """Uses left of the armed faults (0: every armed fault was served)."""
        with self._lock:
            return sum(max(f.times, 0) for f in self.faults)

    def take_fault(self, path: str) -> Fault | None:
        """Consume one use of the first armed fault matching ``path``."""
        with self._lock:
            for fault in self.faults:
                if path.startswith(fault.prefix) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def record(self, method: str, path: str) -> None:
        """Remember a request."""
        with self._lock:
            self.requests.append((method, path))

    def count(self, prefix: str = "/", method: str | None = None) -> int:
        """Requests so far whose path starts with ``prefix`` (and of ``method``)."""
        with self._lock:
            return sum(1 for m, p in self.requests if p.startswith(prefix) and method in (None, m))

    def reset_counts(self) -> None:
        """Forget the requests seen so far."""
        with self._lock:
            self.requests.clear()

    def start(self) -> FakeServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()


@contextmanager
def serving(handler: type[FakeHandler], **state: Any) -> Iterator[FakeServer]:
    """Run a fake for the duration of a ``with`` block."""
    server = FakeServer(handler, **state).start()
    try:
        yield server
    finally:
        server.stop()


_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class FakeHandler(BaseHTTPRequestHandler):
    """Base request handler: JSON and byte replies, HTTP ranges, faults."""

    server: FakeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def handle(self) -> None:
        """Serve one connection; a client hanging up mid-reply (after a fault) is no error."""
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            self.close_connection = True

    def body_json(self) -> Any:
        """The request body parsed as JSON (form bodies: see :meth:`body_form`)."""
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def body_bytes(self) -> bytes:
        """The raw request body."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length)

    def send_json(
        self, payload: Any, status: int = 200, content_type: str = "application/json"
    ) -> None:
        """Reply with JSON."""
        self.send_bytes(json.dumps(payload).encode(), status=status, content_type=content_type)

    def send_bytes(
        self,
        data: bytes,
        *,
        status: int = 200,
        content_type: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
        declared_length: int | None = None,
    ) -> None:
        """Reply with bytes; ``declared_length`` larger than ``data`` fakes a truncated body."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header(
            "Content-Length", str(declared_length if declared_length is not None else len(data))
        )
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        if declared_length is not None and declared_length > len(data):
            self.close_connection = True

    def send_file_bytes(self, data: bytes, content_type: str = "image/tiff") -> None:
        """Serve a file with HTTP Range support (206 + Content-Range), as GDAL's /vsicurl/ needs."""
        match = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        if match is None:
            self.send_bytes(data, content_type=content_type, headers={"Accept-Ranges": "bytes"})
            return
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else len(data) - 1
        end = min(end, len(data) - 1)
        if start >= len(data):
            self.send_bytes(b"", status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            return
        self.send_bytes(
            data[start : end + 1],
            status=206,
            content_type=content_type,
            headers={"Content-Range": f"bytes {start}-{end}/{len(data)}", "Accept-Ranges": "bytes"},
        )

    def apply_fault(self, payload: bytes | None = None) -> bool:
        """Answer with an armed fault for this path, if any; True when one was sent.

        ``truncate`` sends half of ``payload`` while declaring its full length, then closes
        the connection; ``reset`` does the same but resets the connection (TCP RST, what a
        crashed proxy does) instead of closing it, and answers a ``HEAD`` with a reset
        alone; ``corrupt`` sends ``payload`` with its middle bytes scrambled (a TIFF that
        fails to decode); ``slow`` waits ``delay_s`` and then lets the real answer go (False
        is returned), by when a client with a shorter timeout has given up.
        """
        fault = self.server.take_fault(self.path)
        if fault is None:
            return False
        if fault.kind == "slow":
            time.sleep(fault.delay_s)
            return False
        if fault.kind == "reset":
            self._reset(payload or b"")
            return True
        if fault.kind in ("429", "503", "500", "401", "403"):
            code = int(fault.kind)
            reason = self.responses.get(code, ("Error",))[0]
            body = {
                "error": {"status": code, "reason": reason, "message": f"fake {reason.lower()}"}
            }
            # Sentinel Hub's client reads Retry-After in milliseconds (notes/remote-apis.md).
            extra = {"Retry-After": str(fault.retry_after_ms)} if code == 429 else {}
            self.send_bytes(
                json.dumps(body).encode(),
                status=code,
                content_type="application/json",
                headers=extra,
            )
            return True
        data = payload or b""
        if fault.kind == "truncate":
            self.send_bytes(
                data[: len(data) // 2], content_type="image/tiff", declared_length=len(data)
            )
            return True
        scrambled = bytearray(data)
        start, stop = len(scrambled) // 4, len(scrambled) * 3 // 4
        scrambled[start:stop] = b"\xff" * (stop - start)
        self.send_bytes(bytes(scrambled), content_type="image/tiff")
        return True

    def _reset(self, data: bytes) -> None:
        """Send the headers and half of ``data`` (nothing for ``HEAD``), then reset."""
        if self.command != "HEAD":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True
